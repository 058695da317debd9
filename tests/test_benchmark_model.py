"""Tests of scripts/benchmark_model.py and performer/bench/model_scaling.py.

They check that every variant runs through the whole model and that the
records, PNG and table hold what the script promises, not how fast anything
is.
"""

import importlib.util
import json
import pathlib

import jax
import pytest
from flax import nnx

from performer import model as model_lib
from performer.bench import model_scaling

_SCRIPT = (
  pathlib.Path(__file__).resolve().parents[1] / 'scripts'
) / 'benchmark_model.py'
_spec = importlib.util.spec_from_file_location('benchmark_model', _SCRIPT)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

# One layer of the small setting at L = 16: each config compiles in about a
# second.
TINY = [
  '--settings=small',
  '--num_layers=1',
  '--min_length=16',
  '--max_length=16',
  '--num_features=8',
  '--window=8',
  '--block_size=8',
  '--warmup=0',
  '--repeats=1',
]
REQUIRED_FIELDS = (
  'setting',
  'variant',
  'attention',
  'options',
  'length',
  'batch',
  'num_layers',
  'num_heads',
  'mlp_dim',
  'emb_dim',
  'vocab_size',
  'status',
  'reason',
  'fwd_bwd_ms',
  'compile_s',
  'peak_bytes',
  'memory',
  'num_params',
  'backend',
  'device_kind',
  'jax_version',
  'memory_budget_bytes',
)


def test_every_variant_runs_and_writes_outputs(tmp_path, capsys):
  paths = {ext: tmp_path / 'out' / f'model.{ext}' for ext in ('json', 'png')}
  md = tmp_path / 'model.md'
  records = script.main(
    TINY
    + [
      f'--json={paths["json"]}',
      f'--png={paths["png"]}',
      f'--markdown={md}',
    ]
  )
  assert [r['variant'] for r in records] == list(model_scaling.VARIANTS)
  saved = json.loads(paths['json'].read_text())
  assert saved == json.loads(json.dumps(records))
  for r in saved:
    missing = [f for f in REQUIRED_FIELDS if f not in r]
    assert not missing, missing
    assert r['status'] == 'ok', r['reason']
    assert (r['setting'], r['length'], r['vocab_size']) == ('small', 16, 256)
    assert (r['num_layers'], r['num_heads'], r['emb_dim']) == (1, 1, 64)
    assert r['fwd_bwd_ms'] > 0 and r['compile_s'] > 0
    assert r['peak_bytes'] > 0
    assert r['backend'] == jax.default_backend()
  by_variant = {r['variant']: r for r in saved}
  assert by_variant['favor_relu']['options'] == {
    'kernel': 'relu',
    'num_features': 8,
  }
  # The identity keeps every parameter of the softmax model.
  params = {v: by_variant[v]['num_params'] for v in ('identity', 'softmax')}
  assert params['identity'] == params['softmax']
  assert paths['png'].stat().st_size > 0
  table = md.read_text()
  assert table in capsys.readouterr().out
  for variant in model_scaling.VARIANTS:
    assert f'| {variant} |' in table


def test_identity_replaces_every_attention():
  plan = model_scaling.make_plan(script.build_parser().parse_args(TINY))
  model = model_scaling.build_model(plan, 'small', 'identity', 16)
  blocks = [
    m for _, m in nnx.iter_graph(model) if isinstance(m, model_lib.Block)
  ]
  assert len(blocks) == 1
  assert all(
    isinstance(b.attention, model_scaling.IdentityAttention) for b in blocks
  )


def test_stops_a_variant_after_the_first_length_over_budget(tmp_path):
  # A later flag wins: lengths 16 and 32.
  args = TINY + ['--max_length=32', '--variants=softmax']
  records = script.main(args + ['--max_peak_gib=1e-6'])
  assert [(r['length'], r['status']) for r in records] == [
    (16, 'skipped'),
    (32, 'skipped'),
  ]
  assert 'exceeds the budget' in records[0]['reason']
  assert records[0]['peak_bytes'] > 0  # The estimate is kept.
  assert 'shorter length (16) did not fit' in records[1]['reason']


def test_max_length_per_setting():
  args = script.build_parser().parse_args(
    ['--settings=small,regular', '--min_length=16', '--max_length=small=64']
  )
  plan = model_scaling.make_plan(args)
  assert plan.max_length == {'small': 64, 'regular': 65536}
  args.max_length = '32,regular=16'
  assert model_scaling.make_plan(args).max_length == {
    'small': 32,
    'regular': 16,
  }


@pytest.mark.parametrize(
  'flag, message',
  [
    ('--variants=softmax,linear', "unknown value 'linear'; valid: ["),
    ('--settings=large', "--settings: unknown value 'large'; valid:"),
    ('--max_length=1000', '--max_length: 1000 is not a power of two'),
    ('--max_length=big=1024', "--max_length: unknown setting 'big'; valid"),
    ('--max_length=abc', "--max_length: 'abc' is not a positive integer"),
    ('--max_length=small=256', '--max_length small=256 is below --min_length'),
    ('--min_length=0', '--min_length: 0 is not a positive integer'),
    ('--max_peak_gib=-1', '--max_peak_gib must be > 0, got -1.0'),
  ],
)
def test_bad_flags_name_the_value(flag, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    script.main([flag])
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_remat_rows_keep_less_for_the_backward_pass():
  """--remat=off,on: '+remat' rows, whose backward pass keeps only the
  blocks' inputs (and the parameters), not every block's activations."""
  args = TINY + ['--num_layers=2', '--variants=softmax,favor_softmax']
  records = script.main(args + ['--remat=off,on'])
  by_variant = {r['variant']: r for r in records}
  assert sorted(by_variant) == [
    'favor_softmax',
    'favor_softmax+remat',
    'softmax',
    'softmax+remat',
  ]
  for name in ('softmax', 'favor_softmax'):
    plain, remat = by_variant[name], by_variant[name + '+remat']
    assert plain['status'] == remat['status'] == 'ok'
    assert (plain['remat'], remat['remat']) == (False, True)
    assert remat['num_params'] == plain['num_params']
    assert 0 < remat['residual_bytes'] < plain['residual_bytes']


def test_remat_flag_names_the_bad_value(capsys):
  with pytest.raises(SystemExit):
    script.main(TINY + ['--remat=maybe'])
  assert 'maybe' in capsys.readouterr().err
