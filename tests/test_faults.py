"""Faults: kill -9, SIGTERM, a corrupted checkpoint, NaN steps.

Runs that get killed are subprocesses (tests/multiprocess_worker.py) that
sleep before each step, so they are still training when the signal comes;
the uninterrupted reference and the cheap reruns run in this process. All
comparisons with the reference are exact: the metrics of a resumed run
equal those of the uninterrupted run bit for bit (timing fields aside).
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from performer import optim, parallel, steps, train
from performer import workdir as ckpt_lib
from tests import multiprocess_worker as worker

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, 'tests', 'multiprocess_worker.py')
TIMINGS = ('tokens_per_sec', 'steps_per_sec')
STEPS = 8
# Dropout on: its keys are part of the state that resuming must restore.
# skip_nonfinite_steps for every run, so that all of them (the NaN test's
# too) share one optimizer and thus this process's compiled steps.
OVERRIDES = {
  'num_train_steps': STEPS,
  'checkpoint_every_steps': 2,
  'model.dropout_rate': 0.1,
  'skip_nonfinite_steps': True,
}
STEP_DELAY = 1.0  # Seconds before each step of a run that will be killed.


@pytest.fixture(scope='module')
def corpus(tmp_path_factory) -> str:
  rng = np.random.default_rng(1)
  words = 'we few we happy few we band of brothers for he today'.split()
  lines = [' '.join(rng.choice(words, size=8)) for _ in range(400)]
  path = tmp_path_factory.mktemp('corpus') / 'corpus.txt'
  path.write_text('\n'.join(lines))
  return str(path)


@pytest.fixture(scope='module')
def reference(corpus, tmp_path_factory) -> str:
  """The workdir of an uninterrupted run."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  train.train_and_evaluate(worker.tiny_config(corpus, **OVERRIDES), workdir)
  return workdir


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp('compilation_cache'))


def _records(workdir: str) -> list[dict]:
  path = ckpt_lib.metrics_path(workdir)
  return [
    {k: v for k, v in record.items() if k not in TIMINGS}
    for record in ckpt_lib.read_jsonl(path)
  ]


def _start(corpus, workdir, cache_dir, delay) -> subprocess.Popen:
  request = {
    'job': 'train',
    'corpus': corpus,
    'workdir': workdir,
    'overrides': OVERRIDES,
    'step_delay': delay,
  }
  env = dict(os.environ)
  env['JAX_PLATFORMS'] = 'cpu'
  env['JAX_COMPILATION_CACHE_DIR'] = cache_dir
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  return subprocess.Popen(
    [sys.executable, WORKER, json.dumps(request)],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def _wait_for(path: str, process: subprocess.Popen, timeout: float = 480):
  """Polls until `path` exists (an Orbax checkpoint appears when complete)."""
  deadline = time.monotonic() + timeout
  while not os.path.exists(path):
    if process.poll() is not None:
      pytest.fail(f'the run ended before {path}:\n{process.stdout.read()}')
    if time.monotonic() > deadline:
      process.kill()
      pytest.fail(f'{path} did not appear within {timeout}s')
    time.sleep(0.05)


def test_kill_9_then_rerun_equals_uninterrupted(
  reference, corpus, cache_dir, tmp_path, capsys
):
  workdir = str(tmp_path / 'run')
  process = _start(corpus, workdir, cache_dir, STEP_DELAY)
  _wait_for(os.path.join(workdir, 'checkpoints', '2'), process)
  process.send_signal(signal.SIGKILL)
  process.communicate(timeout=60)
  assert process.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  saved = sorted(
    int(s)
    for s in os.listdir(os.path.join(workdir, 'checkpoints'))
    if s.isdigit()
  )
  assert saved and max(saved) < STEPS

  # The same run again (here in this process, where the steps are compiled
  # already; the killed process's files are all it has).
  capsys.readouterr()
  result = train.train_and_evaluate(
    worker.tiny_config(corpus, **OVERRIDES), workdir
  )
  assert f'Resuming at step {max(saved)}:' in capsys.readouterr().out
  assert result['step'] == STEPS
  assert _records(workdir) == _records(reference)


def test_sigterm_saves_the_current_step_and_exits(
  reference, corpus, cache_dir, tmp_path, capsys
):
  workdir = str(tmp_path / 'run')
  process = _start(corpus, workdir, cache_dir, STEP_DELAY)
  _wait_for(os.path.join(workdir, 'checkpoints', '2'), process)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=120)
  assert process.returncode == 0, output[-3000:]
  line = next(
    line for line in output.splitlines() if 'Preemption notice' in line
  )
  step = int(line.split(' at step ')[1].split(':')[0])
  assert 2 <= step < STEPS
  assert (
    os.path.join(os.path.realpath(workdir), 'checkpoints', str(step)) in line
  )
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  assert str(step) in os.listdir(ckpt_dir)
  assert json.loads(output.strip().splitlines()[-1]) == {
    'step': step,
    'preempted': True,
  }
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  # Every step up to the saved one is logged; none after it.
  assert [r['step'] for r in _records(workdir) if r['split'] == 'train'] == (
    list(range(1, step + 1))
  )

  # A rerun (here in this process) resumes from exactly that checkpoint.
  capsys.readouterr()
  result = train.train_and_evaluate(
    worker.tiny_config(corpus, **OVERRIDES), workdir
  )
  assert f'Resuming at step {step}:' in capsys.readouterr().out
  assert result['step'] == STEPS
  assert _records(workdir) == _records(reference)


def _truncate_array_data(directory: str) -> list[str]:
  """Cuts in half every array data file of a checkpoint's 'state' item.

  Tensorstore splits the arrays over several files in `d/` folders whose
  sizes vary from run to run, and orbax's _METADATA can be larger than any
  of them (it is not needed to restore into a known structure), so cutting
  only the largest file does not reliably break the checkpoint.
  """
  paths = [
    os.path.join(root, name)
    for root, _, names in os.walk(directory)
    if os.path.basename(root) == 'd'
    for name in names
  ]
  assert paths, f'no array data files under {directory}'
  for path in paths:
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  return paths


def test_corrupted_latest_checkpoint_falls_back_to_previous(
  reference, corpus, tmp_path, caplog, capsys
):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  # keep_checkpoints=2 kept steps 6 and 8 (and the best, if older); cut
  # the state of 8 in half.
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  before = sorted(int(s) for s in os.listdir(ckpt_dir))
  assert before[-2:] == [6, STEPS]
  _truncate_array_data(os.path.join(ckpt_dir, str(STEPS), 'state'))

  capsys.readouterr()
  with caplog.at_level(logging.WARNING):
    result = train.train_and_evaluate(
      worker.tiny_config(corpus, **OVERRIDES), workdir
    )
  bad = os.path.join(os.path.realpath(ckpt_dir), str(STEPS))
  moved = os.path.join(os.path.realpath(workdir), 'corrupt_checkpoints', '8')
  warnings = [r.getMessage() for r in caplog.records if bad in r.getMessage()]
  assert any('could not be restored' in w for w in warnings), warnings
  assert any(moved in w and 'step 6' in w for w in warnings), warnings
  assert os.path.isdir(moved)  # Kept for inspection, not deleted.
  assert 'Resuming at step 6:' in capsys.readouterr().out
  # Steps 7 and 8 ran again and gave the same results as the first time.
  assert result['step'] == STEPS
  assert _records(workdir) == _records(reference)
  assert sorted(int(s) for s in os.listdir(ckpt_dir)) == before


def test_no_readable_checkpoint_is_an_error_that_moves_nothing(
  reference, corpus, tmp_path
):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  steps = sorted(os.listdir(ckpt_dir))
  for step in steps:
    _truncate_array_data(os.path.join(ckpt_dir, step, 'state'))
  metrics_before = _records(workdir)
  with pytest.raises(RuntimeError, match='no checkpoint .* can be restored'):
    train.train_and_evaluate(worker.tiny_config(corpus, **OVERRIDES), workdir)
  # Nothing moved, and the run's metrics are not rewritten from step 0.
  assert sorted(os.listdir(ckpt_dir)) == steps
  assert not os.path.exists(os.path.join(workdir, 'corrupt_checkpoints'))
  assert _records(workdir) == metrics_before


def test_nonfinite_steps_are_skipped_when_configured(
  corpus, tmp_path, monkeypatch
):
  """A NaN batch at step 3: no update, the step is counted and logged."""
  real_batch = parallel.Parallel.train_batch
  calls = []

  def poisoned(self, batch):
    calls.append(None)
    batch = dict(batch)
    if len(calls) == 3:
      batch['weights'] = np.full_like(batch['weights'], np.nan)
    return real_batch(self, batch)

  monkeypatch.setattr(parallel.Parallel, 'train_batch', poisoned)
  workdir = str(tmp_path / 'run')
  config = worker.tiny_config(
    corpus,
    **{**OVERRIDES, 'checkpoint_every_steps': 1, 'keep_checkpoints': 10},
  )
  result = train.train_and_evaluate(config, workdir)
  assert result['step'] == STEPS
  rows = [r for r in _records(workdir) if r['split'] == 'train']
  assert [r['skipped_steps'] for r in rows] == [0, 0, 1] + [0] * (STEPS - 3)
  assert 'loss' not in rows[2]  # A skipped step has no loss to average.
  assert all(np.isfinite(r['loss']) for i, r in enumerate(rows) if i != 2)

  # The skipped step left parameters and Adam moments as they were.
  model = steps.TrainState(
    *_model_and_optimizer(config.copy_and_resolve_references())
  )
  graphdef, state = nnx.split(model)
  ckpts = ckpt_lib.Checkpoints(
    os.path.join(workdir, 'checkpoints'),
    keep=10,
    best_metric='loss',
    best_mode='min',
  )
  try:
    states = {
      s: ckpts.restore(s, ckpt_lib.abstract(state)) for s in (1, 2, 3, 4)
    }
  finally:
    ckpts.close()

  def trained(s):
    return jax.tree.leaves(nnx.filter_state(states[s]['model'], nnx.Param))

  def unchanged(a, b):
    return all(
      np.array_equal(x, y) for x, y in zip(trained(a), trained(b), strict=True)
    )

  assert not unchanged(1, 2) and unchanged(2, 3) and not unchanged(3, 4)
  moments = jax.tree.leaves(states[3]['optimizer']['opt_state'])
  assert all(np.isfinite(np.asarray(x)).all() for x in moments)


def _model_and_optimizer(config):
  from performer import model as model_lib

  config.model.vocab_size = 256
  model = model_lib.create_model(config.model, rngs=nnx.Rngs(0))
  tx, _ = optim.make_optimizer(config)
  return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def test_corrupted_checkpoint_gives_one_warning_not_pages_of_noise(
  reference, corpus, tmp_path, cache_dir
):
  """The user sees the warning naming the checkpoint, not asyncio echoes.

  Orbax's pending reads of the other arrays fail after the first one does;
  Python used to print each as 'Exception ignored in: <coroutine ...>'
  with a traceback (thousands of lines for a real model).
  """
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  _truncate_array_data(os.path.join(ckpt_dir, str(STEPS), 'state'))
  process = _start(corpus, workdir, cache_dir, delay=0)
  output, _ = process.communicate(timeout=480)
  assert process.returncode == 0, output
  bad = os.path.join(os.path.realpath(ckpt_dir), str(STEPS))
  warnings = [
    line for line in output.splitlines() if 'could not be restored' in line
  ]
  assert len(warnings) == 1 and bad in warnings[0], output
  assert 'Exception ignored' not in output, output
  assert 'Event loop is closed' not in output, output
  assert 'Traceback' not in output, output
  assert json.loads(output.splitlines()[-1])['step'] == STEPS


def test_late_closed_loop_callbacks_are_dropped_and_nothing_else(monkeypatch):
  """TensorStore callbacks that finish after a failed restore (and after
  its quieting block) must not print 'Event loop is closed' tracebacks; any
  other exception of a callback still reaches the hook."""
  import tensorstore as ts

  from performer import workdir as workdir_lib

  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', lambda u: seen.append(u.exc_value))
  with workdir_lib._quiet_failed_reads():
    pass  # A restore; its reads' callbacks may arrive after it.
  for message in ('Event loop is closed', 'something else'):
    promise, future = ts.Promise.new()

    def callback(_, message=message):
      raise RuntimeError(message)

    future.add_done_callback(callback)
    promise.set_result(0)
  deadline = time.time() + 5
  while not seen and time.time() < deadline:
    time.sleep(0.01)
  time.sleep(0.1)
  assert [str(e) for e in seen] == ['something else']
