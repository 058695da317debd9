"""A training run's directory: its file names, JSON records and checkpoints.

Layout of a workdir (written by `performer.train.train_and_evaluate`):

  config.json              the resolved config (CONFIG_FILE)
  metrics.jsonl            one JSON object per record (METRICS_FILE)
  tensorboard/             TensorBoard event files (TENSORBOARD_DIR)
  checkpoints/<step>/      Orbax checkpoints: state, data_iter, metadata
  corrupt_checkpoints/     unreadable checkpoints set aside on resume
  results.json             the final metrics (RESULTS_FILE)

A checkpoint holds everything that determines the rest of a run: the NNX
state (parameters, non-trainable variables such as the FAVOR+ projection,
and the optimizer state with its step counter), the grain iterator's
position, and a small JSON record (step, config). Restoring all three makes
train, stop, resume produce exactly the losses of an uninterrupted run. The
last `keep` checkpoints are kept, and in addition the best one by a
validation metric, so test results come from the best checkpoint however
long the run continues after it.

Every process of a multi-process run calls `save` and `restore`: Orbax
writes each array once and the grain iterator state per process.

Other code reads a finished run through `restore_model(workdir, step)`
(generation, weight transfer), which opens the run read-only.
"""

import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from performer import attention
from performer import model as model_lib

CONFIG_FILE = 'config.json'
RESULTS_FILE = 'results.json'
METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'
CHECKPOINT_DIR = 'checkpoints'
CORRUPT_DIR = 'corrupt_checkpoints'
# Item of a checkpoint that holds the NNX state.
STATE_ITEM = 'state'


# ---------------------------------------------------------------------------
# JSON records.


def write_json(path: str, value: Any) -> None:
  """Writes `value` as indented JSON to `path` atomically.

  The file appears complete or not at all (written beside, then renamed),
  so an interrupted write never leaves half a record.
  """
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=2, default=str)
    f.write('\n')
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def read_jsonl(path: str) -> list[dict]:
  """Reads metrics.jsonl (or any JSON-lines file) into a list of dicts."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)


def results_path(workdir: str) -> str:
  return os.path.join(workdir, RESULTS_FILE)


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, METRICS_FILE)


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINT_DIR)


def read_results(workdir: str) -> dict | None:
  """The run's results.json, or None when the run has not finished."""
  path = results_path(workdir)
  return read_json(path) if os.path.exists(path) else None


def read_config(workdir: str) -> dict | None:
  """The config a workdir was created with, or None for a fresh workdir.

  Reads workdir/config.json, or, if only checkpoints are left, the config
  recorded in the newest checkpoint.
  """
  path = config_path(workdir)
  if os.path.exists(path):
    return read_json(path)
  if not os.path.isdir(checkpoint_dir(workdir)):
    return None
  ckpts = Checkpoints(checkpoint_dir(workdir), read_only=True)
  try:
    step = ckpts.latest_step()
    return None if step is None else ckpts.metadata(step).get('config')
  finally:
    ckpts.close()


def latest_step(workdir: str) -> int | None:
  """The newest checkpoint step in `workdir` (read-only), or None."""
  if not os.path.isdir(checkpoint_dir(workdir)):
    return None
  ckpts = Checkpoints(checkpoint_dir(workdir), read_only=True)
  try:
    return ckpts.latest_step()
  finally:
    ckpts.close()


# ---------------------------------------------------------------------------
# Resuming: which config changes a run may survive.

# Fields that define what a run computes; a workdir whose saved config
# differs in any of them cannot be resumed by this config. Trainer settings
# such as num_train_steps or eval_every_steps may change between restarts.
IDENTITY_FIELDS = ('model', 'data', 'seed', 'batch_size')
# Inside those, fields that change how fast the data arrives or how much
# memory a step takes, not what is computed (rematerialization gives the
# same gradients).
TUNING_FIELDS = (
  'data.read_threads',
  'data.worker_buffer_size',
  'model.remat',
)


def flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  """Flattens nested dicts to {'a.b.c': value}."""
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(flatten(value, f'{name}.'))
    else:
      flat[name] = value
  return flat


def _identity(config: dict) -> dict[str, Any]:
  """The dotted identity fields of a config that decide what it computes.

  Left out: the options of attention variants the model does not use (they
  are never read), options of the used one at their registry default (so
  that a run saved before an option existed still matches: its absence
  meant the default) and data-loader tuning.
  """
  flat = {}
  for field in IDENTITY_FIELDS:
    flat.update(flatten({field: config.get(field)}))
  used = (config.get('model') or {}).get('attention')
  defaults = attention.defaults(used) if used in attention.names() else {}
  prefix = 'model.attention_options.'
  identity = {}
  for k, v in flat.items():
    if k in TUNING_FIELDS:
      continue
    if k.startswith(prefix):
      name, _, option = k[len(prefix) :].partition('.')
      if name != used or (option in defaults and v == defaults[option]):
        continue
    identity[k] = v
  return identity


def differing_fields(saved: dict, current: dict) -> list[str]:
  """Dotted names of identity fields whose values differ between configs.

  Args:
    saved: the config a workdir was created with (from config.json).
    current: the config about to run, as a JSON-compatible dict.

  Returns:
    Sorted field names, e.g. ['model.num_layers']; empty when compatible.
  """
  # JSON round trip so tuples and lists, ints and floats compare as saved.
  a, b = (_identity(json.loads(json.dumps(c))) for c in (saved, current))
  return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


# ---------------------------------------------------------------------------
# Checkpoints.


class _DropMessages(logging.Filter):
  """Drops absl/Orbax records that hold any of the given fragments."""

  def __init__(self, fragments: tuple[str, ...]):
    super().__init__()
    self.fragments = fragments

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(f in message for f in self.fragments)


# Checkpoints saved between evaluations carry no validation metric by design
# (they are ranked only by recency), so Orbax's warning would repeat at
# every one of them.
logging.getLogger('absl').addFilter(_DropMessages(('did not provide metrics',)))
# When a checkpoint read fails, Orbax's gathered reads of the other arrays
# end with the same error, which asyncio logs when they are collected
# (with the whole TensorStore spec): the one warning of `restore_latest`
# says it already.
logging.getLogger('asyncio').addFilter(
  _DropMessages(('Encountered error while reading array',))
)
# Orbax's notes on what a read-only manager implies, which is what we want.
_READ_ONLY_NOTES = ('read_only=True', 'is read only')


@contextlib.contextmanager
def _quiet_failed_reads():
  """Silences the echoes of a failed asynchronous checkpoint read.

  When TensorStore fails on one array, Orbax's other pending reads are left
  as coroutines that Python reports one by one when they are collected
  ('Exception ignored in: <coroutine ...>', 'Event loop is closed'):
  thousands of lines that bury the one warning that matters. The failure
  itself still raises and is reported by the caller.
  """
  _drop_closed_loop_callbacks()  # Before `previous`: it stays installed.
  previous = sys.unraisablehook

  def hook(unraisable):
    obj = unraisable.object
    if asyncio.iscoroutine(obj) or isinstance(
      unraisable.exc_value, RuntimeError | asyncio.CancelledError
    ):
      return
    previous(unraisable)

  sys.unraisablehook = hook
  try:
    yield
  finally:
    # Collect what the failed read left behind while the hook is in place.
    gc.collect()
    sys.unraisablehook = previous


def _drop_closed_loop_callbacks() -> None:
  """Keeps TensorStore's late callbacks of a failed read off the console.

  The reads still pending when one fails complete later, on TensorStore's
  threads, and hand their results to Orbax's event loop, closed by then:
  each raises 'RuntimeError: Event loop is closed' in a done-callback,
  which Python reports through sys.unraisablehook (a bare traceback), at
  any time after the failure, also after `_quiet_failed_reads` has put the
  previous hook back. So from the first checkpoint restore on, that one
  exception (and only it) is dropped for the rest of the process; anything
  else still reaches the previous hook.
  """
  previous = sys.unraisablehook
  if getattr(previous, 'drops_closed_loop', False):
    return

  def hook(unraisable):
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == 'Event loop is closed':
      return
    previous(unraisable)

  hook.drops_closed_loop = True
  sys.unraisablehook = hook


class Checkpoints:
  """A run's Orbax checkpoints: save, restore, the latest and the best.

  Args:
    directory: where the checkpoints live (created on the first save).
    keep: how many of the latest checkpoints to keep.
    best_metric: key of the validation metrics that ranks checkpoints.
    best_mode: 'min' or 'max'.
    read_only: open another run's checkpoints to read them: nothing is
      created, saved or deleted.
  """

  def __init__(
    self,
    directory: str,
    *,
    keep: int = 1,
    best_metric: str = 'loss',
    best_mode: str = 'min',
    read_only: bool = False,
  ):
    # realpath: processes that reach a shared directory by different paths
    # (a symlink) must agree on its name.
    self.directory = os.path.realpath(directory)
    self.read_only = read_only

    def metric(metrics: dict) -> float:
      return float(metrics[best_metric])

    if read_only:
      with _quiet(_READ_ONLY_NOTES):
        options = ocp.CheckpointManagerOptions(
          read_only=True, best_fn=metric, best_mode=best_mode
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
      return
    # LatestN keeps the last `keep`; BestN keeps the best one even when it
    # has fallen out of the last `keep`. Checkpoints saved between
    # evaluations carry no metrics and count only for LatestN.
    policy = checkpoint_managers.AnyPreservationPolicy(
      [
        checkpoint_managers.LatestN(n=keep),
        checkpoint_managers.BestN(
          get_metric_fn=metric,
          reverse=best_mode == 'min',
          n=1,
          keep_checkpoints_without_metrics=False,
        ),
      ]
    )
    options = ocp.CheckpointManagerOptions(
      best_fn=metric,
      best_mode=best_mode,
      preservation_policy=policy,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  @classmethod
  def of_run(cls, workdir: str, config: Any, **kwargs) -> 'Checkpoints':
    """The checkpoints of the run in `workdir` made with `config`."""
    return cls(
      checkpoint_dir(workdir),
      keep=config.get('keep_checkpoints', 1),
      best_metric=config.get('best_metric', 'loss'),
      best_mode=config.get('best_mode', 'min'),
      **kwargs,
    )

  def latest_step(self) -> int | None:
    """The step of the newest checkpoint, or None if there is none."""
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the best validation metric (else the newest), or None."""
    step = self._manager.best_step()
    return self._manager.latest_step() if step is None else step

  def all_steps(self) -> list[int]:
    """Steps of all checkpoints on disk, ascending."""
    return sorted(self._manager.all_steps())

  def metrics(self, step: int) -> dict | None:
    """Validation metrics saved with checkpoint `step`, if any."""
    return self._manager.metrics(step)

  def metadata(self, step: int) -> dict:
    """The JSON record (step, config) saved with checkpoint `step`."""
    restored = self._manager.restore(
      step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())
    )
    return restored['metadata']

  def save(
    self,
    step: int,
    state: Any,
    data_iter: Any,
    *,
    metadata: dict,
    metrics: dict | None = None,
  ) -> None:
    """Saves a checkpoint; array writes finish in the background.

    The arrays are copied to host memory before this returns, so the caller
    may donate `state` to the next step right away. The iterator position
    is written synchronously, before the caller advances it.

    Args:
      step: the number of optimizer steps taken.
      state: the NNX state (a pytree of arrays).
      data_iter: the grain DataLoaderIterator of the training data.
      metadata: JSON-serializable record stored beside the state.
      metrics: validation metrics of this step (ranks the checkpoint).
    """
    self._manager.save(
      step,
      args=ocp.args.Composite(
        **{STATE_ITEM: ocp.args.StandardSave(state)},
        data_iter=grain.checkpoint.CheckpointSave(data_iter),
        metadata=ocp.args.JsonSave(metadata),
      ),
      metrics=metrics,
    )

  def restore(
    self, step: int, abstract_state: Any, data_iter: Any = None
  ) -> Any:
    """Restores checkpoint `step`.

    Args:
      step: which checkpoint.
      abstract_state: pytree of jax.ShapeDtypeStruct (with shardings) of the
        state, e.g. from `abstract(state)`.
      data_iter: if given, the training iterator is moved to the saved
        position in place.

    Returns:
      The restored state.
    """
    items = {STATE_ITEM: ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items['data_iter'] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored[STATE_ITEM]

  def restore_latest(
    self, abstract_state: Any, data_iter: Any = None
  ) -> tuple[int, Any]:
    """Restores the newest checkpoint that can be read.

    A checkpoint that fails to restore (truncated or missing files, e.g.
    from a disk that filled up or a copy cut short) is passed over, with one
    warning naming it and the error, and the next older one is tried. Once
    one restores, the unreadable newer ones are moved to `corrupt_dir/<step>`
    (kept for inspection, not deleted; moving them also lets the resumed
    run save those steps again). When checkpoints exist but none restores,
    nothing is moved and an error is raised: starting over would rewrite
    the run's metrics.

    Args:
      abstract_state: as for `restore`.
      data_iter: as for `restore`.

    Returns:
      (step, state) of the restored checkpoint, or (0, None) when there is
      no checkpoint.

    Raises:
      RuntimeError: checkpoints exist but none of them can be restored.
    """
    failed = []
    for step in reversed(self.all_steps()):
      try:
        with _quiet_failed_reads():
          state = self.restore(step, abstract_state, data_iter)
      except Exception as error:  # Orbax and TensorStore raise many types.
        message = str(error).splitlines()[0] if str(error) else ''
        # TensorStore appends a repr of its spec that says nothing more.
        message = message.split(' See full TensorStore details')[0]
        failed.append((step, f'{type(error).__name__}: {message}'))
        logging.warning(
          'Checkpoint %s could not be restored (%s); trying the previous '
          'checkpoint.',
          os.path.join(self.directory, str(step)),
          failed[-1][1],
        )
        continue
      for bad_step, _ in failed:
        moved = self._set_aside(bad_step)
        logging.warning(
          'Moved unreadable checkpoint %s to %s; resuming from step %d.',
          os.path.join(self.directory, str(bad_step)),
          moved,
          step,
        )
      return step, state
    if failed:
      tried = '; '.join(f'{s} ({why})' for s, why in failed)
      raise RuntimeError(
        f'no checkpoint in {self.directory} can be restored; tried steps '
        f'{tried}. Nothing was moved or deleted.'
      )
    return 0, None

  @property
  def corrupt_dir(self) -> str:
    """Where unreadable checkpoints go: beside the checkpoints directory."""
    return os.path.join(os.path.dirname(self.directory), CORRUPT_DIR)

  def _set_aside(self, step: int) -> str:
    """Moves checkpoint `step` to `corrupt_dir`; returns its new path."""
    source = os.path.join(self.directory, str(step))
    target = os.path.join(self.corrupt_dir, str(step))
    suffix = 1
    while os.path.exists(target):  # A step that failed before.
      target = os.path.join(self.corrupt_dir, f'{step}.{suffix}')
      suffix += 1
    # One process moves it; the others wait until it is gone.
    if jax.process_index() == 0:
      os.makedirs(self.corrupt_dir, exist_ok=True)
      os.replace(source, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
    self._manager.reload()
    return target

  def wait(self) -> None:
    """Blocks until background writes are done."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for background writes and releases the manager."""
    self._manager.close()


@contextlib.contextmanager
def _quiet(fragments: tuple[str, ...]):
  """Drops absl log records containing any of `fragments` meanwhile."""
  drop = _DropMessages(fragments)
  logger = logging.getLogger('absl')
  logger.addFilter(drop)
  try:
    yield
  finally:
    logger.removeFilter(drop)


def abstract(state: Any) -> Any:
  """Shapes, dtypes and shardings of `state`, to restore into."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)


# ---------------------------------------------------------------------------
# Reading a trained model.


def restore_model(
  workdir: str, step: int | None = None
) -> tuple[nnx.Module, ml_collections.ConfigDict, int]:
  """Rebuilds the model of a run from one of its checkpoints, read-only.

  Only the model's variables are read (parameters and non-trainable ones
  such as FAVOR+'s projection), not the optimizer state or the data
  position, and nothing in `workdir` is written.

  Args:
    workdir: the workdir of `train.train_and_evaluate` (config.json and
      checkpoints/).
    step: which checkpoint; default the best by the run's validation
      metric (else the newest).

  Returns:
    (the model, the run's config, the checkpoint step).

  Raises:
    FileNotFoundError: no such workdir, no config, no checkpoint, or no
      checkpoint `step`.
  """
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise FileNotFoundError(
      f'workdir {workdir} does not exist; give the workdir of a training run'
    )
  saved = read_config(workdir)
  directory = checkpoint_dir(workdir)
  if saved is None or not os.path.isdir(directory):
    raise FileNotFoundError(
      f'workdir {workdir} holds no checkpoint (expected {CONFIG_FILE} and '
      f'{CHECKPOINT_DIR}/ written by scripts/train.py)'
    )
  config = ml_collections.ConfigDict(saved)
  ckpts = Checkpoints.of_run(workdir, saved, read_only=True)
  try:
    steps = ckpts.all_steps()
    if step is None:
      step = ckpts.best_step()
  finally:
    ckpts.close()
  if step is None or step not in steps:
    raise FileNotFoundError(
      f'no checkpoint {"" if step is None else step} in {directory}; '
      f'saved steps: {steps}'
    )
  model = model_lib.create_model(config.model, rngs=nnx.Rngs(0))
  graphdef, model_state = nnx.split(model)
  item_dir = epath.Path(directory) / str(step) / STATE_ITEM
  # A partial restore of the 'model' subtree of the saved training state;
  # the PyTree handler (which wrote the StandardSave item underneath)
  # accepts a partial target, the Standard one does not.
  target = {'model': abstract(model_state)}
  handler = ocp.PyTreeCheckpointHandler()
  try:
    restored = handler.restore(
      item_dir,
      args=ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
      ),
    )
  finally:
    handler.close()
  return nnx.merge(graphdef, restored['model']), config, int(step)
