"""Tests of scripts/benchmark_generation.py at a tiny size.

They check that the script times every step of each variant and writes what
it promises, not how fast anything is.
"""

import importlib.util
import json
import pathlib

from configs import lm_shakespeare

_SCRIPT = (
  pathlib.Path(__file__).resolve().parents[1] / 'scripts'
) / 'benchmark_generation.py'
_spec = importlib.util.spec_from_file_location('benchmark_generation', _SCRIPT)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)


def _tiny_config():
  config = lm_shakespeare.get_config()
  with config.unlocked():
    config.model.update(
      num_layers=1, emb_dim=16, qkv_dim=16, num_heads=2, mlp_dim=32
    )
    config.model.attention_options.favor.num_features = 8
    config.model.attention_options.favor.chunk_size = 8
  return config


def test_writes_json_and_png(tmp_path, capsys):
  paths = {ext: tmp_path / 'out' / f'gen.{ext}' for ext in ('json', 'png')}
  result = script.run(
    _tiny_config(),
    variants=['favor', 'softmax'],
    num_tokens=40,
    prompt_len=3,
    early=(5, 15),
    late=(30, 40),
    seed=0,
    steps_per_call=8,  # Calls of 8, 8, 8, 8, 4 and 1 steps.
    repeats=2,
    json_path=str(paths['json']),
    png_path=str(paths['png']),
  )
  saved = json.loads(paths['json'].read_text())
  assert saved['summary'] == json.loads(json.dumps(result['summary']))
  assert paths['png'].stat().st_size > 0
  for record in saved['records']:
    assert record['positions'] == list(range(3, 40))
    assert len(record['step_ms']) == 37
    assert all(t > 0 for t in record['step_ms'])
    assert record['total_s'] > sum(record['step_ms']) / 1e3
    assert record['compile_s'] > 0
    assert record['steps_per_call'] == 8 and record['repeats'] == 2
    # Each call's positions share its mean time per token.
    assert len(set(record['step_ms'][:8])) == 1
  summary = saved['summary']
  for variant in ('favor', 'softmax'):
    assert summary[variant]['early_mean_ms'] > 0
    assert summary[variant]['late_over_early'] > 0
  assert summary['softmax_over_favor_total'] > 0
  assert 'softmax_over_favor_total' in capsys.readouterr().out


def test_window_mean_ignores_positions_outside():
  record = {'positions': [1, 2, 3, 4], 'step_ms': [1.0, 2.0, 3.0, 10.0]}
  assert script.window_mean(record, (2, 4)) == 2.5
  assert script.window_mean(record, (10, 20)) is None
