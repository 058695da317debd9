"""Data parallelism: jit and pmap, two processes, grad accumulation, bf16.

The multi-device runs are two subprocesses (tests/multiprocess_worker.py)
joined by jax.distributed over localhost, each with two CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=2): 4 devices in all,
which exercises the per-process data loading, the global batch assembly,
cross-process collectives and cooperative checkpoints at once. Each runs two
variants to pay for its imports once. The single-device
references run in this process, through `train_step` alone.

Tolerances: the variants compute the same fp32 math with a different
summation order (per-device partial sums, micro-batches), so losses and
gradient norms agree to rtol 1e-5 over the 4 steps; dropout is off (each
pmap device draws its own dropout masks, which jit does not).
"""

import json
import math
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import model as model_lib
from performer import optim, parallel, tasks, train
from performer import steps as steps_lib
from performer.data import build as data_build
from tests import multiprocess_worker as worker

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, 'tests', 'multiprocess_worker.py')
RTOL = 1e-5


@pytest.fixture(scope='module')
def corpus(tmp_path_factory) -> str:
  """A 20 kB text file of seeded random 'sentences'."""
  rng = np.random.default_rng(0)
  words = 'to be or not that is the question whether tis nobler'.split()
  lines = [' '.join(rng.choice(words, size=8)) for _ in range(400)]
  path = tmp_path_factory.mktemp('corpus') / 'corpus.txt'
  path.write_text('\n'.join(lines))
  return str(path)


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env['XLA_FLAGS'] = (
    f'{env.get("XLA_FLAGS", "")} '
    f'--xla_force_host_platform_device_count={devices}'
  )
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def _start(request: dict, devices: int) -> subprocess.Popen:
  return subprocess.Popen(
    [sys.executable, WORKER, json.dumps(request)],
    cwd=REPO,
    env=_env(devices),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def _finish(process: subprocess.Popen, timeout: float = 540) -> dict:
  output, _ = process.communicate(timeout=timeout)
  assert process.returncode == 0, output[-3000:]
  return json.loads(output.strip().splitlines()[-1])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _direct_losses(
  config, steps: int, shard_count: int
) -> dict[str, list[float]]:
  """Losses and gradient norms of `train_step` on this process's device.

  Fed the batches of `shard_count` data shards joined: the global batch of
  a multi-process run is process 0's rows, then process 1's. No trainer
  loop, sharding or checkpoints: the reference for the runs that use them.
  """
  config = config.copy_and_resolve_references()
  shards = [
    data_build.create(
      config.data,
      batch_size=config.batch_size // shard_count,
      seed=config.seed,
      shard_index=index,
      shard_count=shard_count,
    )
    for index in range(shard_count)
  ]
  config.model.vocab_size = shards[0].vocab_size
  init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
  model = model_lib.create_model(config.model, rngs=nnx.Rngs(init_key))
  tx, _ = optim.make_optimizer(config)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split(steps_lib.TrainState(model, optimizer))
  loaders = [iter(shard.train_loader()) for shard in shards]
  result = {'loss': [], 'grad_norm': []}
  for _ in range(steps):
    parts = [next(loader) for loader in loaders]
    batch = {
      k: np.concatenate([part[k] for part in parts])
      for k in parts[0]
      if k in tasks.TASKS['lm'].batch_keys
    }
    state, step_metrics = steps_lib.train_step(
      graphdef, state, batch, dropout_key
    )
    for name, values in result.items():
      values.append(float(step_metrics[name]))
  return result


def test_two_processes_jit_and_pmap_match_one_device(corpus, tmp_path):
  """jax.distributed over two local processes of two CPU devices each.

  Each process runs 'jit' with 2 micro-batches of 4 rows and then 'pmap'
  over the 4 devices; both must equal one device fed the same global
  batches whole. (The micro-batch code is the same in both modes; pmap
  with micro-batches is left out to keep the test short.)
  """
  variants = {
    'jit_accum': {'grad_accum_steps': 2},
    'pmap': {'parallel': 'pmap'},
  }
  main = tmp_path / 'process0'  # Process 0's workdirs.
  other = tmp_path / 'process1'  # Process 1's, sharing only checkpoints.
  for name in variants:
    os.makedirs(main / name / 'checkpoints')
    os.makedirs(other / name)
    os.symlink(main / name / 'checkpoints', other / name / 'checkpoints')
  address = f'localhost:{_free_port()}'
  processes = [
    _start(
      {
        'job': 'variants',
        'corpus': corpus,
        'workdir': str(workdir),
        'variants': variants,
        'distributed': {
          'coordinator_address': address,
          'num_processes': 2,
          'process_id': index,
        },
      },
      devices=2,
    )
    for index, workdir in enumerate((main, other))
  ]
  # The reference runs here while the processes train.
  one = _direct_losses(worker.tiny_config(corpus), 4, shard_count=2)
  results = [_finish(process) for process in processes]

  assert all(math.isfinite(x) for x in one['loss'])
  assert one['loss'][3] != one['loss'][0]  # It learns (and redraws).
  four = results[0]
  for name, result in four.items():
    for metric in ('loss', 'grad_norm'):
      np.testing.assert_allclose(
        result[metric], one[metric], rtol=RTOL, err_msg=f'{name} {metric}'
      )
  # Both evaluate the same model the same way.
  assert four['pmap']['validation_loss'] == pytest.approx(
    four['jit_accum']['validation_loss'], rel=RTOL
  )
  for name in variants:
    for file in ('config.json', 'metrics.jsonl', 'results.json'):
      assert (main / name / file).exists(), file
    assert (main / name / 'tensorboard').is_dir()
    # Process 1 wrote nothing of its own: no metrics, config, TensorBoard.
    assert sorted(os.listdir(other / name)) == ['checkpoints']
    # The processes saved each checkpoint together, one directory per step.
    assert sorted(os.listdir(main / name / 'checkpoints')) == ['4']
  assert results[1] == {name: {} for name in variants}


def test_batch_size_must_split_over_devices_and_micro_batches(corpus):
  config = worker.tiny_config(corpus, batch_size=6, grad_accum_steps=4)
  with pytest.raises(ValueError, match=r'batch_size=6 .* grad_accum_steps=4'):
    train.train_and_evaluate(config, 'unused')
  config = worker.tiny_config(corpus, parallel='pjit')
  with pytest.raises(ValueError, match='parallel must be one of'):
    train.train_and_evaluate(config, 'unused')
  config = worker.tiny_config(corpus, grad_accum_steps=0)
  with pytest.raises(ValueError, match='grad_accum_steps must be a positive'):
    train.train_and_evaluate(config, 'unused')


def test_bfloat16_favor_trains_with_float32_state(corpus):
  config = worker.tiny_config(corpus, dtype='bfloat16')
  config = config.copy_and_resolve_references()
  assert config.model.dtype == 'bfloat16'  # Follows config.dtype.
  config.model.vocab_size = 256
  model = model_lib.create_model(config.model, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(
    model, optim.make_optimizer(config)[0], wrt=nnx.Param
  )
  graphdef, state = nnx.split(steps_lib.TrainState(model, optimizer))
  batches = iter(
    data_build.create(config.data, batch_size=8, seed=0).train_loader()
  )
  keys = tasks.TASKS['lm'].batch_keys
  batch = {k: v for k, v in next(batches).items() if k in keys}
  # The compute really is bf16: the attention runs on bf16 tensors.
  jaxpr = str(jax.make_jaxpr(lambda x: model(x))(batch['inputs']))
  assert 'bf16' in jaxpr
  key = jax.random.key(0)
  losses = []
  for _ in range(4):
    state, step_metrics = steps_lib.train_step(graphdef, state, batch, key)
    losses.append(float(step_metrics['loss']))
    assert math.isfinite(float(step_metrics['grad_norm']))
  assert all(math.isfinite(loss) for loss in losses), losses
  assert losses[-1] < losses[0]  # Same batch again: it learns it.
  # Parameters and optimizer moments stay float32 (step counters int).
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32, jax.tree_util.keystr(path)


def test_initialize_distributed_arguments(monkeypatch):
  for name in ('SLURM_JOB_ID', 'OMPI_COMM_WORLD_SIZE', 'TPU_WORKER_HOSTNAMES'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.delenv('JAX_COORDINATOR_ADDRESS', raising=False)
  assert parallel.cluster_environment() is None
  assert parallel.initialize_distributed('auto') is False
  assert parallel.initialize_distributed('off') is False
  monkeypatch.setenv('SLURM_JOB_ID', '7')
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert parallel.cluster_environment() == 'slurm'
  with pytest.raises(ValueError, match='--num_processes'):
    parallel.initialize_distributed('auto', coordinator_address='h:1234')
  with pytest.raises(ValueError, match=r'--process_id must be in \[0, 2\)'):
    parallel.initialize_distributed(
      'on', coordinator_address='h:1234', num_processes=2, process_id=2
    )
  with pytest.raises(ValueError, match='contradicts'):
    parallel.initialize_distributed('off', coordinator_address='h:1234')
  with pytest.raises(ValueError, match='distributed must be one of'):
    parallel.initialize_distributed('yes')
