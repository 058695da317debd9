"""Tests of scripts/benchmark_training.py (performer/bench/training_throughput).

They check the records, the table and the flag errors, not how fast
anything is: tiny lengths, one timed step.
"""

import importlib.util
import json
import pathlib

import pytest

from performer.bench import training_throughput as throughput

_SCRIPT = (
  pathlib.Path(__file__).resolve().parents[1] / 'scripts'
) / 'benchmark_training.py'
_spec = importlib.util.spec_from_file_location('benchmark_training', _SCRIPT)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

TINY = ['--batch_size=2', '--warmup=0', '--repeats=1']


def test_classifier_config_times_every_length_and_variant(tmp_path):
  json_path, md_path = tmp_path / 'out.json', tmp_path / 'out.md'
  records = script.main(
    [
      '--config=configs/lra_text.py:lite',
      '--seq_len=16,24',
      '--variants=softmax,linformer',
      f'--json={json_path}',
      f'--markdown={md_path}',
      *TINY,
    ]
  )
  assert [(r['seq_len'], r['variant']) for r in records] == [
    (16, 'softmax'),
    (16, 'linformer'),
    (24, 'softmax'),
    (24, 'linformer'),
  ]
  assert {r['task'] for r in records} == {'classification'}
  for r in records:
    assert r['steps_per_sec'] == pytest.approx(1 / r['step_s'])
    assert r['lra_table2_steps_per_sec'] is None  # No such length in LRA.
  assert json.loads(json_path.read_text()) == json.loads(json.dumps(records))
  table = md_path.read_text()
  assert '| 16 | softmax |' in table and '| 24 | linformer |' in table
  assert table.count('1.00x') >= 2  # softmax against itself, per length.


def test_language_model_config_uses_next_token_batches():
  (record,) = script.main(
    [
      '--config=configs/lm_shakespeare.py',
      '--seq_len=16',
      '--variants=linear',
      *TINY,
    ]
  )
  assert record['task'] == 'lm'
  assert record['tokens_per_sec'] == pytest.approx(2 * 16 / record['step_s'])


def test_table_puts_lra_table2_beside_ours():
  records = [
    {
      'variant': name,
      'seq_len': 4096,
      'steps_per_sec': rate,
      'step_s': 1 / rate,
      'tokens_per_sec': 32 * 4096 * rate,
      'compile_and_first_step_s': 1.0,
    }
    for name, rate in (('softmax', 2.0), ('reformer', 3.0), ('longformer', 5))
  ]
  lines = throughput.markdown(records).splitlines()
  # LRA: Reformer 1.1 steps/s at 4K, Transformer 1.4.
  assert '| 1.50x | 1.1 (0.79x) |' in lines[3]
  # LRA Table 2 has no Longformer row.
  assert '| 2.50x | - |' in lines[4]


@pytest.mark.parametrize(
  'flag,words',
  [
    ('--seq_len=16,x', '--seq_len'),
    ('--seq_len=0', '--seq_len'),
    ('--variants=softmax,nope', "'nope'"),
    ('--batch_size=0', '--batch_size'),
  ],
)
def test_bad_flags_are_named(flag, words, capsys):
  with pytest.raises(SystemExit):
    script.main(['--config=configs/lra_text.py:lite', *TINY, flag])
  assert words in capsys.readouterr().err


def test_dual_encoder_head_is_refused_by_name():
  from configs import lra_retrieval

  config = lra_retrieval.get_config('attention=softmax,lite')
  with pytest.raises(ValueError, match="'dual_encoder'.*valid"):
    throughput.measure(config, 'softmax', 16, 2, 0, 1)
