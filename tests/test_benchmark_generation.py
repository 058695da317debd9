"""Tests of scripts/benchmark_generation.py and
performer/bench/generation_speed.py at a tiny size.

They check that every step of each variant is timed and that what is
promised is written, not how fast anything is.
"""

import importlib.util
import json
import pathlib
import sys

from absl import flags

from configs import lm_shakespeare
from performer.bench import generation_speed

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
  result = generation_speed.run(
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
  assert generation_speed.window_mean(record, (2, 4)) == 2.5
  assert generation_speed.window_mean(record, (10, 20)) is None


def test_main_reads_the_flags_and_config_overrides(
  tmp_path, capsys, monkeypatch
):
  path = tmp_path / 'gen.json'
  argv = [
    'benchmark_generation.py',
    f'--config={lm_shakespeare.__file__}',
    '--variants=favor',
    '--num_tokens=12',
    '--prompt_len=2',
    '--early=2,6',
    '--late=6,12',
    '--repeats=1',
    '--steps_per_call=4',
    f'--json={path}',
    '--config.model.num_layers=1',
    '--config.model.emb_dim=16',
    '--config.model.qkv_dim=16',
    '--config.model.num_heads=2',
    '--config.model.mlp_dim=32',
    '--config.model.attention_options.favor.num_features=8',
    '--config.model.attention_options.favor.chunk_size=8',
  ]
  # As under app.run: the script's flags live in absl's global FlagValues,
  # and config_flags, given --config, finds the --config.* overrides in
  # sys.argv. Unparsing afterwards leaves no parsed values for other tests.
  monkeypatch.setattr(sys, 'argv', argv)
  flags.FLAGS(argv)
  try:
    script.main(argv[:1])
  finally:
    flags.FLAGS.unparse_flags()
  saved = json.loads(path.read_text())
  (record,) = saved['records']
  assert record['variant'] == 'favor' and record['num_layers'] == 1
  assert record['positions'] == list(range(2, 12))
  assert saved['early'] == [2, 6] and saved['late'] == [6, 12]
  assert 'favor: generating 12 positions' in capsys.readouterr().out
