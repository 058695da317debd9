"""Data parallelism over devices and processes for the trainer.

Two modes (`config.parallel`) run the same training step:

- 'jit' (default): one program over a 1-D ('data',) mesh of all devices of
  all processes; the state is replicated (`NamedSharding(mesh, P())`), the
  global batch split over the mesh (`P('data')`), and XLA inserts the
  gradient all-reduce.
- 'pmap': `jax.pmap` over this process's devices (the collectives span all
  processes); the state carries a leading axis of one replica per local
  device, the batch is reshaped to [local devices, B / devices, ...], and
  the same step body (`steps.train_step_body`) runs per device with the
  device axis (`DeviceAxis`), which sums gradients and metrics over the
  devices with `lax.psum`.

Both give the same losses to floating-point tolerance. Evaluation and
checkpoints always use the 'jit' layout: `Parallel.canonical` turns pmap
replicas into replicated global arrays, so checkpoints of either mode
restore into either mode.

Several processes (a TPU pod slice, several GPU hosts) join through
`initialize_distributed` before anything else touches JAX.
"""

import functools
import os
import signal
import threading
from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from performer import steps

MODES = ('jit', 'pmap')
AXIS = 'data'
DISTRIBUTED = ('auto', 'on', 'off')


def cluster_environment() -> str | None:
  """Names the multi-process launcher this process runs under, if any.

  Recognized from environment variables: a SLURM job step with several
  tasks, Open MPI's mpirun with several ranks, a GKE TPU slice of several
  hosts, or JAX's own JAX_COORDINATOR_ADDRESS. Under each of them a bare
  `jax.distributed.initialize()` finds the coordinator, process count and
  process id by itself. A Cloud TPU VM slice created with `gcloud` sets none
  of these (JAX asks the metadata server instead): pass --distributed=on.
  """
  env = os.environ
  if 'SLURM_JOB_ID' in env and int(env.get('SLURM_NTASKS', '1')) > 1:
    return 'slurm'
  if int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1:
    return 'openmpi'
  if len(env.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1:
    return 'tpu'
  if env.get('JAX_COORDINATOR_ADDRESS'):
    return 'jax_coordinator_address'
  return None


def initialize_distributed(
  mode: str = 'auto',
  coordinator_address: str = '',
  num_processes: int = 0,
  process_id: int = -1,
) -> bool:
  """Joins this process to a multi-process JAX run when there is one.

  Must run before any other JAX call (scripts/train.py calls it first).

  Args:
    mode: 'on' always calls `jax.distributed.initialize` (with the given
      address, count and id, or with no arguments so that JAX detects them
      from the cluster), 'off' never does, 'auto' does when an address is
      given or `cluster_environment()` recognizes a launcher.
    coordinator_address: 'host:port' of process 0's coordinator service;
      '' to let JAX detect it.
    num_processes: total processes; 0 to detect.
    process_id: this process's index in [0, num_processes); -1 to detect.

  Returns:
    Whether `jax.distributed.initialize` was called.
  """
  if mode not in DISTRIBUTED:
    raise ValueError(f'distributed must be one of {DISTRIBUTED}, got {mode!r}')
  explicit = bool(coordinator_address) or num_processes > 0 or process_id >= 0
  if mode == 'off':
    if explicit:
      raise ValueError(
        '--distributed=off contradicts --coordinator_address, '
        '--num_processes or --process_id'
      )
    return False
  if mode == 'auto' and not explicit and cluster_environment() is None:
    return False
  if explicit and not (coordinator_address and num_processes > 0):
    raise ValueError(
      'a manual multi-process launch needs --coordinator_address and '
      f'--num_processes (got {coordinator_address!r}, {num_processes}) and '
      'each process its --process_id'
    )
  if explicit and not 0 <= process_id < num_processes:
    raise ValueError(
      f'--process_id must be in [0, {num_processes}), got {process_id}'
    )
  jax.distributed.initialize(
    coordinator_address=coordinator_address or None,
    num_processes=num_processes or None,
    process_id=process_id if process_id >= 0 else None,
  )
  return True


def batch_size_problem(batch_size: int, grad_accum_steps: int) -> str | None:
  """Why the global batch cannot be split, or None when it can.

  The global batch splits into `jax.process_count()` process batches, each
  into `grad_accum_steps` micro-batches, each micro-batch evenly over the
  devices.
  """
  devices = jax.device_count()
  if batch_size % (devices * grad_accum_steps):
    return (
      f'batch_size={batch_size} must be divisible by the {devices} devices '
      f'x grad_accum_steps={grad_accum_steps} = '
      f'{devices * grad_accum_steps}'
    )
  return None


class DeviceAxis(NamedTuple):
  """The pmap device axis, as the step body's `across` (see `steps`).

  Each device holds a part of the global batch: values are summed over
  the axis, and each device draws dropout masks for its own rows.
  """

  name: str = AXIS

  def total(self, x):
    return jax.lax.psum(x, self.name)

  def device_key(self, key: jax.Array) -> jax.Array:
    return jax.random.fold_in(key, jax.lax.axis_index(self.name))


@functools.cache
def pmap_train_step(graphdef, options: steps.StepOptions):
  """`steps.train_step` under pmap: (state, batch, dropout_key) -> (state,
  metrics).

  The state and batch carry a leading axis of local devices; the key is
  shared. Compiled once per (graphdef, options).
  """
  return jax.pmap(
    functools.partial(
      steps.train_step_body, graphdef, options=options, across=DeviceAxis()
    ),
    axis_name=AXIS,
    in_axes=(0, 0, None),
    donate_argnums=0,
  )


class Parallel:
  """Places the state and batches for one of the two modes.

  Args:
    mode: 'jit' or 'pmap'.
  """

  def __init__(self, mode: str):
    if mode not in MODES:
      raise ValueError(f'parallel must be one of {MODES}, got {mode!r}')
    self.mode = mode
    self.mesh = jax.make_mesh(
      (jax.device_count(),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
    )
    self.replicated = NamedSharding(self.mesh, P())
    self.data_sharding = NamedSharding(self.mesh, P(AXIS))
    self.local_devices = jax.local_device_count()
    # pmap's own layout of per-device values: axis 0 over the local devices.
    local_mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (AXIS,))
    self._replicas = NamedSharding(local_mesh, P(AXIS))

  def train_step(self, graphdef, options: steps.StepOptions):
    """This mode's training step: (state, batch, dropout_key) -> (state,
    metrics), taking the state of `put_state` and the batch of
    `train_batch`."""
    if self.mode == 'pmap':
      return pmap_train_step(graphdef, options)
    return lambda state, batch, key: steps.train_step(
      graphdef, state, batch, key, options
    )

  def put_state(self, state):
    """The canonical (replicated) state in this mode's layout for training."""
    if self.mode == 'jit':
      return state
    # One replica per local device, placed as pmap places its outputs, so
    # that the step compiles once rather than again at its second call.
    n = self.local_devices
    return jax.tree.map(
      lambda x: jax.device_put(
        np.broadcast_to(_local_value(x), (n, *x.shape)), self._replicas
      ),
      state,
    )

  def canonical(self, state):
    """The state replicated over the mesh (for evaluation, checkpoints)."""
    if self.mode == 'jit':
      return state
    # Replica 0; every replica holds the same values after the psum'ed
    # update. Read on the host: indexing on the device would compile a
    # program per array shape.
    return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(
        self.replicated, np.asarray(x.addressable_data(0))[0]
      ),
      state,
    )

  def global_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows as parts of one global batch sharded on 'data'."""
    return {
      k: jax.make_array_from_process_local_data(
        self.data_sharding, np.asarray(v)
      )
      for k, v in batch.items()
    }

  def train_batch(self, batch: dict[str, np.ndarray]):
    """This process's rows in the layout of this mode's training step."""
    if self.mode == 'jit':
      return self.global_batch(batch)
    n = self.local_devices
    return {
      k: np.asarray(v).reshape(n, v.shape[0] // n, *v.shape[1:])
      for k, v in batch.items()
    }


def _local_value(x) -> np.ndarray:
  """The value of a replicated array, read from this process's copy."""
  if isinstance(x, jax.Array):
    return np.asarray(x.addressable_data(0))
  return np.asarray(x)


class PreemptionNotice:
  """Turns SIGTERM (a preemption notice) into a flag the training loop polls.

  Use as a context manager around the loop and call `reached(step)` after
  every step: True means save a checkpoint of this step and exit.

  One process: a SIGTERM handler sets the flag (the previous handler comes
  back on exit). Several processes: JAX's preemption service, started by
  `jax.distributed.initialize`, receives the SIGTERM of any process and
  makes every process return True at the same step, so that they all save
  the same checkpoint.
  """

  def __enter__(self) -> 'PreemptionNotice':
    self.received = False
    self._previous = None
    self._multi = jax.process_count() > 1
    in_main = threading.current_thread() is threading.main_thread()
    if not self._multi and in_main:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    del signum, frame
    self.received = True

  def reached(self, step: int) -> bool:
    """Whether to save a checkpoint of `step` and stop."""
    if self._multi:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
