"""Tests of scripts/benchmark_attention.py and performer/bench/
{attention_scaling,timing,flops}.

Tiny sizes only: these check that the script runs every registered variant,
records what it promises and fails clearly on bad flags, not how fast
anything is.
"""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import pytest

from performer import attention
from performer.bench import attention_scaling, flops, timing
from tests.test_attention_interface import BIDIRECTIONAL_ONLY

_SCRIPT = (
  pathlib.Path(__file__).resolve().parents[1] / 'scripts'
) / 'benchmark_attention.py'
_spec = importlib.util.spec_from_file_location('benchmark_attention', _SCRIPT)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

# Small enough that each config compiles in about a second.
TINY = [
  '--heads=2',
  '--head_dim=8',
  '--num_features=16',
  '--window=8',
  '--block_size=8',
  '--option=reformer.bucket_size=4',
  '--warmup=1',
  '--repeats=2',
]
REQUIRED_FIELDS = (
  'variant',
  'causal',
  'length',
  'batch',
  'heads',
  'head_dim',
  'num_features',
  'window',
  'block_size',
  'dtype',
  'fwd_ms',
  'fwd_bwd_ms',
  'peak_bytes',
  'fwd_peak_bytes',
  'compile_s',
  'backend',
  'device_kind',
  'jax_version',
  'status',
)


def _check_ok(record, variant, causal, length):
  missing = [f for f in REQUIRED_FIELDS if f not in record]
  assert not missing, missing
  assert record['status'] == 'ok', record['reason']
  assert (record['variant'], record['causal'], record['length']) == (
    variant,
    causal,
    length,
  )
  assert record['fwd_ms'] > 0 and record['fwd_bwd_ms'] > 0
  assert record['compile_s'] > 0
  # fwd_bwd holds q, k, v and their three gradients at least.
  qkv_bytes = 3 * record['batch'] * length * record['heads'] * 8 * 4
  assert record['peak_bytes'] >= 2 * qkv_bytes
  assert record['fwd_peak_bytes'] >= qkv_bytes
  assert record['backend'] == jax.default_backend()
  assert record['jax_version'] == jax.__version__


def test_softmax_records_json_png_and_markdown(tmp_path, capsys):
  paths = {ext: tmp_path / 'out' / f'timing.{ext}' for ext in ('json', 'png')}
  md = tmp_path / 'timing.md'
  records = script.main(
    [
      '--variants=softmax',
      '--lengths=16,32',
      '--causal=both',
      '--flops',
      '--matmul_peak',
      '--matmul_size=64',
      f'--json={paths["json"]}',
      f'--png={paths["png"]}',
      f'--markdown={md}',
      *TINY,
    ]
  )

  assert len(records) == 4
  configs = [(False, 16), (False, 32), (True, 16), (True, 32)]
  for record, (causal, length) in zip(records, configs, strict=True):
    _check_ok(record, 'softmax', causal, length)
    assert record['num_features'] is None and record['window'] is None
    assert record['fwd_bwd_flops'] == 3 * 4 * 2 * length**2 * 8
    assert record['fwd_bwd_gflops_per_s'] > 0
    assert record['matmul_peak_gflops_per_s'] > 0
  assert json.loads(paths['json'].read_text()) == records
  assert paths['png'].read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  table = md.read_text()
  assert table in capsys.readouterr().out
  assert table.count('| softmax |') == 4


def test_json_is_rewritten_after_every_config(tmp_path, monkeypatch):
  path = tmp_path / 'timing.json'
  seen = []
  real_benchmark_config = attention_scaling.benchmark_config

  def spy(*args, **kwargs):
    # What is on disk when the next config starts: all earlier records.
    seen.append(json.loads(path.read_text()) if path.exists() else [])
    return real_benchmark_config(*args, **kwargs)

  monkeypatch.setattr(attention_scaling, 'benchmark_config', spy)
  records = script.main(
    [
      '--variants=softmax',
      '--lengths=16,32',
      '--causal=false',
      f'--json={path}',
    ]
    + TINY
  )

  assert len(records) == 2
  assert seen == [[], records[:1]]
  assert json.loads(path.read_text()) == records
  assert not (tmp_path / 'timing.json.tmp').exists()


OTHER_VARIANTS = [n for n in attention.names() if n != 'softmax']


@pytest.mark.parametrize('name', OTHER_VARIANTS)
def test_every_registered_variant_runs(name):
  records = script.main(
    [
      f'--variants={name}',
      '--lengths=16',
      '--causal=both',
      '--flops',
      *TINY,
    ]
  )

  assert [r['causal'] for r in records] == [False, True]
  if name in BIDIRECTIONAL_ONLY:
    # Refused causal: recorded as skipped, with the module's reason.
    assert records[1]['status'] == 'skipped'
    assert 'cannot be causal' in records[1]['reason']
    records = records[:1]
  for record in records:
    _check_ok(record, name, record['causal'], 16)
    accepted = attention.options(name)
    # The generic flags reach exactly the variants with those options.
    for key, value in (('num_features', 16), ('window', 8), ('block_size', 8)):
      assert record[key] == (value if key in accepted else None)
    if name.startswith('favor'):
      assert record['fwd_bwd_gflops_per_s'] > 0


def test_option_flag_reaches_the_variant():
  records = script.main(
    [
      '--variants=softmax',
      '--lengths=16',
      '--causal=true',
      '--mode=fwd',
      '--option=softmax.implementation=xla',
      *TINY,
    ]
  )

  assert records[0]['options'] == {'implementation': 'xla'}
  assert records[0]['status'] == 'ok'
  assert records[0]['fwd_bwd_ms'] is None


def test_config_over_memory_budget_is_skipped_not_run():
  records = script.main(
    [
      '--variants=softmax',
      '--lengths=16',
      '--causal=false',
      '--max_peak_gib=1e-9',
      *TINY,
    ]
  )

  (record,) = records
  assert record['status'] == 'skipped'
  assert 'budget' in record['reason']
  assert record['fwd_ms'] is None and record['fwd_bwd_ms'] is None
  # The estimate is still recorded (and plotted as an open marker).
  assert record['peak_bytes'] > 0


def test_max_length_skips_longer_configs():
  records = script.main(
    [
      '--variants=softmax',
      '--lengths=16,32',
      '--causal=false',
      '--mode=fwd',
      '--max_length=softmax=16',
      *TINY,
    ]
  )

  assert [r['status'] for r in records] == ['ok', 'skipped']
  assert '--max_length' in records[1]['reason']


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='needs no cuDNN')
def test_runtime_error_is_recorded_not_raised():
  records = script.main(
    [
      '--variants=softmax',
      '--lengths=16',
      '--causal=true',
      '--option=softmax.implementation=cudnn',
      *TINY,
    ]
  )

  (record,) = records
  assert record['status'] == 'error'
  assert 'cudnn' in record['reason'].lower()


def test_unknown_variant_names_it_and_the_valid_ones(capsys):
  with pytest.raises(SystemExit) as exc:
    script.main(['--variants=softmax,nope', '--lengths=16'])
  assert exc.value.code == 2
  err = capsys.readouterr().err
  assert "'nope'" in err
  for name in attention.names():
    assert repr(name) in err

  args = script.build_parser().parse_args(['--variants=nope'])
  with pytest.raises(ValueError, match="unknown attention variant 'nope'"):
    attention_scaling.run(args)


@pytest.mark.parametrize('lengths', ['0', '16,abc', '-8', '1.5', '16,,32'])
def test_bad_length_is_a_clear_error(lengths, capsys):
  with pytest.raises(SystemExit):
    script.main(['--variants=softmax', f'--lengths={lengths}'])
  err = capsys.readouterr().err
  assert '--lengths' in err
  bad = [x for x in lengths.split(',') if x not in ('16', '32')]
  assert repr(bad[0]) in err or 'comma-separated' in err


def test_unknown_option_names_the_valid_ones():
  args = script.build_parser().parse_args(
    [
      '--variants=softmax',
      '--option=softmax.bogus=1',
    ]
  )
  with pytest.raises(ValueError, match=r"'bogus'.*'implementation'"):
    attention_scaling.run(args)


def test_favor_flop_formula():
  # 8BHLMD + 4BHLM with B=1, H=2, L=16, M=4, D=8.
  assert flops.favor_flops(1, 2, 16, 4, 8) == 8192 + 512
  # Chunked: + 2BHLCM + 2BHLCD with C=8.
  assert flops.favor_flops(1, 2, 16, 4, 8, chunk_size=8) == 8704 + 6144
  # C is capped at L.
  assert flops.favor_flops(1, 2, 16, 4, 8, chunk_size=128) == (
    flops.favor_flops(1, 2, 16, 4, 8, chunk_size=16)
  )
  assert flops.feature_dim({'num_features': 4, 'kernel': 'softmax'}, 8) == 4
  trig = {'num_features': 4, 'kernel': 'softmax_trig'}
  assert flops.feature_dim(trig, 8) == 8
  assert flops.feature_dim({'projection': 'none'}, 8) == 8


def test_memory_stats_formula():
  def f(x):
    return jnp.exp(x @ x.T) @ x

  compiled, seconds = timing.compile_timed(f, jnp.ones((128, 8)))
  stats = timing.memory_stats(compiled)
  assert seconds > 0
  assert stats['argument_size_in_bytes'] == 128 * 8 * 4
  assert stats['output_size_in_bytes'] == 128 * 8 * 4
  assert stats['peak_bytes'] == (
    stats['argument_size_in_bytes']
    + stats['output_size_in_bytes']
    + stats['temp_size_in_bytes']
    - stats['alias_size_in_bytes']
  )
  # The 128 x 128 logits must live somewhere.
  assert stats['peak_bytes'] >= 128 * 128 * 4


def test_time_executable_and_matmul_peak():
  result = timing.time_executable(jnp.sin, jnp.ones(4), warmup=0, repeats=3)
  assert len(result['times_s']) == 3
  assert 0 < result['min_s'] <= result['median_s']
  peak = timing.matmul_peak(32, repeats=2)
  assert peak['gflops_per_s'] > 0 and peak['dtype'] == 'float32'
