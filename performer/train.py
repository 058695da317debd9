"""The one trainer: `train_and_evaluate(config, workdir)`.

Serves every attention variant; the config picks the variant, the model size
and the data. One run:

  1. validates the config, builds the data and the model, and checks that
     the workdir is empty or holds a run of the same config (which it
     resumes) before anything is written;
  2. trains with jitted top-level steps, `(state, batch, key) -> (state,
     metrics)`, data parallel over all devices of all processes
     (`config.parallel`: 'jit' over a 1-D ('data',) mesh, or 'pmap'; see
     performer/parallel.py and docs/scaling.md), optionally in
     `grad_accum_steps` micro-batches and bf16 compute (`config.dtype`);
  3. evaluates on validation every `eval_every_steps` and at the end, saving
     a checkpoint with each evaluation (plus every `checkpoint_every_steps`);
  4. evaluates the test split with the best-validation checkpoint and prints
     a short generated sample.

A SIGTERM (preemption notice) ends the run early with a checkpoint of the
current step; rerunning the same command resumes (also after kill -9, and
from the previous checkpoint when the newest cannot be read).

Tasks (what the data gives, `datasets.task`): 'lm' (next token, causal
model), 'mlm' (masked tokens, bidirectional model), 'classification' (one
label per sequence) and 'retrieval' (one label per pair of sequences).

Workdir layout: config.json (the resolved config), metrics.jsonl,
tensorboard/ (event files), checkpoints/<step>/ and, at the end,
results.json (the returned metrics).
"""

import functools
import json
import math
import os
import resource
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from flax import nnx

from performer import attention, data
from performer import checkpoint as ckpt_lib
from performer import generate as generate_lib
from performer import metrics as metrics_lib
from performer import model as model_lib
from performer import parallel as parallel_lib
from performer import transfer as transfer_lib
from performer.data import build as data_build

SCHEDULES = ('cosine', 'linear', 'rsqrt', 'constant')
DTYPES = ('float32', 'bfloat16')
RESULTS_FILE = 'results.json'


class TrainState(nnx.Module):
  """The model and its optimizer, split and merged as one NNX graph."""

  def __init__(self, model: nnx.Module, optimizer: nnx.Optimizer):
    self.model = model
    self.optimizer = optimizer


# ---------------------------------------------------------------------------
# Optimizer.


# Config fields that define the optimizer. Equal settings give the same
# (cached) optax object, so the TrainState graphdef, which holds it, compares
# equal across runs in one process and the jitted steps are reused instead
# of compiled again.
OPTIMIZER_FIELDS = (
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


def make_optimizer(
  config: ml_collections.ConfigDict,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with warmup, decay schedule and global-norm gradient clipping.

  Weight decay applies to matrices only (kernels, embedding tables), not to
  biases and LayerNorm scales, which decay would just pull toward zero.
  With `skip_nonfinite_steps`, `optax.apply_if_finite` wraps it all: a step
  whose gradients hold a NaN or inf leaves the parameters and moments
  unchanged, and the optimizer state counts such steps.

  Returns:
    The optax transformation and its learning-rate schedule.
  """
  settings = {k: config[k] for k in OPTIMIZER_FIELDS[:-1]}
  # Configs saved before this field existed lack it.
  settings['skip_nonfinite_steps'] = config.get('skip_nonfinite_steps', False)
  if settings['schedule'] in ('constant', 'rsqrt'):
    settings['num_train_steps'] = 0  # Unused: keep the cache key general.
  return _optimizer(**settings)


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
  peak, warmup = learning_rate, warmup_steps
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
  lr = decay
  if warmup:
    lr = optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), decay], [warmup]
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


def _is_matrix(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


# ---------------------------------------------------------------------------
# Steps: top-level pure functions of the split state, jitted once.


class StepOptions(NamedTuple):
  """Static settings of the training step (hashable: part of the jit key).

  Attributes:
    grad_accum_steps: micro-batches per optimizer step.
    skip_nonfinite: also return 'skipped' (1.0 when the gradients were not
      finite and the optimizer, made with skip_nonfinite_steps, skipped the
      update).
    axis_name: the pmap axis to sum gradients and metrics over; None under
      jit, where the batch is one global array.
  """

  grad_accum_steps: int = 1
  skip_nonfinite: bool = False
  axis_name: str | None = None


def _train_step(
  graphdef: nnx.GraphDef,
  state: nnx.State,
  batch: dict[str, jax.Array],
  dropout_key: jax.Array,
  options: StepOptions | None = None,
) -> tuple[nnx.State, dict[str, jax.Array]]:
  """One optimizer step on a batch of any task (see `forward`).

  Jitted as `train_step`; under pmap as `pmap_train_step`.

  Args:
    graphdef: static structure of the `TrainState`.
    state: its arrays (donated: the caller must use the returned state).
    batch: the model inputs (see `forward`), 'targets' and 'weights': the
      global batch under jit, this device's rows under pmap.
    dropout_key: base key; step s uses fold_in(dropout_key, s).
    options: `StepOptions` (static); None for the defaults.

  Returns:
    The new state and this step's loss, accuracy and gradient norm (and
    'skipped' with `options.skip_nonfinite`).
  """
  options = options or StepOptions()
  train_state = nnx.merge(graphdef, state)
  model, optimizer = train_state.model, train_state.optimizer
  step = optimizer.step[...]
  # FAVOR+ projections are a function of (seed, step): redrawing here keeps
  # them identical across restarts and device counts.
  attention.redraw_features(model, step)
  key = jax.random.fold_in(dropout_key, step)
  axis = options.axis_name
  if axis is not None:
    # Each device draws dropout masks for its own rows.
    key = jax.random.fold_in(key, jax.lax.axis_index(axis))

  # The loss is a weighted mean over the whole (global) batch. The weights
  # are data, so their total is known up front: every micro-batch and
  # device divides its sums by it, and adding the parts gives exactly the
  # gradient of the global mean, however the batch is split.
  weight = jnp.sum(batch['weights'].astype(jnp.float32))
  if axis is not None:
    weight = jax.lax.psum(weight, axis)
  weight = jnp.maximum(weight, 1.0)
  model_def, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_fn(params, batch, key):
    model = nnx.merge(model_def, params, rest)
    logits_XV = forward(model, batch, train=True, rngs=nnx.Rngs(dropout=key))
    sums = metrics_lib.xent_sums(logits_XV, batch['targets'], batch['weights'])
    return sums['loss_sum'] / weight, sums['correct_sum'] / weight

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  accum = options.grad_accum_steps
  if accum == 1:
    (loss, accuracy), grads = grad_fn(params, batch, key)
  else:

    def micro_step(totals, inputs):
      index, micro_batch = inputs
      (loss, accuracy), grads = grad_fn(
        params, micro_batch, jax.random.fold_in(key, index)
      )
      return jax.tree.map(jnp.add, totals, (loss, accuracy, grads)), None

    zeros = (0.0, 0.0, jax.tree.map(jnp.zeros_like, params))
    micro_batches = {k: _micro_batches(v, accum) for k, v in batch.items()}
    (loss, accuracy, grads), _ = jax.lax.scan(
      micro_step, zeros, (jnp.arange(accum), micro_batches)
    )
  if axis is not None:
    loss, accuracy, grads = jax.lax.psum((loss, accuracy, grads), axis)
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


def _micro_batches(x_B: jax.Array, accum: int) -> jax.Array:
  """[B, ...] -> [accum, B / accum, ...]; micro-batch i holds rows i::accum.

  Interleaved rather than contiguous rows: a batch sharded in contiguous
  blocks over devices gives every device an equal part of every
  micro-batch, so no rows move between devices.
  """
  x = x_B.reshape(x_B.shape[0] // accum, accum, *x_B.shape[1:])
  return jnp.swapaxes(x, 0, 1)


# Top-level and jitted once per (graphdef, options): the state is donated,
# so the caller must use the returned state.
train_step = jax.jit(_train_step, static_argnums=(0, 4), donate_argnums=1)


@functools.cache
def pmap_train_step(graphdef: nnx.GraphDef, options: StepOptions):
  """`train_step` under pmap: (state, batch, dropout_key) -> (state, metrics).

  The state and batch carry a leading axis of local devices; the key is
  shared. Gradients and metrics are summed over `options.axis_name`.
  """
  return jax.pmap(
    functools.partial(_train_step, graphdef, options=options),
    axis_name=options.axis_name,
    in_axes=(0, 0, None),
    donate_argnums=0,
  )


@functools.partial(jax.jit, static_argnums=0)
def eval_step(
  graphdef: nnx.GraphDef, state: nnx.State, batch: dict[str, jax.Array]
) -> dict[str, jax.Array]:
  """Loss, correct and weight sums of one batch (see `metrics.xent_sums`)."""
  model = nnx.merge(graphdef, state).model
  logits_XV = forward(model, batch, train=False)
  return metrics_lib.xent_sums(logits_XV, batch['targets'], batch['weights'])


# Batch keys that feed the model, per task; the keys a batch has tell its
# task apart (they are static under jit).
MODEL_INPUTS = {
  'lm': ('inputs',),  # Also 'mlm': the same call, a bidirectional model.
  'classification': ('inputs', 'mask'),
  'retrieval': ('inputs1', 'inputs2', 'mask1', 'mask2'),
}
BATCH_KEYS = frozenset(
  ('targets', 'weights', *(k for keys in MODEL_INPUTS.values() for k in keys))
)


def forward(
  model: nnx.Module,
  batch: dict[str, jax.Array],
  *,
  train: bool,
  rngs: nnx.Rngs | None = None,
) -> jax.Array:
  """The model's logits for a batch of any task.

  - next-token and masked-token batches: 'inputs' [B, L] -> [B, L, V];
  - classification: 'inputs', 'mask' [B, L] -> [B, C];
  - retrieval: 'inputs1', 'inputs2', 'mask1', 'mask2' -> [B, C].
  """
  if 'inputs1' in batch:
    keys = MODEL_INPUTS['retrieval']
  elif 'mask' in batch:
    keys = MODEL_INPUTS['classification']
  else:
    keys = MODEL_INPUTS['lm']
  return model(*(batch[k] for k in keys), train=train, rngs=rngs)


# ---------------------------------------------------------------------------
# The run.


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any]:
  """Trains and evaluates a model; resumes from `workdir` if it has a run.

  Args:
    config: an experiment config (see configs/common.py for the fields).
    workdir: where config.json, metrics.jsonl, TensorBoard events and
      checkpoints go. A workdir of an earlier run with the same model, data,
      seed and batch size is resumed from its latest checkpoint.

  Returns:
    Final metrics: 'step', 'best_step', 'train/<m>' (last logged window),
    'validation/<m>' (last evaluation), 'test/<m>' (best checkpoint),
    plus 'checkpoint_dir' and, for LMs, the generated 'sample' text.
    After a SIGTERM: only 'step' (saved in a checkpoint), 'preempted'
    (True) and 'checkpoint_dir'.

  Raises:
    ValueError: for an invalid config, unusable data, or a workdir that
      holds a run of a different config (nothing is written then).
    FloatingPointError: when the loss or gradient becomes NaN or infinite
      (unless config.skip_nonfinite_steps); the message names the step, and
      the checkpoints hold only good steps.
  """
  start_time = time.perf_counter()
  workdir = os.path.abspath(workdir)
  config = config.copy_and_resolve_references()
  extra = extra_metric(config)
  _validate(config, extra)
  num_processes = jax.process_count()
  datasets = data_build.create(
    config.data,
    batch_size=config.batch_size // num_processes,
    seed=config.seed,
    shard_index=jax.process_index(),
    shard_count=num_processes,
  )
  _fit_model_to_data(config, datasets)
  init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
  model = model_lib.create_model(config.model, rngs=nnx.Rngs(init_key))
  if config.init_from and not os.path.isdir(config.init_from):
    raise FileNotFoundError(
      f'config.init_from={config.init_from!r} is not a directory; it must be '
      'the workdir of an earlier run'
    )
  saved = ckpt_lib.read_saved_config(workdir)
  if saved is not None:
    diffs = ckpt_lib.differing_fields(saved, config.to_dict())
    if diffs:
      raise ValueError(
        f'workdir {workdir} holds a run with a different config; differing '
        f'fields: {", ".join(diffs)}. Use another --workdir (or delete this '
        'one) to start a new run.'
      )
  # Nothing has been written above this line.

  par = parallel_lib.Parallel(config.parallel)
  replicated = par.replicated
  tx, schedule = make_optimizer(config)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split(TrainState(model, optimizer))
  state = jax.device_put(state, replicated)
  del model, optimizer  # The arrays live in `state` from here on.

  train_iter = iter(datasets.train_loader())
  ckpts = ckpt_lib.Checkpoints(
    os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR),
    keep=config.keep_checkpoints,
    best_metric=config.best_metric,
    best_mode=config.best_mode,
  )
  # The newest checkpoint that restores; unreadable newer ones are set
  # aside with a warning; none readable is an error (see
  # `Checkpoints.restore_latest`).
  start_step, restored = ckpts.restore_latest(
    ckpt_lib.abstract(state), train_iter
  )
  transferred = None
  if start_step:
    state = restored
  elif config.init_from:
    # A fresh run that starts from another run's weights (e.g. a softmax
    # model's weights in a FAVOR+ model): only the parameters move.
    train_state = nnx.merge(graphdef, state)
    transferred = transfer_lib.load_pretrained(
      train_state.model, config.init_from
    )
    state = jax.device_put(nnx.state(train_state), replicated)
    del train_state
  del restored
  _write_config(workdir, config)
  writer = metrics_lib.MetricWriter(workdir, start_step)
  is_main = jax.process_index() == 0
  say = tqdm.tqdm.write if is_main else lambda _: None
  verb = f'Resuming at step {start_step}:' if start_step else 'Training'
  say(f'{verb} {_describe(config, state)}; workdir {workdir}')

  def shard(batch):
    return par.global_batch({k: v for k, v in batch.items() if k in BATCH_KEYS})

  def evaluate(state, split, max_batches):
    return _evaluate(
      graphdef, state, datasets, split, max_batches, shard, extra
    )

  options = StepOptions(
    grad_accum_steps=config.grad_accum_steps,
    skip_nonfinite=config.skip_nonfinite_steps,
    axis_name=parallel_lib.AXIS if par.mode == 'pmap' else None,
  )
  if par.mode == 'pmap':
    pmap_step = pmap_train_step(graphdef, options)

  def run_step(state, batch):
    batch = par.train_batch({k: v for k, v in batch.items() if k in BATCH_KEYS})
    if par.mode == 'pmap':
      return pmap_step(state, batch, dropout_key)
    return train_step(graphdef, state, batch, dropout_key, options)

  sequences = 2 if datasets.task == 'retrieval' else 1
  tokens_per_step = config.batch_size * config.data.seq_len * sequences
  step = start_step
  validation = ckpts.metrics(start_step) if start_step else None
  if transferred is not None:
    # The curve of a transferred model starts right after the swap.
    validation = evaluate(state, 'validation', config.eval_max_batches)
    writer.write(0, 'validation', validation)
    say(
      f'Loaded {transferred["num_params"]} parameters from step '
      f'{transferred["source_step"]} of {config.init_from}'
    )
    say(metrics_lib.format_line(0, 'validation', validation))
  state = par.put_state(state)  # From here on in the layout of the mode.
  train_summary = {}
  window = []  # Host metrics of the steps since the last log line.
  skipped = []  # Steps skipped for non-finite gradients since then.
  pending = []  # (step, device metrics) not yet fetched from the device.
  timer = metrics_lib.Timer()
  try:
    with (
      parallel_lib.PreemptionNotice() as preemption,
      tqdm.tqdm(
        total=config.num_train_steps,
        initial=start_step,
        unit='step',
        disable=None if is_main else True,
        dynamic_ncols=True,
      ) as bar,
    ):
      while step < config.num_train_steps:
        state, step_metrics = run_step(state, next(train_iter))
        step += 1
        bar.update(1)
        pending.append((step, step_metrics))
        if step == start_step + 1:
          jax.block_until_ready(step_metrics)
          say(f'First step (compilation included) took {timer.lap():.1f}s')
          timer.reset()
        timer.count(tokens_per_step)
        last = step == config.num_train_steps
        # A preemption notice (SIGTERM) ends the run after a checkpoint of
        # this step, with the metrics up to it logged.
        stop = preemption.reached(step)
        log_now = step % config.log_every_steps == 0 or last or stop
        eval_now = step % config.eval_every_steps == 0 or last
        save_now = (
          eval_now
          or stop
          or (
            config.checkpoint_every_steps
            and step % config.checkpoint_every_steps == 0
          )
        )
        if not (log_now or save_now):
          continue
        # Fetching syncs with the device; do it only when something needs
        # the values, so steps otherwise dispatch asynchronously.
        records, skipped_now = _fetch_and_check(pending, ckpts)
        window += records
        skipped += skipped_now
        pending = []
        for bad in skipped_now:
          say(f'step {bad}: non-finite gradients; update skipped')
        if log_now:
          train_summary = metrics_lib.summarize(window, extra) if window else {}
          if config.skip_nonfinite_steps:
            train_summary['skipped_steps'] = len(skipped)
          train_summary['learning_rate'] = float(schedule(step - 1))
          tokens_per_sec = timer.rate()
          train_summary['tokens_per_sec'] = tokens_per_sec
          train_summary['steps_per_sec'] = tokens_per_sec / tokens_per_step
          writer.write(step, 'train', train_summary)
          if 'loss' in train_summary:
            bar.set_postfix(
              loss=f'{train_summary["loss"]:.3f}',
              tok_s=f'{train_summary["tokens_per_sec"]:.0f}',
            )
          say(metrics_lib.format_line(step, 'train', train_summary))
          window, skipped = [], []
          timer.reset()
        if eval_now or save_now:
          canonical = par.canonical(state)
        if eval_now:
          validation = evaluate(
            canonical, 'validation', config.eval_max_batches
          )
          writer.write(step, 'validation', validation)
          say(metrics_lib.format_line(step, 'validation', validation))
        if save_now:
          ckpts.save(
            step,
            canonical,
            train_iter,
            metadata={'step': step, 'config': config.to_dict()},
            metrics=validation if eval_now else None,
          )
        writer.flush()
        timer.reset()  # Evaluation and saving are not training throughput.
        if stop:
          ckpts.wait()
          say(
            f'Preemption notice (SIGTERM) at step {step}: saved checkpoint '
            f'{os.path.join(ckpts.directory, str(step))}; run the same '
            'command again to resume.'
          )
          return {
            'step': step,
            'preempted': True,
            'checkpoint_dir': ckpts.directory,
          }

    state = par.canonical(state)
    if validation is None:  # Only when resuming a checkpoint saved unevaluated.
      validation = evaluate(state, 'validation', config.eval_max_batches)
      writer.write(step, 'validation', validation)
    ckpts.wait()
    best_step = ckpts.best_step()
    best_state = state
    if best_step is not None and best_step != step:
      best_state = ckpts.restore(best_step, ckpt_lib.abstract(state))
    test = evaluate(best_state, 'test', config.test_max_batches)
    if test is not None:
      writer.write(step, 'test', test)
    sample = ''
    if config.sample_num_tokens > 0 and datasets.task == 'lm':
      sample = sample_text(
        nnx.merge(graphdef, best_state).model, datasets, config
      )
      writer.write_text(step, 'sample', sample)
  finally:
    ckpts.close()
    writer.close()

  result = {'step': step, 'best_step': best_step}
  result.update({f'train/{k}': v for k, v in train_summary.items()})
  result.update({f'validation/{k}': v for k, v in validation.items()})
  result.update({f'test/{k}': v for k, v in (test or {}).items()})
  result['checkpoint_dir'] = ckpts.directory
  result['sample'] = sample
  result['peak_memory_bytes'] = peak_memory_bytes()
  result['wall_time_sec'] = time.perf_counter() - start_time
  _write_json(workdir, RESULTS_FILE, result)
  _report(result, extra, say)
  return result


def peak_memory_bytes() -> int:
  """Peak memory of this process's first device (host RSS on a CPU).

  GPUs and TPUs report their allocator's peak; the CPU backend reports
  nothing, so there it is the process's peak resident set size.
  """
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use'])
  # ru_maxrss is in KiB on Linux.
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def extra_metric(config: ml_collections.ConfigDict) -> str | None:
  """The metric derived from the loss that a run of `config` reports.

  Bits per byte for byte-level language-model corpora, perplexity for other
  token-level tasks (SentencePiece corpora, proteins), none for classifiers.
  """
  if config.model.head != 'lm':
    return None
  if config.data.name in data.LM_NAMES and config.data.tokenizer == 'byte':
    return 'bits_per_byte'
  return 'perplexity'


def sample_text(
  model: nnx.Module, datasets: Any, config: ml_collections.ConfigDict
) -> str:
  """Continues `config.sample_prompt` with the trained LM; returns the text.

  Prefill plus cached decoding (`performer.generate`).

  Args:
    model: the trained language model.
    datasets: gives the tokenizer (`encode`, `decode`).
    config: reads sample_prompt, sample_num_tokens, sample_temperature,
      data.seq_len (prompts keep their last seq_len tokens) and seed.
  """
  prompt = np.asarray(datasets.encode(config.sample_prompt), np.int32)
  if prompt.size == 0:
    prompt = np.asarray(datasets.encode('\n'), np.int32)
  if prompt.size == 0:
    return ''
  prompt = prompt[-config.data.seq_len :]  # The context it was trained on.
  tokens = generate_lib.generate(
    model,
    prompt,
    num_tokens=config.sample_num_tokens,
    temperature=config.sample_temperature,
    seed=config.seed,
  )
  return config.sample_prompt + datasets.decode(tokens)


# ---------------------------------------------------------------------------
# Helpers of the run.


def _validate(config: ml_collections.ConfigDict, extra: str | None) -> None:
  """Raises one ValueError listing every invalid trainer field."""
  problems = []

  def need(ok, message):
    if not ok:
      problems.append(message)

  for field in (
    'batch_size',
    'num_train_steps',
    'log_every_steps',
    'eval_every_steps',
    'keep_checkpoints',
  ):
    value = config[field]
    need(
      isinstance(value, int) and value > 0,
      f'{field} must be a positive int, got {value!r}',
    )
  for field in (
    'warmup_steps',
    'checkpoint_every_steps',
    'eval_max_batches',
    'test_max_batches',
    'sample_num_tokens',
  ):
    value = config[field]
    need(
      isinstance(value, int) and value >= 0,
      f'{field} must be a non-negative int, got {value!r}',
    )
  need(
    config.schedule in SCHEDULES,
    f'schedule must be one of {SCHEDULES}, got {config.schedule!r}',
  )
  need(config.learning_rate > 0, 'learning_rate must be positive')
  need(0 <= config.end_lr_fraction <= 1, 'end_lr_fraction must be in [0, 1]')
  need(0 <= config.b1 < 1 and 0 <= config.b2 < 1, 'b1, b2 must be in [0, 1)')
  need(config.eps > 0, 'eps must be positive')
  need(config.weight_decay >= 0, 'weight_decay must be non-negative')
  need(config.grad_clip_norm >= 0, 'grad_clip_norm must be non-negative')
  need(config.sample_temperature >= 0, 'sample_temperature must be >= 0')
  need(
    config.best_mode in ('min', 'max'),
    f"best_mode must be 'min' or 'max', got {config.best_mode!r}",
  )
  names = metrics_lib.eval_metric_names(extra)
  need(
    config.best_metric in names,
    f'best_metric must be one of {names}, got {config.best_metric!r}',
  )
  need(
    config.parallel in parallel_lib.MODES,
    f'parallel must be one of {parallel_lib.MODES}, got {config.parallel!r}',
  )
  need(
    config.dtype in DTYPES,
    f'dtype must be one of {DTYPES}, got {config.dtype!r}',
  )
  need(
    config.model.dtype == config.dtype,
    f'model.dtype={config.model.dtype!r} differs from '
    f'dtype={config.dtype!r}; set dtype only (model.dtype follows it)',
  )
  accum = config.grad_accum_steps
  need(
    isinstance(accum, int) and accum > 0,
    f'grad_accum_steps must be a positive int, got {accum!r}',
  )
  need(
    isinstance(config.skip_nonfinite_steps, bool),
    f'skip_nonfinite_steps must be a bool, got {config.skip_nonfinite_steps!r}',
  )
  if isinstance(config.batch_size, int) and isinstance(accum, int) and accum:
    problem = parallel_lib.batch_size_problem(config.batch_size, accum)
    need(problem is None, problem)
  if problems:
    raise ValueError('invalid config: ' + '; '.join(problems))


# The model head and attention direction each data task trains.
TASK_MODELS = {
  'lm': ('lm', True),
  'mlm': ('lm', False),
  'classification': ('classifier', False),
  'retrieval': ('dual_encoder', False),
}


def _fit_model_to_data(config: ml_collections.ConfigDict, datasets) -> None:
  """Checks the model against the data's task; takes sizes from the data.

  vocab_size and num_classes of 0 follow the data.
  """
  head, causal = TASK_MODELS[datasets.task]
  m = config.model
  if m.head != head:
    raise ValueError(
      f'data {config.data.name!r} is a {datasets.task!r} task, which trains '
      f'model.head={head!r}; got model.head={m.head!r}'
    )
  if m.causal != causal:
    why = (
      'a bidirectional LM sees the tokens it predicts'
      if causal
      else 'the task encodes whole sequences'
    )
    raise ValueError(
      f'model.causal must be {causal} for a {datasets.task!r} task ({why}); '
      f'got {m.causal}'
    )
  if m.vocab_size == 0:
    m.vocab_size = int(datasets.vocab_size)
  elif m.vocab_size < datasets.vocab_size:
    raise ValueError(
      f'model.vocab_size={m.vocab_size} is smaller than the '
      f"data's vocabulary ({datasets.vocab_size}); set it to 0 to follow "
      'the data'
    )
  if head != 'lm':
    if m.num_classes == 0:
      m.num_classes = int(datasets.num_classes)
    elif m.num_classes != datasets.num_classes:
      raise ValueError(
        f'model.num_classes={m.num_classes} but {config.data.name!r} has '
        f'{datasets.num_classes} classes; set it to 0 to follow the data'
      )
  if m.position == 'learned' and m.max_len < config.data.seq_len:
    raise ValueError(
      f'model.max_len={m.max_len} is shorter than '
      f'data.seq_len={config.data.seq_len}'
    )


def _write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  _write_json(workdir, ckpt_lib.CONFIG_FILE, config.to_dict())


def _write_json(workdir: str, name: str, value: Any) -> None:
  """Writes `value` to workdir/name atomically, from process 0 only."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, name)
  with open(path + '.tmp', 'w') as f:
    json.dump(value, f, indent=2, default=str)
  os.replace(path + '.tmp', path)


def _evaluate(
  graphdef, state, datasets, split, max_batches, shard, extra
) -> dict[str, float] | None:
  """Metrics of `split` (None when the data has no such split).

  The data yields fixed-shape batches (the last padded with weight 0), so
  `eval_step` compiles once.
  """
  if split not in datasets.eval_splits:
    return None
  totals = None
  for batch in datasets.eval_batches(split, max_batches):
    sums = eval_step(graphdef, state, shard(batch))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    return None
  return metrics_lib.from_sums(jax.device_get(totals), extra)


def _fetch_and_check(
  pending: list, ckpts: ckpt_lib.Checkpoints
) -> tuple[list[dict], list[int]]:
  """Moves step metrics to the host; raises at the first non-finite one.

  Steps the optimizer skipped (their 'skipped' metric is 1, only with
  skip_nonfinite_steps) are set apart instead: their loss says nothing
  about the model, which they left unchanged.

  Returns:
    The metrics of the good steps and the numbers of the skipped ones.
  """
  records, skipped = [], []
  for step, device_metrics in pending:
    # Under pmap every metric has one (equal) copy per local device.
    values = {
      k: float(np.ravel(v)[0])
      for k, v in jax.device_get(device_metrics).items()
    }
    if values.pop('skipped', 0.0):
      skipped.append(step)
      continue
    for name in ('loss', 'grad_norm'):
      if not math.isfinite(values[name]):
        ckpts.wait()
        good = ckpts.latest_step()
        where = (
          f'the last good checkpoint is step {good} in {ckpts.directory}'
          if good is not None
          else 'no checkpoint was saved'
        )
        raise FloatingPointError(
          f'{name} is {values[name]} at step {step}; training stopped and '
          f'{where} (config.skip_nonfinite_steps=True skips such steps '
          'instead)'
        )
    records.append(values)
  return records, skipped


def _describe(config: ml_collections.ConfigDict, state: nnx.State) -> str:
  m = config.model
  kind = {
    'lm': 'LM',
    'classifier': 'classifier',
    'dual_encoder': 'dual encoder',
  }
  return (
    f'{m.num_layers}-layer {m.attention} {kind[m.head]} (emb {m.emb_dim}, '
    f'{_num_params(state) / 1e6:.2f}M params) on {config.data.name}'
  )


def _num_params(state: nnx.State) -> int:
  model_state = state['model']
  params = nnx.filter_state(model_state, nnx.Param)
  return sum(x.size for x in jax.tree.leaves(params))


def _report(result: dict, extra: str | None, say) -> None:
  name = extra or 'accuracy'
  lines = [f'Finished at step {result["step"]}.']
  if f'validation/{name}' in result:
    lines.append(f'validation {name}: {result[f"validation/{name}"]:.4f}')
  if f'test/{name}' in result:
    lines.append(
      f'test {name}: {result[f"test/{name}"]:.4f} (best checkpoint, step '
      f'{result["best_step"]})'
    )
  lines.append(f'checkpoints: {result["checkpoint_dir"]}')
  if result['sample']:
    lines.append('sample:\n' + result['sample'])
  say('\n'.join(lines))
