"""The optimizer: AdamW with warmup, a decay schedule and gradient clipping.

  tx, schedule = optim.make_optimizer(config)   # config: the trainer config

Weight decay applies to matrices only (kernels, embedding tables), not to
biases and LayerNorm scales, which decay would just pull toward zero. With
`skip_nonfinite_steps`, `optax.apply_if_finite` wraps it all: a step whose
gradients hold a NaN or inf leaves the parameters and moments unchanged.
"""

import functools

import jax
import ml_collections
import optax

SCHEDULES = ('cosine', 'linear', 'rsqrt', 'constant')

# Config fields that define the optimizer. Equal settings give the same
# (cached) optax object, so the TrainState graphdef, which holds it, compares
# equal across runs in one process and the jitted steps are reused instead
# of compiled again.
FIELDS = (
  'learning_rate',
  'warmup_steps',
  'schedule',
  'end_lr_fraction',
  'num_train_steps',
  'b1',
  'b2',
  'eps',
  'weight_decay',
  'grad_clip_norm',
  'skip_nonfinite_steps',
)
# Of those, the ones that shape the learning-rate schedule.
SCHEDULE_FIELDS = (
  'learning_rate',
  'warmup_steps',
  'schedule',
  'end_lr_fraction',
  'num_train_steps',
)


def make_optimizer(
  config: ml_collections.ConfigDict,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax transformation and learning-rate schedule of a config.

  Args:
    config: a trainer config (see configs/common.py): reads `FIELDS`.

  Returns:
    The optax transformation and its learning-rate schedule.
  """
  settings = {k: config.get(k) for k in FIELDS}
  # Configs saved before this field existed lack it.
  settings['skip_nonfinite_steps'] = bool(settings['skip_nonfinite_steps'])
  if settings['schedule'] in ('constant', 'rsqrt'):
    settings['num_train_steps'] = 0  # Unused: keep the cache key general.
  return _optimizer(**settings)


def schedule_uses_length(schedule: str) -> bool:
  """Whether the schedule's shape depends on num_train_steps."""
  return schedule in ('cosine', 'linear')


@functools.cache
def _optimizer(
  *,
  learning_rate,
  warmup_steps,
  schedule,
  end_lr_fraction,
  num_train_steps,
  b1,
  b2,
  eps,
  weight_decay,
  grad_clip_norm,
  skip_nonfinite_steps,
):
  lr = _schedule(
    learning_rate, warmup_steps, schedule, end_lr_fraction, num_train_steps
  )
  tx = optax.adamw(
    lr,
    b1=b1,
    b2=b2,
    eps=eps,
    weight_decay=weight_decay,
    mask=_is_matrix,
  )
  if grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  if skip_nonfinite_steps:
    # Skip every such step, however many come in a row (optax would apply
    # the update after max_consecutive_errors of them).
    tx = optax.apply_if_finite(tx, max_consecutive_errors=2**31 - 1)
  return tx, lr


def _schedule(peak, warmup, schedule, end_lr_fraction, num_train_steps):
  """Linear warmup from 0 to `peak`, then the named decay."""
  decay_steps = max(num_train_steps - warmup, 1)
  if schedule == 'cosine':
    decay = optax.cosine_decay_schedule(peak, decay_steps, end_lr_fraction)
  elif schedule == 'linear':
    decay = optax.linear_schedule(peak, peak * end_lr_fraction, decay_steps)
  elif schedule == 'rsqrt':
    # Inverse square root of the step, continuous with the warmup's end.
    decay = lambda count: peak * jax.lax.rsqrt(1.0 + count / max(warmup, 1))
  elif schedule == 'constant':
    decay = optax.constant_schedule(peak)
  else:
    raise ValueError(f'schedule must be one of {SCHEDULES}, got {schedule!r}')
  if not warmup:
    return decay
  return optax.join_schedules(
    [optax.linear_schedule(0.0, peak, warmup), decay], [warmup]
  )


def _is_matrix(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)
