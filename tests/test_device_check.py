"""scripts/device_check.py: the smoke run end to end, budget, failures.

The smoke run is the whole script at tiny sizes on this CPU, so that every
part (cuDNN check, attention grid, LRA Text steps, the Shakespeare trainer)
keeps running; the other tests check the pieces a GPU run relies on
without a GPU: deadlines, guarded parts, the target arithmetic and the
custom-call detection.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest

from performer import attention, workdir
from performer.bench import device_check
from performer.bench import training_throughput as throughput
from tests.test_attention_interface import BIDIRECTIONAL_ONLY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'device_check.py')


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp('device_check')
  proc = subprocess.run(
    [
      sys.executable,
      SCRIPT,
      '--smoke',
      f'--out={out}',
      f'--data_dir={out / "data"}',
    ],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=ROOT,
  )
  return proc, out


def test_smoke_run_succeeds_and_prints_platform(smoke):
  proc, _ = smoke
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'jax {jax.__version__}' in proc.stderr
  assert 'platform: cpu' in proc.stderr
  assert '# Device check' in proc.stdout


def test_smoke_run_writes_every_part(smoke):
  _, out = smoke
  names = {'platform.json', 'summary.md'} | {
    f'{p}.json' for p in device_check.PARTS
  }
  assert names <= set(os.listdir(out))
  for part in device_check.PARTS:
    result = workdir.read_json(os.path.join(out, f'{part}.json'))
    assert result['part'] == part
    assert result['status'] == 'ok', result
    assert result['smoke'] is True
  text = (out / 'summary.md').read_text()
  for title in ('## 1.', '## 2.', '## 3.', '## 4.'):
    assert title in text


def test_smoke_cudnn_part_says_why_not_on_cpu(smoke):
  _, out = smoke
  result = workdir.read_json(os.path.join(out, 'cudnn.json'))
  assert result['cudnn_used'] is False
  assert "backend is 'cpu'" in result['reason']
  auto = [r for r in result['records'] if r['implementation'] == 'auto']
  assert [r['case'] for r in auto] == [
    'bidirectional',
    'causal',
    'padding mask',
  ]
  for r in auto:
    # The XLA path in bf16 against the float32 reference.
    assert r['status'] == 'ok'
    assert r['matches_reference'] is True
    assert r['fwd_cudnn_targets'] == [] and r['fwd_bwd_cudnn_targets'] == []
  forced = [r for r in result['records'] if r['implementation'] == 'cudnn']
  # Forcing cuDNN without a GPU fails, and the failure is the record.
  assert all(r['status'] == 'error' and r['reason'] for r in forced)


def test_smoke_attention_part_covers_every_variant(smoke):
  _, out = smoke
  records = workdir.read_json(os.path.join(out, 'attention.json'))['records']
  seen = {(r['variant'], r['causal'], r['dtype']) for r in records}
  assert seen == {
    (name, causal, dtype)
    for name in attention.names()
    for causal in (True, False)
    for dtype in ('bfloat16', 'float32')
  }
  for r in records:
    if r['causal'] and r['variant'] in BIDIRECTIONAL_ONLY:
      assert r['status'] == 'skipped' and 'cannot be causal' in r['reason']
      continue
    assert r['status'] == 'ok', r
    assert r['fwd_bwd_ms'] > 0 and r['peak_bytes'] > 0
    if 'num_features' in attention.options(r['variant']):
      assert r['options']['num_features'] == device_check.SMOKE.num_features


def test_smoke_training_parts_ran_steps(smoke):
  _, out = smoke
  lra = workdir.read_json(os.path.join(out, 'lra_text.json'))
  assert {r['variant'] for r in lra['records']} == {'softmax', 'favor'}
  for r in lra['records']:
    assert r['steps'] == device_check.SMOKE.lra_steps
    assert r['steps_per_sec'] > 0 and r['peak_bytes'] > 0
  lm = workdir.read_json(os.path.join(out, 'shakespeare.json'))
  (record,) = lm['records']
  assert record['steps'] == device_check.SMOKE.lm_steps
  assert record['tokens_per_sec'] > 0
  assert record['validation_bits_per_byte'] > 0


def test_spent_budget_skips_every_part_and_still_writes(tmp_path):
  results = device_check.run(str(tmp_path), budget_s=1e-9, smoke=True)
  for part in device_check.PARTS:
    assert results[part]['status'] == 'skipped'
    assert 'time budget' in results[part]['reason']
    saved = workdir.read_json(str(tmp_path / f'{part}.json'))
    assert saved['status'] == 'skipped'
  assert 'Status: skipped' in (tmp_path / 'summary.md').read_text()


def test_failing_part_is_recorded_and_the_next_runs(tmp_path, monkeypatch):
  def broken(sizes):
    raise RuntimeError('boom')

  monkeypatch.setattr(device_check, 'check_cudnn', broken)
  monkeypatch.setattr(
    device_check, 'attention_speed', lambda sizes, budget: {'records': []}
  )
  results = device_check.run(
    str(tmp_path), budget_s=60, smoke=True, parts=('cudnn', 'attention')
  )
  assert results['cudnn']['status'] == 'error'
  assert results['cudnn']['reason'] == 'RuntimeError: boom'
  assert results['attention']['status'] == 'ok'
  assert workdir.read_json(str(tmp_path / 'cudnn.json'))['status'] == 'error'
  assert not (tmp_path / 'lra_text.json').exists()


def test_attention_series_stops_at_first_length_not_run(monkeypatch):
  sizes = dataclasses.replace(device_check.SMOKE, lengths=(32, 64, 128))
  ran = []

  def fake(plan, name, causal, length, info, matmul=None):
    ran.append((plan.dtype, name, causal, length))
    ok = length < 64
    return {
      'variant': name,
      'causal': causal,
      'length': length,
      'dtype': plan.dtype,
      'batch': 1,
      'heads': plan.heads,
      'head_dim': plan.head_dim,
      'options': plan.options[name],
      'status': 'ok' if ok else 'skipped',
      'reason': None if ok else 'estimated peak 9 GiB exceeds the budget',
      'fwd_bwd_ms': 1.0 if ok else None,
      'peak_bytes': 1 if ok else None,
    }

  monkeypatch.setattr(device_check.attention_scaling, 'benchmark_config', fake)
  result = device_check.attention_speed(sizes, device_check.Budget(600))
  # 32 and 64 are tried; 128 is not, for every series.
  assert {r[3] for r in ran} == {32, 64}
  longest = [r for r in result['records'] if r['length'] == 128]
  assert len(longest) == 2 * 2 * len(attention.names())
  for r in longest:
    assert r['status'] == 'skipped'
    assert r['reason'] == (
      'after L=64: estimated peak 9 GiB exceeds the budget'
    )
  # Memory limits are expected, not a cut of the budget.
  assert result['status'] == 'ok'


def test_attention_part_records_what_the_deadline_leaves_out():
  sizes = dataclasses.replace(device_check.SMOKE, lengths=(32, 64))
  budget = device_check.Budget(1e-9)
  time.sleep(0.01)
  result = device_check.attention_speed(sizes, budget)
  assert result['status'] == 'partial'
  assert len(result['records']) == 2 * 2 * 2 * len(attention.names())
  left_out = len(result['records'])
  assert result['reason'] == f'{left_out} configs left out at the deadline'
  assert all('time budget' in r['reason'] for r in result['records'])


def test_budget_deadlines_are_cumulative_and_end_at_the_budget():
  now = [100.0]
  budget = device_check.Budget(200, clock=lambda: now[0])
  shares = device_check.SHARES
  assert budget.deadlines['cudnn'] == pytest.approx(200 * shares['cudnn'])
  assert budget.deadlines['attention'] == pytest.approx(
    200 * (shares['cudnn'] + shares['attention'])
  )
  assert budget.deadlines['shakespeare'] == pytest.approx(200)
  now[0] = 150.0
  assert budget.left('cudnn') == pytest.approx(200 * shares['cudnn'] - 50)
  # A subset of parts shares the whole budget.
  subset = device_check.Budget(90, ['cudnn', 'lra_text'], clock=lambda: 0.0)
  assert subset.deadlines['lra_text'] == pytest.approx(90)
  total = shares['cudnn'] + shares['lra_text']
  assert subset.deadlines['cudnn'] == pytest.approx(
    90 * shares['cudnn'] / total
  )


def test_favor_targets_from_records():
  def rec(variant, length, ms):
    return {
      'variant': variant,
      'causal': True,
      'length': length,
      'fwd_bwd_ms': ms,
    }

  soft = {1024: 1.0, 2048: 3.0, 4096: 9.0, 65536: 300.0}
  fav = {1024: 2.0, 2048: 2.5, 4096: 3.0, 65536: 10.0}
  records = [rec('softmax', n, t) for n, t in soft.items()]
  records += [rec('favor', n, t) for n, t in fav.items()]
  # A bidirectional record must not be mixed in.
  records.append({**rec('favor', 1024, 0.1), 'causal': False})
  t = device_check.favor_targets(records)
  assert t['speedup'] == {
    '1024': 0.5,
    '2048': 1.2,
    '4096': 3.0,
    '65536': 30.0,
  }
  assert t['faster_from'] == 2048 and t['faster_from_met'] is True
  assert t['speedup_at_64k'] == 30.0 and t['speedup_at_64k_met'] is True
  # Slower again at a longer length: faster only from there on.
  records[2]['fwd_bwd_ms'] = 2.0  # softmax at 4096 now faster than favor.
  t = device_check.favor_targets(records)
  assert t['faster_from'] == 65536 and t['faster_from_met'] is False
  assert device_check.favor_targets([])['faster_from_met'] is None


def test_custom_call_targets_reads_the_compiled_hlo():
  class Fake:
    def as_text(self):
      return (
        '%a = custom-call(%q), custom_call_target="__cudnn$fmhaSoftmax"\n'
        '%b = custom-call(%g), custom_call_target="__cudnn$fmhaSoftmax'
        'Backward", backend_config={}\n'
      )

  assert device_check.custom_call_targets(Fake()) == [
    '__cudnn$fmhaSoftmax',
    '__cudnn$fmhaSoftmaxBackward',
  ]
  compiled = jax.jit(jnp.sin).lower(jnp.ones(3)).compile()
  found = device_check.custom_call_targets(compiled)
  assert not [t for t in found if t.startswith('__cudnn')]


def test_sigterm_outside_the_trainer_becomes_deadline_reached():
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(device_check._DeadlineReached):
    with device_check._sigterm_after(0.05):
      time.sleep(5)
  assert signal.getsignal(signal.SIGTERM) is before
  # A block that ends in time cancels its timer: no SIGTERM comes later
  # (one would end this process under the restored handler).
  with device_check._sigterm_after(0.05):
    pass
  time.sleep(0.2)
  assert signal.getsignal(signal.SIGTERM) is before


def test_classification_batch_pads_after_each_length():
  batch = throughput.classification_batch(8, 20, 257, 2)
  mask, inputs = batch['mask'], batch['inputs']
  lengths = mask.sum(axis=1)
  assert bool(jnp.all((lengths >= 10) & (lengths <= 20)))
  expected = jnp.arange(20)[None] < lengths[:, None]
  assert bool(jnp.all(mask == expected))
  assert bool(jnp.all((inputs > 0) == mask)) and int(inputs.max()) < 257
  assert set(batch['targets'].tolist()) <= {0, 1}
  assert batch['weights'].shape == (8,)


@pytest.mark.parametrize(
  'flag, message',
  [
    ('--budget_s=0', '--budget_s must be > 0 seconds, got 0.0'),
    ('--parts=cudnn,speed', "'speed'"),
    ('--out=', "--out must name a directory, got ''"),
  ],
)
def test_bad_flags_name_the_value(flag, message, tmp_path):
  proc = subprocess.run(
    [sys.executable, SCRIPT, flag],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=tmp_path,
  )
  assert proc.returncode == 2
  assert message in proc.stderr
  assert list(tmp_path.iterdir()) == []


def test_deadline_after_training_keeps_the_logged_throughput(monkeypatch):
  from performer import train

  def stopped_in_final_evaluation(config, run_dir):
    with open(workdir.metrics_path(run_dir), 'w') as f:
      f.write('{"step": 2, "split": "train", "tokens_per_sec": 100.0}\n')
      f.write('{"step": 4, "split": "train", "tokens_per_sec": 300.0}\n')
      f.write('{"step": 4, "split": "validation", "loss": 1.0}\n')
    raise device_check._DeadlineReached()

  monkeypatch.setattr(train, 'train_and_evaluate', stopped_in_final_evaluation)
  result = device_check.shakespeare_throughput(
    device_check.SMOKE, device_check.Budget(600)
  )
  (record,) = result['records']
  assert record['status'] == 'partial'
  assert 'time budget' in record['reason']
  assert record['window_tokens_per_sec'] == [100.0, 300.0]
  assert record['tokens_per_sec'] == 200.0
  assert result['status'] == 'partial'
