"""Every check of an experiment config, with all problems reported at once.

  validate.check(config)          # ValueError listing every problem
  validate.fit_to_data(config, datasets)   # sizes that follow the data

A problem names the field, the bad value and what is valid. The trainer
calls `check` before it opens any data or writes anything; `check_model`
and `check_data` serve the code that builds a model or opens a dataset on
its own (benchmarks, tests, `performer.data.build`).
"""

import math
from collections.abc import Mapping
from typing import Any

import ml_collections
from flax import nnx

from performer import attention, data, metrics, model, optim, parallel, tasks

_TEXT_FILE_FIELDS = ('train_path', 'validation_path', 'test_path')
# data.path means: text_files' corpus, the AAN release directory (aan), the
# official Pathfinder release directory (pathfinder; '' generates the
# images), the FASTA file (protein).
_PATH_NAMES = ('text_files', 'aan', 'pathfinder', 'protein')


class _Problems:
  """Collects problem messages, each prefixed with where it was found."""

  def __init__(self, prefix: str = ''):
    self.prefix = prefix
    self.messages: list[str] = []

  def need(self, ok: bool, message: str) -> bool:
    if not ok:
      self.messages.append(self.prefix + message)
    return ok

  def int_at_least(self, config: Mapping, field: str, minimum: int) -> bool:
    value = config[field]
    ok = (
      isinstance(value, int)
      and not isinstance(value, bool)
      and value >= minimum
    )
    kind = {0: 'a non-negative int', 1: 'a positive int'}.get(
      minimum, f'an int >= {minimum}'
    )
    return self.need(ok, f'{field} must be {kind}, got {value!r}')

  def number_in(
    self,
    config: Mapping,
    field: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
  ) -> bool:
    value = config[field]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    interval = (
      f'{"(" if low_open else "["}{low:g}, '
      f'{"inf" if math.isinf(high) else f"{high:g}"}'
      f'{")" if high_open or math.isinf(high) else "]"}'
    )
    return self.need(ok, f'{field} must be in {interval}, got {value!r}')

  def choice(self, config: Mapping, field: str, valid) -> bool:
    value = config[field]
    return self.need(
      value in valid, f'{field} must be one of {tuple(valid)}, got {value!r}'
    )


def _raise(what: str, messages: list[str]) -> None:
  if messages:
    raise ValueError(f'invalid {what}: ' + '; '.join(messages))


# ---------------------------------------------------------------------------
# The trainer config.


def problems(config: ml_collections.ConfigDict) -> list[str]:
  """Every problem of an experiment config (trainer, model, data, task)."""
  found = _Problems()
  for field in (
    'batch_size',
    'num_train_steps',
    'log_every_steps',
    'eval_every_steps',
    'keep_checkpoints',
    'grad_accum_steps',
  ):
    found.int_at_least(config, field, 1)
  for field in (
    'warmup_steps',
    'checkpoint_every_steps',
    'eval_max_batches',
    'test_max_batches',
    'sample_num_tokens',
  ):
    found.int_at_least(config, field, 0)
  found.choice(config, 'schedule', optim.SCHEDULES)
  found.number_in(config, 'learning_rate', 0, math.inf, low_open=True)
  found.number_in(config, 'end_lr_fraction', 0, 1)
  found.number_in(config, 'b1', 0, 1, high_open=True)
  found.number_in(config, 'b2', 0, 1, high_open=True)
  found.number_in(config, 'eps', 0, math.inf, low_open=True)
  found.number_in(config, 'weight_decay', 0, math.inf)
  found.number_in(config, 'grad_clip_norm', 0, math.inf)
  found.number_in(config, 'sample_temperature', 0, math.inf)
  found.choice(config, 'best_mode', ('min', 'max'))
  found.choice(config, 'parallel', parallel.MODES)
  found.choice(config, 'dtype', model.DTYPES)
  found.need(
    isinstance(config.skip_nonfinite_steps, bool),
    f'skip_nonfinite_steps must be a bool, got {config.skip_nonfinite_steps!r}',
  )
  found.need(
    config.model.dtype == config.dtype,
    f'model.dtype={config.model.dtype!r} differs from '
    f'dtype={config.dtype!r}; set dtype only (model.dtype follows it)',
  )
  batch, accum = config.batch_size, config.grad_accum_steps
  if isinstance(batch, int) and isinstance(accum, int) and accum > 0:
    problem = parallel.batch_size_problem(batch, accum)
    found.need(problem is None, problem)
  found.messages += model_problems(config.model)
  data_messages = data_problems(config.data)
  found.messages += data_messages
  if not data_messages:
    found.messages += _task_problems(config)
    found.messages += _pretraining_problems(config)
  return found.messages


def _pretraining_problems(config: ml_collections.ConfigDict) -> list[str]:
  """pretrain_steps: a count, for a task that can pretrain on its inputs."""
  found = _Problems()
  if not found.int_at_least(config, 'pretrain_steps', 0):
    return found.messages
  steps, name = config.pretrain_steps, config.data.name
  if steps == 0:
    return found.messages
  found.need(
    name in data.CLASSIFICATION_NAMES,
    f'pretrain_steps={steps} applies to the classification tasks '
    f'{data.CLASSIFICATION_NAMES}, which pretrain on their own inputs; '
    f'{name!r} is a {tasks.task_of(config.data)!r} task already (set '
    'pretrain_steps=0)',
  )
  found.need(
    config.data.objective == 'causal',
    f'pretrain_steps={steps} with data.objective='
    f'{config.data.objective!r}: leave data.objective at its default '
    "'causal' (the task itself); the pretraining stage sets 'masked'",
  )
  found.need(
    not config.init_from,
    f'pretrain_steps={steps} and init_from={config.init_from!r} are both '
    'set; the fine-tuning stage starts from the pretraining stage, so give '
    'one of them',
  )
  return found.messages


def _task_problems(config: ml_collections.ConfigDict) -> list[str]:
  """The model head, direction and best metric against the data's task."""
  found = _Problems()
  task = tasks.get(tasks.task_of(config.data))
  m = config.model
  found.need(
    m.head == task.head,
    f'data {config.data.name!r} is a {task.name!r} task, which trains '
    f'model.head={task.head!r}; got model.head={m.head!r}',
  )
  found.need(
    m.causal == task.causal,
    f'model.causal must be {task.causal} for a {task.name!r} task '
    f'({task.why}); got {m.causal}',
  )
  names = metrics.eval_metric_names(tasks.reported_metric(config))
  found.need(
    config.best_metric in names,
    f'best_metric must be one of {list(names)}, got {config.best_metric!r}',
  )
  seq_len = config.data.seq_len
  if m.position == 'learned' and isinstance(m.max_len, int):
    found.need(
      m.max_len >= seq_len,
      f'model.max_len={m.max_len} is shorter than data.seq_len={seq_len}',
    )
  return found.messages


def notices(config: ml_collections.ConfigDict) -> list[str]:
  """Settings that are valid but likely not what was meant, to be printed.

  A warmup longer than the run leaves the learning rate below its peak for
  the whole run: refused it would break short smoke runs of long configs
  (`--config.num_train_steps=30`), so it is said instead.
  """
  said = []
  warmup, steps = config.warmup_steps, config.num_train_steps
  if warmup > steps:
    _, schedule = optim.make_optimizer(config)
    said.append(
      f'warmup_steps={warmup} exceeds num_train_steps={steps}: the learning '
      f'rate never reaches its peak {config.learning_rate:.3g} (it ends at '
      f'{float(schedule(steps - 1)):.3g})'
    )
  return said


def check(config: ml_collections.ConfigDict) -> None:
  """Raises one ValueError that lists every problem of `config`."""
  _raise('config', problems(config))


def fit_to_data(config: ml_collections.ConfigDict, datasets: Any) -> None:
  """Takes the sizes that follow the data (0) and checks the others.

  Sets model.vocab_size (and model.num_classes for classifiers) when 0;
  raises ValueError when a set size cannot hold the data.
  """
  m = config.model
  found = _Problems()
  if m.vocab_size == 0:
    m.vocab_size = int(datasets.vocab_size)
  found.need(
    m.vocab_size >= datasets.vocab_size,
    f"model.vocab_size={m.vocab_size} is smaller than the data's "
    f'vocabulary ({datasets.vocab_size}); set it to 0 to follow the data',
  )
  if m.head != 'lm':
    if m.num_classes == 0:
      m.num_classes = int(datasets.num_classes)
    found.need(
      m.num_classes == datasets.num_classes,
      f'model.num_classes={m.num_classes} but {config.data.name!r} has '
      f'{datasets.num_classes} classes; set it to 0 to follow the data',
    )
  _raise('config', found.messages)


# ---------------------------------------------------------------------------
# The model config.


def model_problems(config: Mapping[str, Any], prefix='model.') -> list[str]:
  """Every problem of a model config (`model.default_config()` fields).

  Sizes of 0 that follow the data (vocab_size, num_classes) are accepted
  here; `fit_to_data` resolves them. Every registered attention variant's
  options are checked, used or not, so a bad value never waits for the day
  its variant is picked.
  """
  found = _Problems(prefix)
  found.choice(config, 'head', model.HEADS)
  found.choice(config, 'position', model.POSITIONS)
  found.choice(config, 'pool', model.POOLS)
  found.choice(config, 'dtype', model.DTYPES)
  remat = config.get('remat', False)
  found.need(isinstance(remat, bool), f'remat must be a bool, got {remat!r}')
  found.need(
    config['attention'] in attention.names(),
    f'attention must be one of {attention.names()}, got '
    f'{config["attention"]!r}',
  )
  for field in ('vocab_size', 'num_classes'):
    found.int_at_least(config, field, 0)
  for field in (
    'max_len',
    'emb_dim',
    'num_heads',
    'num_layers',
    'qkv_dim',
    'mlp_dim',
  ):
    found.int_at_least(config, field, 1)
  found.number_in(config, 'dropout_rate', 0, 1, high_open=True)
  qkv, heads = config['qkv_dim'], config['num_heads']
  head_dim = 0
  if isinstance(qkv, int) and isinstance(heads, int) and heads > 0:
    if found.need(
      qkv % heads == 0,
      f'qkv_dim={qkv} must be divisible by num_heads={heads}',
    ):
      head_dim = qkv // heads
  if config['position'] == 'rotary' and head_dim:
    found.need(
      head_dim % 2 == 0,
      f'rotary positions need an even head dim, got qkv_dim / num_heads = '
      f'{head_dim}',
    )
  if config['position'] == 'sinusoidal' and isinstance(config['emb_dim'], int):
    found.need(
      config['emb_dim'] % 2 == 0,
      f'sinusoidal positions need an even emb_dim, got {config["emb_dim"]}',
    )
  if config['head'] != 'lm':
    found.need(
      not config['causal'],
      f'head {config["head"]!r} encodes bidirectionally; set causal=False '
      f'(got causal={config["causal"]})',
    )
  found.messages += _attention_problems(config, head_dim or 64, prefix=prefix)
  return found.messages


def _attention_problems(config, head_dim: int, prefix: str) -> list[str]:
  """Builds every variant abstractly with its options; collects the errors.

  The variant the model uses is built in the model's direction. Another
  variant counts as invalid only when neither direction accepts its
  options (some variants exist in one direction only).
  """
  messages = []
  for name in attention.names():
    options = model.attention_create_options(
      config, name, cls_token=config['head'] != 'lm' and config['pool'] == 'cls'
    )
    used = name == config['attention']
    directions = [bool(config['causal'])]
    if not used:
      directions.append(not directions[0])
    errors = []
    for causal in directions:
      try:
        nnx.eval_shape(
          lambda o=options, c=causal, n=name: attention.create(
            n, head_dim=head_dim, causal=c, rngs=nnx.Rngs(0), **o
          )
        )
        break
      except (ValueError, TypeError) as error:
        errors.append(str(error))
    else:
      messages.append(f'{prefix}attention_options.{name}: {errors[0]}')
  return messages


def check_model(config: Mapping[str, Any]) -> None:
  """Raises one ValueError listing every problem of a model config."""
  _raise('model config', model_problems(config, prefix=''))


# ---------------------------------------------------------------------------
# The data config.


def data_problems(config: Mapping[str, Any], prefix='data.') -> list[str]:
  """Every problem of a data config (`data.default_config()` fields)."""
  c = _with_data_defaults(config)
  found = _Problems(prefix)
  unknown = sorted(set(dict(config)) - set(c))
  found.need(
    not unknown,
    f'unknown options {unknown}; valid ones: {sorted(c)}',
  )
  if unknown:
    return found.messages
  found.need(
    c['name'] in data.NAMES,
    f'name must be one of {list(data.NAMES)}, got {c["name"]!r} (unknown '
    f'dataset; valid names: {", ".join(data.NAMES)})',
  )
  found.choice(c, 'tokenizer', data.TOKENIZERS)
  for key in ('seq_len', 'spm_vocab_size', 'spm_sample_bytes', 'read_threads'):
    found.int_at_least(c, key, 1)
  for key in ('worker_count', 'worker_buffer_size'):
    found.int_at_least(c, key, 0)
  if c['name'] != 'text_files':
    used = [f'data.{k}' for k in _TEXT_FILE_FIELDS if c[k]]
    found.need(
      not used,
      f'{", ".join(used)} only apply to name=text_files, not {c["name"]!r}',
    )
  found.need(
    not c['path'] or c['name'] in _PATH_NAMES,
    f'path is set ({c["path"]}) but dataset {c["name"]!r} reads no path; '
    f'it applies to {", ".join(_PATH_NAMES)}',
  )
  if found.choice(c, 'objective', data.OBJECTIVES):
    maskable = data.PROTEIN_NAMES + data.CLASSIFICATION_NAMES
    found.need(
      c['objective'] == 'causal' or c['name'] in maskable,
      f'objective={c["objective"]!r} applies to {maskable} only, not '
      f'{c["name"]!r} (a language-model corpus trains next-token '
      "prediction: objective='causal')",
    )
  found.number_in(c, 'mask_rate', 0, 1, low_open=True, high_open=True)
  for key in ('num_train', 'num_validation', 'num_test', 'min_length'):
    found.int_at_least(c, key, 0)
  for key in ('max_length', 'image_size'):
    found.int_at_least(c, key, 1)
  found.need(
    not c['spm_model'] or c['tokenizer'] == 'sentencepiece',
    f'spm_model is set ({c["spm_model"]}) but tokenizer is '
    f'{c["tokenizer"]!r}; set data.tokenizer=sentencepiece to use it',
  )
  return found.messages


def _with_data_defaults(config: Mapping[str, Any]) -> ml_collections.ConfigDict:
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  merged = data.default_config()
  known = {k: v for k, v in dict(config).items() if k in merged}
  merged.update(known)
  return merged


def check_data(config: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Returns `config` over the data defaults; ValueError listing problems."""
  _raise('data config', data_problems(config))
  return _with_data_defaults(config)
