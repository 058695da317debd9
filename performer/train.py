"""The one trainer: `train_and_evaluate(config, workdir)`.

Serves every attention variant and every task; the config picks the
variant, the model size and the data. A run reads top to bottom in four
stages:

  1. `_set_up`: checks the config (every problem at once,
     `performer.validate`), opens the data and checks that the workdir is
     empty or holds a run of the same config (which it resumes), before
     anything is written;
  2. `_restore_or_initialize`: builds the model and optimizer, then
     restores the newest readable checkpoint, or starts from another run's
     weights (`config.init_from`), or from scratch;
  3. `_train`: the loop of jitted steps (`performer.steps`, data parallel
     through `performer.parallel`), logging, validation every
     `eval_every_steps` with a checkpoint, and a checkpoint on SIGTERM;
  4. `_finish`: evaluates the test split with the best-validation
     checkpoint, prints a generated sample for LMs and writes results.json.

Rerunning the same command resumes (also after kill -9, and from the
previous checkpoint when the newest cannot be read). The workdir's layout
is in `performer.workdir`.
"""

import dataclasses
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from flax import nnx

from performer import generate as generate_lib
from performer import metrics as metrics_lib
from performer import model as model_lib
from performer import optim, pretrain, steps, tasks, transfer, validate
from performer import parallel as parallel_lib
from performer import workdir as workdir_lib
from performer.data import build as data_build


@dataclasses.dataclass
class _Run:
  """What the stages share: the config, the data and where things go."""

  config: ml_collections.ConfigDict
  workdir: str
  datasets: Any
  task: tasks.Task
  reported: str | None  # The metric derived from the loss, if any.
  start_time: float
  tokens_per_step: int  # Of the global batch: the throughput's unit.
  saved_config: dict | None  # Of the run the workdir holds, if any.
  saved_step: int | None  # Its newest checkpoint, if any.
  log: Any = print


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any]:
  """Trains and evaluates a model; resumes from `workdir` if it has a run.

  Args:
    config: an experiment config (see configs/common.py for the fields).
    workdir: where config.json, metrics.jsonl, TensorBoard events and
      checkpoints go. A workdir of an earlier run with the same model, data,
      seed and batch size is resumed from its latest checkpoint.

  With `config.pretrain_steps` > 0, two stages: self-pretraining on the
  task's inputs in <workdir>/pretrain, then the task from its encoder in
  <workdir> (`performer.pretrain`).

  Returns:
    Final metrics: 'step', 'best_step', 'train/<m>' (last logged window),
    'validation/<m>' (last evaluation), 'test/<m>' (best checkpoint),
    plus 'checkpoint_dir' and, for LMs, the generated 'sample' text;
    after a pretraining stage also its 'pretrain/<key>' metrics.
    After a SIGTERM: only 'step' (saved in a checkpoint), 'preempted'
    (True) and 'checkpoint_dir'.

  Raises:
    ValueError: for an invalid config, unusable data, or a workdir that
      holds a run of a different config (nothing is written then).
    FileNotFoundError: missing data files or `config.init_from` run.
    FloatingPointError: when the loss or gradient becomes NaN or infinite
      (unless config.skip_nonfinite_steps); the message names the step, and
      the checkpoints hold only good steps.
  """
  if config.get('pretrain_steps', 0):
    return _pretrain_then_train(config, workdir)
  return _train_one_stage(config, workdir)


def _pretrain_then_train(
  config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any]:
  """Self-pretraining in <workdir>/pretrain, then the task (`pretrain`).

  Both stages' configs are checked before the first stage writes
  anything, and a workdir that holds a run without a pretraining stage is
  refused; each stage then checks its own workdir as any run does.
  """
  validate.check(config)
  stage_dir = pretrain.stage_workdir(workdir)
  first = pretrain.pretraining_config(config)
  validate.check(first)
  pretrained = workdir_lib.read_config(stage_dir)
  second = pretrain.finetuning_config(config, workdir, pretrained)
  validate.check(second)
  if workdir_lib.read_config(workdir) is not None and pretrained is None:
    raise ValueError(
      f'workdir {workdir} holds a run that was not pretrained here (no '
      f'{stage_dir}); use another --workdir for a run with '
      f'pretrain_steps={config.pretrain_steps}'
    )
  stage = workdir_lib.read_results(stage_dir)
  if not pretrain.finished(stage, config.pretrain_steps):
    stage = _train_one_stage(first, stage_dir)
    if stage.get('preempted'):
      return stage
  second = pretrain.finetuning_config(
    config, workdir, workdir_lib.read_config(stage_dir)
  )
  result = _train_one_stage(second, workdir)
  if result.get('preempted'):
    return result
  result.update(pretrain.prefixed(stage))
  if jax.process_index() == 0:
    workdir_lib.write_json(workdir_lib.results_path(workdir), result)
  return result


def _train_one_stage(
  config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any]:
  """`train_and_evaluate` of one run (no pretraining stage)."""
  run = _set_up(config, workdir)
  parallelism = parallel_lib.Parallel(run.config.parallel)
  graphdef, state, ckpts, train_iter, start_step = _restore_or_initialize(
    run, parallelism
  )
  writer = metrics_lib.MetricWriter(run.workdir, start_step)
  try:
    loop = _train(
      run, parallelism, graphdef, state, ckpts, train_iter, start_step, writer
    )
    if loop.preempted:
      return {
        'step': loop.step,
        'preempted': True,
        'checkpoint_dir': ckpts.directory,
      }
    return _finish(run, parallelism, graphdef, loop, ckpts, writer)
  finally:
    ckpts.close()
    writer.close()


# ---------------------------------------------------------------------------
# 1. Set up.


def _set_up(config: ml_collections.ConfigDict, workdir: str) -> _Run:
  """Checks the config, opens the data and checks the workdir.

  Writes nothing: every way this fails leaves the workdir as it was.
  """
  start_time = time.perf_counter()
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(
      f'workdir {workdir} is a file; give a directory (new or of a run)'
    )
  config = config.copy_and_resolve_references()
  validate.check(config)
  if config.init_from and not os.path.isdir(config.init_from):
    raise FileNotFoundError(
      f'config.init_from={config.init_from!r} is not a directory; it must be '
      'the workdir of an earlier run'
    )
  num_processes = jax.process_count()
  datasets = data_build.create(
    config.data,
    batch_size=config.batch_size // num_processes,
    seed=config.seed,
    shard_index=jax.process_index(),
    shard_count=num_processes,
  )
  validate.fit_to_data(config, datasets)
  saved_config, saved_step = _check_resumable(config, workdir)
  is_main = jax.process_index() == 0
  log = tqdm.tqdm.write if is_main else lambda _: None
  for notice in validate.notices(config):
    log(f'Notice: {notice}.')
  task = tasks.get(tasks.task_of(config.data))
  return _Run(
    config=config,
    workdir=workdir,
    datasets=datasets,
    task=task,
    reported=tasks.reported_metric(config),
    start_time=start_time,
    tokens_per_step=config.batch_size * config.data.seq_len * task.sequences,
    saved_config=saved_config,
    saved_step=saved_step,
    log=log,
  )


def _check_resumable(
  config: ml_collections.ConfigDict, workdir: str
) -> tuple[dict | None, int | None]:
  """Refuses a workdir whose run this config cannot continue.

  Returns:
    The saved config and newest checkpoint step of the workdir's run
    (None, None for a fresh workdir).
  """
  saved = workdir_lib.read_config(workdir)
  if saved is None:
    return None, None
  diffs = workdir_lib.differing_fields(saved, config.to_dict())
  if diffs:
    raise ValueError(
      f'workdir {workdir} holds a run with a different config; differing '
      f'fields: {", ".join(diffs)}. Use another --workdir (or delete this '
      'one) to start a new run.'
    )
  latest = workdir_lib.latest_step(workdir)
  if latest is not None and latest > config.num_train_steps:
    raise ValueError(
      f'workdir {workdir} holds a run at step {latest}, beyond '
      f'num_train_steps={config.num_train_steps}; to continue it, set '
      f'num_train_steps >= {latest} (its results are kept as they are)'
    )
  return saved, latest


# ---------------------------------------------------------------------------
# 2. Restore or initialize.


def _restore_or_initialize(run: _Run, parallelism: parallel_lib.Parallel):
  """The training state: restored, transferred from init_from, or fresh.

  Returns:
    (graphdef, state, checkpoints, training iterator, start step); the
    state is replicated in the canonical ('jit') layout.
  """
  config = run.config
  init_key, _ = jax.random.split(jax.random.key(config.seed))
  model = model_lib.create_model(config.model, rngs=nnx.Rngs(init_key))
  transferred = None
  if run.saved_step is None and config.init_from:
    # A fresh run that starts from another run's weights (e.g. a softmax
    # model's weights in a FAVOR+ model): only the parameters move. Done
    # before any file is written, so a failure leaves nothing behind.
    transferred = transfer.load_pretrained(model, config.init_from)
  tx, _ = optim.make_optimizer(config)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split(steps.TrainState(model, optimizer))
  state = jax.device_put(state, parallelism.replicated)
  del model, optimizer  # The arrays live in `state` from here on.

  train_iter = iter(run.datasets.train_loader())
  ckpts = workdir_lib.Checkpoints.of_run(run.workdir, config)
  # The newest checkpoint that restores; unreadable newer ones are set
  # aside with one warning each; none readable is an error.
  start_step, restored = ckpts.restore_latest(
    workdir_lib.abstract(state), train_iter
  )
  if start_step:
    state = restored
    _notice_schedule_change(run, start_step)
  del restored
  if jax.process_index() == 0:
    workdir_lib.write_json(
      workdir_lib.config_path(run.workdir), config.to_dict()
    )
  verb = f'Resuming at step {start_step}:' if start_step else 'Training'
  run.log(
    f'{verb} {metrics_lib.describe_run(config, state)}; workdir {run.workdir}'
  )
  if transferred is not None:
    run.log(
      f'Loaded {transferred["num_params"]} parameters from step '
      f'{transferred["source_step"]} of {config.init_from}'
    )
  return graphdef, state, ckpts, train_iter, start_step


def _notice_schedule_change(run: _Run, start_step: int) -> None:
  """Says so when a changed run length makes the learning rate jump."""
  saved, config = run.saved_config, run.config
  before = saved.get('num_train_steps') if saved else None
  if before in (None, config.num_train_steps):
    return
  if not optim.schedule_uses_length(config.schedule):
    return
  _, old = optim.make_optimizer(ml_collections.ConfigDict(saved))
  _, new = optim.make_optimizer(config)
  before_lr, after_lr = float(old(start_step)), float(new(start_step))
  if math.isclose(before_lr, after_lr, rel_tol=1e-6):
    return  # Still in the warmup both ways: no jump to speak of.
  run.log(
    f'Notice: num_train_steps changed from {before} to '
    f'{config.num_train_steps}, so the {config.schedule} schedule is '
    f'recomputed: the learning rate at step {start_step} goes from '
    f'{before_lr:.3g} to {after_lr:.3g}.'
  )


# ---------------------------------------------------------------------------
# 3. The loop.


@dataclasses.dataclass
class _LoopEnd:
  step: int
  state: Any  # Canonical layout.
  train_summary: dict
  validation: dict | None
  preempted: bool = False


def _train(
  run, parallelism, graphdef, state, ckpts, train_iter, start_step, writer
) -> _LoopEnd:
  """Trains from `start_step` to num_train_steps (or to a SIGTERM)."""
  config = run.config
  _, dropout_key = jax.random.split(jax.random.key(config.seed))
  _, schedule = optim.make_optimizer(config)
  keys = run.task.batch_keys

  def evaluate(state, split, max_batches):
    return _evaluate(run, parallelism, graphdef, state, split, max_batches)

  validation = ckpts.metrics(start_step) if start_step else None
  if config.init_from and not start_step:
    # The curve of a transferred model starts right after the swap.
    validation = evaluate(state, 'validation', config.eval_max_batches)
    writer.write(0, 'validation', validation)
    run.log(metrics_lib.format_line(0, 'validation', validation))

  train_step = parallelism.train_step(
    graphdef,
    steps.StepOptions(
      task=run.task,
      grad_accum_steps=config.grad_accum_steps,
      skip_nonfinite=config.skip_nonfinite_steps,
    ),
  )
  # From here on the state is in the layout of the parallel mode.
  state = parallelism.put_state(state)
  step, train_summary = start_step, {}
  window = []  # Host metrics of the steps since the last log line.
  skipped = []  # Steps skipped for non-finite gradients since then.
  pending = []  # (step, device metrics) not yet fetched from the device.
  timer = metrics_lib.Timer()
  with (
    parallel_lib.PreemptionNotice() as preemption,
    _progress_bar(config.num_train_steps, start_step) as bar,
  ):
    while step < config.num_train_steps:
      batch = {k: v for k, v in next(train_iter).items() if k in keys}
      state, step_metrics = train_step(
        state, parallelism.train_batch(batch), dropout_key
      )
      step += 1
      bar.update(1)
      pending.append((step, step_metrics))
      if step == start_step + 1:
        jax.block_until_ready(step_metrics)
        run.log(f'First step (compilation included) took {timer.lap():.1f}s')
        timer.reset()
      timer.count(run.tokens_per_step)
      # A preemption notice (SIGTERM) ends the run after a checkpoint of
      # this step, with the metrics up to it logged.
      stop = preemption.reached(step)
      log_now, eval_now, save_now = _due(config, step, stop)
      if not (log_now or save_now):
        continue
      # Fetching syncs with the device; do it only when something needs
      # the values, so steps otherwise dispatch asynchronously.
      records, skipped_now = _fetch_and_check(pending, ckpts)
      window += records
      skipped += skipped_now
      pending = []
      for bad in skipped_now:
        run.log(f'step {bad}: non-finite gradients; update skipped')
      if log_now:
        train_summary = _train_summary(
          run, window, skipped, float(schedule(step - 1)), timer.rate()
        )
        writer.write(step, 'train', train_summary)
        if 'loss' in train_summary:
          bar.set_postfix(
            loss=f'{train_summary["loss"]:.3f}',
            tok_s=f'{train_summary["tokens_per_sec"]:.0f}',
          )
        run.log(metrics_lib.format_line(step, 'train', train_summary))
        window, skipped = [], []
        timer.reset()
      if not save_now:
        continue
      canonical = parallelism.canonical(state)
      if eval_now:
        validation = evaluate(canonical, 'validation', config.eval_max_batches)
        writer.write(step, 'validation', validation)
        run.log(metrics_lib.format_line(step, 'validation', validation))
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
        run.log(
          f'Preemption notice (SIGTERM) at step {step}: saved checkpoint '
          f'{os.path.join(ckpts.directory, str(step))}; run the same '
          'command again to resume.'
        )
        return _LoopEnd(step, canonical, train_summary, validation, True)
  state = parallelism.canonical(state)
  if validation is None:  # Only when resuming a checkpoint saved unevaluated.
    validation = evaluate(state, 'validation', config.eval_max_batches)
    writer.write(step, 'validation', validation)
  return _LoopEnd(step, state, train_summary, validation)


def _progress_bar(total: int, initial: int) -> tqdm.tqdm:
  """The console progress bar, on process 0 only."""
  return tqdm.tqdm(
    total=total,
    initial=initial,
    unit='step',
    disable=None if jax.process_index() == 0 else True,
    dynamic_ncols=True,
  )


def _due(config, step: int, stop: bool) -> tuple[bool, bool, bool]:
  """Whether to log, evaluate and save a checkpoint after `step`."""
  last = step == config.num_train_steps
  log_now = step % config.log_every_steps == 0 or last or stop
  eval_now = step % config.eval_every_steps == 0 or last
  every = config.checkpoint_every_steps
  save_now = eval_now or stop or bool(every and step % every == 0)
  return log_now, eval_now, save_now


def _train_summary(
  run, window: list[dict], skipped: list[int], lr: float, tokens_per_sec
) -> dict[str, float]:
  """The train metrics of the steps since the last log line."""
  config = run.config
  summary = metrics_lib.summarize(window, run.reported) if window else {}
  if config.skip_nonfinite_steps:
    summary['skipped_steps'] = len(skipped)
  summary['learning_rate'] = lr
  summary['tokens_per_sec'] = tokens_per_sec
  summary['steps_per_sec'] = tokens_per_sec / run.tokens_per_step
  return summary


def _evaluate(run, parallelism, graphdef, state, split, max_batches):
  """Metrics of `split` (None when the data has no such split)."""
  if split not in run.datasets.eval_splits:
    return None
  keys = run.task.batch_keys
  batches = (
    parallelism.global_batch({k: batch[k] for k in keys})
    for batch in run.datasets.eval_batches(split, max_batches)
  )
  return steps.evaluate(graphdef, state, run.task, batches, run.reported)


def _fetch_and_check(
  pending: list, ckpts: workdir_lib.Checkpoints
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


# ---------------------------------------------------------------------------
# 4. Finish.


def _finish(
  run, parallelism, graphdef, loop: _LoopEnd, ckpts, writer
) -> dict[str, Any]:
  """Tests the best checkpoint, samples from an LM, writes results.json."""
  config = run.config
  ckpts.wait()
  best_step = ckpts.best_step()
  best_state = loop.state
  if best_step is not None and best_step != loop.step:
    best_state = ckpts.restore(best_step, workdir_lib.abstract(loop.state))
  test = _evaluate(
    run, parallelism, graphdef, best_state, 'test', config.test_max_batches
  )
  if test is not None:
    writer.write(loop.step, 'test', test)
  sample = ''
  if config.sample_num_tokens > 0 and run.task.name == 'lm':
    sample = generate_lib.sample_text(
      nnx.merge(graphdef, best_state).model,
      run.datasets,
      config.sample_prompt,
      num_tokens=config.sample_num_tokens,
      temperature=config.sample_temperature,
      context=config.data.seq_len,
      seed=config.seed,
    )
    writer.write_text(loop.step, 'sample', sample)

  result = {'step': loop.step, 'best_step': best_step}
  result.update({f'train/{k}': v for k, v in loop.train_summary.items()})
  result.update({f'validation/{k}': v for k, v in loop.validation.items()})
  result.update({f'test/{k}': v for k, v in (test or {}).items()})
  result['checkpoint_dir'] = ckpts.directory
  result['sample'] = sample
  result['peak_memory_bytes'] = metrics_lib.peak_memory_bytes()
  result['wall_time_sec'] = time.perf_counter() - run.start_time
  if jax.process_index() == 0:
    workdir_lib.write_json(workdir_lib.results_path(run.workdir), result)
  run.log(metrics_lib.final_report(result, run.reported))
  return result
