"""Training throughput: the trainer's own step timed for each variant.

`measure` times `performer.steps.train_step` (forward, backward, AdamW
update, FAVOR+ redraw) on random byte batches for one attention variant,
everything else fixed by the config; `run` does every variant, prints a
line each and the markdown table, and writes the JSON and the table
(scripts/benchmark_training.py is the command line).
"""

import argparse
import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from performer import attention, optim, steps, tasks, workdir
from performer import model as model_lib
from performer.bench import flags, report, timing


def train_state(config) -> tuple[nnx.GraphDef, nnx.State]:
  """The (graphdef, state) of a fresh `steps.TrainState` for `config`.

  Args:
    config: a resolved experiment config (its model and optimizer).
  """
  model = model_lib.create_model(config.model, rngs=nnx.Rngs(config.seed))
  tx, _ = optim.make_optimizer(config)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  return nnx.split(steps.TrainState(model, optimizer))


def lm_batch(batch_size: int, seq_len: int, vocab_size: int) -> dict:
  """A batch of random tokens for the 'lm' task, every position weighted."""
  tokens = jax.random.randint(
    jax.random.key(1), (batch_size, seq_len + 1), 0, vocab_size
  )
  return {
    'inputs': tokens[:, :-1].astype(jnp.int32),
    'targets': tokens[:, 1:].astype(jnp.int32),
    'weights': jnp.ones((batch_size, seq_len), jnp.float32),
  }


def classification_batch(
  batch_size: int, seq_len: int, vocab_size: int, num_classes: int
) -> dict:
  """A batch of random tokens for the 'classification' task.

  Each example has a random length in [seq_len / 2, seq_len], padded with
  id 0 after it and masked, as the LRA loaders give them.
  """
  keys = jax.random.split(jax.random.key(1), 3)
  lengths_B = jax.random.randint(
    keys[0], (batch_size,), max(seq_len // 2, 1), seq_len + 1
  )
  mask_BL = jnp.arange(seq_len)[None, :] < lengths_B[:, None]
  tokens_BL = jax.random.randint(keys[1], (batch_size, seq_len), 1, vocab_size)
  return {
    'inputs': jnp.where(mask_BL, tokens_BL, 0).astype(jnp.int32),
    'mask': mask_BL,
    'targets': jax.random.randint(keys[2], (batch_size,), 0, num_classes),
    'weights': jnp.ones((batch_size,), jnp.float32),
  }


def measure(
  config, variant: str, seq_len: int, batch_size: int, warmup: int, repeats: int
) -> dict:
  """Times the train step of the config's model with attention `variant`."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.attention = variant
    config.model.max_len = max(config.model.max_len, seq_len)
    config.batch_size = batch_size
    # 0 means "from the data" in the trainer; the random batches are bytes.
    config.model.vocab_size = config.model.vocab_size or 256
  graphdef, state = train_state(config)
  options = steps.StepOptions(task=tasks.TASKS['lm'])
  batch = lm_batch(batch_size, seq_len, config.model.vocab_size)
  key = jax.random.key(2)
  start = time.perf_counter()
  state, step_metrics = steps.train_step(graphdef, state, batch, key, options)
  jax.block_until_ready(step_metrics)
  first_s = time.perf_counter() - start
  for _ in range(warmup):
    state, step_metrics = steps.train_step(graphdef, state, batch, key, options)
  jax.block_until_ready(step_metrics)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    # The state is donated, so each step feeds the next, as in training.
    state, step_metrics = steps.train_step(graphdef, state, batch, key, options)
    jax.block_until_ready(step_metrics)
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  return {
    'variant': variant,
    'seq_len': seq_len,
    'batch_size': batch_size,
    'num_layers': config.model.num_layers,
    'emb_dim': config.model.emb_dim,
    'num_heads': config.model.num_heads,
    'attention_options': config.model.attention_options[variant].to_dict(),
    'step_s': step_s,
    'tokens_per_sec': batch_size * seq_len / step_s,
    'compile_and_first_step_s': first_s,
    'loss': float(step_metrics['loss']),
    **timing.device_info(),
  }


def validate(args: argparse.Namespace) -> list[str]:
  """Checks the flags of scripts/benchmark_training.py; returns the variants.

  Raises:
    ValueError: naming the bad flag and value (and the valid variants).
  """
  for flag in ('seq_len', 'batch_size', 'repeats'):
    flags.positive_int(getattr(args, flag), f'--{flag}')
  flags.non_negative_int(args.warmup, '--warmup')
  return flags.check_choices(
    flags.split_list(args.variants, '--variants'),
    attention.names(),
    '--variants',
    'attention variant',
  )


def run(
  config,
  *,
  variants: Sequence[str],
  seq_len: int,
  batch_size: int,
  warmup: int,
  repeats: int,
  json_path: str = '',
  markdown_path: str = '',
) -> list[dict]:
  """Measures every variant, prints a line each and the table, writes them.

  Args:
    config: the experiment config whose model and optimizer are timed.
    variants: registered attention names, in the order of the table.
    seq_len: tokens per sequence.
    batch_size: sequences per step.
    warmup: untimed steps after the first (compiling) one.
    repeats: timed steps (the median is reported).
    json_path: where to write the records; '' for nowhere.
    markdown_path: where to write the table; '' for nowhere.

  Returns:
    One record per variant (see `measure`).
  """
  records = []
  for variant in variants:
    record = measure(config, variant, seq_len, batch_size, warmup, repeats)
    print(
      f'{variant:10s} {record["tokens_per_sec"]:10.0f} tokens/s '
      f'({record["step_s"] * 1e3:.0f} ms/step, first step incl. compile '
      f'{record["compile_and_first_step_s"]:.1f} s)',
      flush=True,
    )
    records.append(record)
  table = markdown(records)
  print(table)
  if json_path:
    workdir.write_json(json_path, records)
  if markdown_path:
    report.write_text(markdown_path, table)
  return records


def markdown(records: Sequence[dict]) -> str:
  """Tokens/s, ms/step and the ratio to softmax's tokens/s, per variant."""
  base = {r['variant']: r['tokens_per_sec'] for r in records}.get('softmax')
  lines = [
    '| variant | tokens/s | ms/step | vs softmax | compile+first step (s) |',
    '|---|---|---|---|---|',
  ]
  for r in records:
    ratio = f'{r["tokens_per_sec"] / base:.2f}x' if base else 'n/a'
    lines.append(
      f'| {r["variant"]} | {r["tokens_per_sec"]:.0f} | '
      f'{r["step_s"] * 1e3:.0f} | {ratio} | '
      f'{r["compile_and_first_step_s"]:.1f} |'
    )
  return '\n'.join(lines) + '\n'
