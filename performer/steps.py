"""The training and evaluation steps: top-level pure functions, jitted once.

  state, metrics = steps.train_step(graphdef, state, batch, dropout_key,
                                    options)
  sums = steps.eval_step(graphdef, state, batch, task)

`train_step` is the one step body of both data-parallel modes: under jit
the batch is one global array and nothing needs combining; under pmap
(`performer.parallel`) the same body runs per device with `across` set to
the device axis, whose `total` sums the parts over devices.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from performer import attention, tasks
from performer import metrics as metrics_lib


class TrainState(nnx.Module):
  """The model and its optimizer, split and merged as one NNX graph."""

  def __init__(self, model: nnx.Module, optimizer: nnx.Optimizer):
    self.model = model
    self.optimizer = optimizer


class StepOptions(NamedTuple):
  """Static settings of the training step (hashable: part of the jit key).

  Attributes:
    task: the `tasks.Task` of the batches.
    grad_accum_steps: micro-batches per optimizer step.
    skip_nonfinite: also return 'skipped' (1.0 when the gradients were not
      finite and the optimizer, made with skip_nonfinite_steps, skipped the
      update).
  """

  task: tasks.Task = tasks.TASKS['lm']
  grad_accum_steps: int = 1
  skip_nonfinite: bool = False


class OneProgram(NamedTuple):
  """The whole global batch in one program (jit): parts are already whole."""

  def total(self, x: Any) -> Any:
    return x

  def device_key(self, key: jax.Array) -> jax.Array:
    return key


DEFAULT_OPTIONS = StepOptions()
ONE_PROGRAM = OneProgram()


def train_step_body(
  graphdef: nnx.GraphDef,
  state: nnx.State,
  batch: dict[str, jax.Array],
  dropout_key: jax.Array,
  options: StepOptions = DEFAULT_OPTIONS,
  across: Any = ONE_PROGRAM,
) -> tuple[nnx.State, dict[str, jax.Array]]:
  """One optimizer step on a batch of `options.task`.

  Args:
    graphdef: static structure of the `TrainState`.
    state: its arrays (donated: the caller must use the returned state).
    batch: the task's inputs, 'targets' and 'weights': the global batch
      under jit, this device's rows under pmap.
    dropout_key: base key; step s uses fold_in(dropout_key, s).
    options: `StepOptions` (static).
    across: how parts of the batch combine (static): `total(x)` sums a
      value over the parts, `device_key(key)` gives each part its own
      dropout key. `ONE_PROGRAM` under jit; the device axis under pmap.

  Returns:
    The new state and this step's loss, accuracy and gradient norm (and
    'skipped' with `options.skip_nonfinite`).
  """
  train_state = nnx.merge(graphdef, state)
  model, optimizer = train_state.model, train_state.optimizer
  step = optimizer.step[...]
  # FAVOR+ projections are a function of (seed, step): redrawing here keeps
  # them identical across restarts and device counts.
  attention.redraw_features(model, step)
  key = across.device_key(jax.random.fold_in(dropout_key, step))

  # The loss is a weighted mean over the whole (global) batch. The weights
  # are data, so their total is known up front: every micro-batch and
  # device divides its sums by it, and adding the parts gives exactly the
  # gradient of the global mean, however the batch is split.
  weight = across.total(jnp.sum(batch['weights'].astype(jnp.float32)))
  weight = jnp.maximum(weight, 1.0)
  model_def, params, rest = nnx.split(model, nnx.Param, ...)
  task = options.task

  def loss_fn(params, batch, key):
    # copy=True: fresh Variables at this trace level, which the forward pass
    # may update (running statistics); `rest`'s own belong to the outer one.
    model = nnx.merge(model_def, params, rest, copy=True)
    logits_XV = tasks.forward(
      model, task, batch, train=True, rngs=nnx.Rngs(dropout=key)
    )
    sums = task.loss_sums(logits_XV, batch)
    # The running statistics this forward pass updated (causal FAVOR++ and
    # FAVOR#; batch normalization's kind), to carry out of the traced model.
    stats = nnx.state(model, nnx.BatchStat)
    return sums['loss_sum'] / weight, (sums['correct_sum'] / weight, stats)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  accum = options.grad_accum_steps
  if accum == 1:
    (loss, (accuracy, stats)), grads = grad_fn(params, batch, key)
  else:

    def micro_step(totals, inputs):
      index, micro_batch = inputs
      (loss, (accuracy, stats)), grads = grad_fn(
        params, micro_batch, jax.random.fold_in(key, index)
      )
      return jax.tree.map(jnp.add, totals, (loss, accuracy, grads, stats)), None

    zeros = jax.tree.map(
      jnp.zeros_like, (0.0, 0.0, params, nnx.state(model, nnx.BatchStat))
    )
    micro_batches = {k: micro_batches_of(v, accum) for k, v in batch.items()}
    (loss, accuracy, grads, stats), _ = jax.lax.scan(
      micro_step, zeros, (jnp.arange(accum), micro_batches)
    )
  loss, accuracy, grads, stats = across.total((loss, accuracy, grads, stats))
  # Every micro-batch and device updated the same statistics from its own
  # rows: their mean is the update from the mean of their moments (the
  # running moments are linear in the batch's).
  parts = across.total(jnp.float32(accum))
  nnx.update(model, jax.tree.map(lambda x: x / parts, stats))
  optimizer.update(model, grads)
  step_metrics = {
    'loss': loss,
    'accuracy': accuracy,
    'grad_norm': optax.tree.norm(grads),
  }
  if options.skip_nonfinite:
    finite = jnp.all(
      jnp.array([jnp.isfinite(g).all() for g in jax.tree.leaves(grads)])
    )
    step_metrics['skipped'] = 1.0 - finite.astype(jnp.float32)
  return nnx.state(train_state), step_metrics


def micro_batches_of(x_B: jax.Array, accum: int) -> jax.Array:
  """[B, ...] -> [accum, B / accum, ...]; micro-batch i holds rows i::accum.

  Interleaved rather than contiguous rows: a batch sharded in contiguous
  blocks over devices gives every device an equal part of every
  micro-batch, so no rows move between devices.
  """
  x = x_B.reshape(x_B.shape[0] // accum, accum, *x_B.shape[1:])
  return jnp.swapaxes(x, 0, 1)


# Top-level and jitted once per (graphdef, options): the state is donated,
# so the caller must use the returned state.
train_step = jax.jit(
  train_step_body, static_argnums=(0, 4, 5), donate_argnums=1
)


@functools.partial(jax.jit, static_argnums=(0, 3))
def eval_step(
  graphdef: nnx.GraphDef,
  state: nnx.State,
  batch: dict[str, jax.Array],
  task: tasks.Task,
) -> dict[str, jax.Array]:
  """Loss, correct and weight sums of one batch (see `metrics.xent_sums`)."""
  model = nnx.merge(graphdef, state).model
  logits_XV = tasks.forward(model, task, batch, train=False)
  return task.loss_sums(logits_XV, batch)


def evaluate(
  graphdef: nnx.GraphDef,
  state: nnx.State,
  task: tasks.Task,
  batches: Any,
  reported: str | None,
) -> dict[str, float] | None:
  """Metrics over `batches` (fixed-shape device batches), or None if empty.

  Fixed shapes (the last batch padded with weight 0) make `eval_step`
  compile once.
  """
  totals = None
  for batch in batches:
    sums = eval_step(graphdef, state, batch, task)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    return None
  return metrics_lib.from_sums(jax.device_get(totals), reported)
