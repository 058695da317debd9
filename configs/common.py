"""Pieces shared by every experiment config.

An experiment file defines `get_config(arg=None)`, starts from
`base_config()`, sets what differs and returns the config locked, so that a
misspelled field fails loudly instead of being silently added. `arg` is the
text after the colon in `--config=configs/X.py:key=value,...`; `parse_arg`
turns it into typed values.
"""

import ml_collections

from performer import attention, data, model


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a config argument such as 'attention=softmax,steps=500'.

  Each value is converted to the type of its default. A bare first item
  that is not a key sets the first key ('softmax,lite' means
  attention=softmax,lite=True); any other bare item is a bool set to True
  ('tiny' means tiny=True).

  Args:
    arg: the argument string; None or '' keeps every default.
    **defaults: the valid keys and their default values.

  Returns:
    A ConfigDict holding every key, with parsed or default values.

  Raises:
    ValueError: for an unknown key or a value of the wrong type.
  """
  items = [part.strip() for part in (arg or '').split(',')]
  raw = {}
  for position, item in enumerate(filter(None, items)):
    key, sep, value = item.partition('=')
    key = key.strip()
    if not sep and position == 0 and defaults and key not in defaults:
      # The README's `lra_listops.py:favor,lite`: the variant comes first.
      key, value, sep = next(iter(defaults)), key, '='
    raw[key] = value.strip() if sep else 'true'
  unknown = sorted(set(raw) - set(defaults))
  if unknown:
    raise ValueError(
      f'unknown config argument(s) {unknown}; valid keys: {sorted(defaults)}'
    )
  result = ml_collections.ConfigDict()
  for key, default in defaults.items():
    result[key] = _convert(key, raw[key], default) if key in raw else default
  return result


def _convert(key: str, value: str, default):
  """Converts `value` to the type of `default`, or raises ValueError."""
  if isinstance(default, bool):
    if value.lower() in ('true', '1', 'yes'):
      return True
    if value.lower() in ('false', '0', 'no'):
      return False
    raise ValueError(f'config argument {key}={value!r} must be a bool')
  if default is None or isinstance(default, str):
    return value
  try:
    return type(default)(value)
  except ValueError:
    raise ValueError(
      f'config argument {key}={value!r} must be a {type(default).__name__}'
    ) from None


def check_attention(name: str) -> str:
  """Returns `name` if it is a registered attention variant, else raises."""
  if name not in attention.names():
    raise ValueError(
      f'unknown attention {name!r}; valid names: {attention.names()}'
    )
  return name


def base_config() -> ml_collections.ConfigDict:
  """Returns the trainer fields every experiment shares, with defaults.

  Fields:
    seed: seeds parameters, data order, dropout and random features.
    batch_size: global batch size (split over devices and processes).
    num_train_steps: optimizer steps.
    learning_rate: peak learning rate.
    warmup_steps: linear warmup from 0 to the peak.
    schedule: decay after warmup: 'cosine' (to `end_lr_fraction` of the
      peak), 'linear' (likewise), 'rsqrt' (1/sqrt(step/warmup)) or
      'constant'.
    end_lr_fraction: final learning rate of the cosine and linear decays,
      as a fraction of the peak.
    weight_decay: decoupled AdamW decay; applied to matrices only, never to
      biases, LayerNorm scales or other vectors.
    b1, b2, eps: Adam moments' decay rates and epsilon.
    grad_clip_norm: clip the global gradient norm to this; 0 disables.
    grad_accum_steps: micro-batches per optimizer step: the batch is split
      into this many parts whose gradients add up to the whole batch's
      (one update), so a large batch fits in a small device's memory.
      batch_size must be divisible by devices x grad_accum_steps.
    dtype: compute dtype, 'float32' or 'bfloat16' (mixed precision:
      parameters and optimizer state stay float32, the loss is float32).
      model.dtype follows it.
    parallel: data parallelism over all devices of all processes: 'jit'
      (one program over a ('data',) device mesh) or 'pmap' (replicated
      state, gradients summed over devices with a collective); both give
      the same losses. See docs/scaling.md.
    skip_nonfinite_steps: False stops training at the first NaN or inf
      loss or gradient (naming the step; the checkpoints hold only good
      steps); True skips such steps instead (parameters and optimizer
      moments unchanged) and logs their count as 'skipped_steps'.
    log_every_steps: train metrics (averaged since the last log line) go to
      the console, TensorBoard and metrics.jsonl this often.
    eval_every_steps: validation evaluation (and a checkpoint with its
      metric) this often, and at the end.
    eval_max_batches: validation batches per evaluation; 0 = whole split.
    test_max_batches: test batches of the final evaluation; 0 = whole split.
    checkpoint_every_steps: checkpoint this often in addition to the
      evaluation steps; 0 = only at evaluations and at the end.
    keep_checkpoints: how many of the latest checkpoints to keep; the best
      one by `best_metric` is kept in addition.
    best_metric: validation metric that picks the best checkpoint.
    best_mode: 'min' or 'max': whether smaller `best_metric` is better.
    sample_num_tokens: tokens generated at the end of LM training (0 = no
      sample).
    sample_prompt: text the sample continues.
    sample_temperature: sampling temperature (0 = greedy).
    init_from: '' or the workdir of an earlier run whose best checkpoint's
      parameters initialize a fresh run (the attention variant may differ:
      see `performer.transfer`); ignored when resuming.
    pretrain_steps: 0, or self-pretraining steps run before the task (the
      classification tasks only): a masked-token model on the task's own
      training inputs (data.mask_rate of their tokens) in
      <workdir>/pretrain, then the task from its encoder (init_from) in
      <workdir>; one command runs both (`performer.pretrain`).
    model: `performer.model.default_config()`; vocab_size 0 takes the
      data's vocabulary size, max_len follows data.seq_len and dtype
      follows dtype.
    data: `performer.data.default_config()`.
  """
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 32
  config.num_train_steps = 10_000
  config.learning_rate = 1e-3
  config.warmup_steps = 1000
  config.schedule = 'cosine'
  config.end_lr_fraction = 0.0
  config.weight_decay = 0.1
  config.b1 = 0.9
  config.b2 = 0.98
  config.eps = 1e-9
  config.grad_clip_norm = 1.0
  config.grad_accum_steps = 1
  config.dtype = 'float32'
  config.parallel = 'jit'
  config.skip_nonfinite_steps = False

  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.eval_max_batches = 0
  config.test_max_batches = 0
  config.checkpoint_every_steps = 0
  config.keep_checkpoints = 2
  config.best_metric = 'loss'
  config.best_mode = 'min'

  config.sample_num_tokens = 200
  config.sample_prompt = ''
  config.sample_temperature = 0.8
  config.init_from = ''
  config.pretrain_steps = 0

  config.data = data.default_config()
  config.model = model.default_config()
  config.model.vocab_size = 0
  # A reference, so that --config.data.seq_len=N also resizes the position
  # table; setting model.max_len explicitly breaks the link.
  config.model.max_len = config.data.get_ref('seq_len')
  # Likewise: --config.dtype=bfloat16 switches the model's compute dtype.
  config.model.dtype = config.get_ref('dtype')
  return config
