"""Training throughput: the trainer's own step timed for each variant.

`measure` times `performer.steps.train_step` (forward, backward, AdamW
update, FAVOR+ redraw) on random byte batches for one attention variant and
length, everything else fixed by the config: a language model ('lm' head)
on next-token batches, a classifier (the LRA configs) on padded, masked
classification batches. `run` does every (length, variant), prints a line
each and the markdown table, and writes the JSON and the table
(scripts/benchmark_training.py is the command line). Beside each steps/s
the table puts LRA Table 2's (byte-level text on a 4x4 TPU v3, batch 32)
and both ratios to softmax's.
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

# LRA Table 2 (Tay et al., ICLR 2021): training steps/s on byte-level text at
# lengths 1K-4K, batch 32, 4x4 TPU v3. Transformer = softmax, Performer =
# favor, Local Att. = local, Linear = linear; the paper has no Longformer or
# Sparse Transformer row.
LRA_TABLE2_STEPS_PER_SEC = {
  'softmax': {1024: 8.1, 2048: 4.9, 3072: 2.3, 4096: 1.4},
  'favor': {1024: 9.5, 2048: 9.4, 3072: 8.7, 4096: 8.0},
  'local': {1024: 9.2, 2048: 8.4, 3072: 7.4, 4096: 7.4},
  'linear': {1024: 9.1, 2048: 9.3, 3072: 8.6, 4096: 7.8},
  'linformer': {1024: 9.3, 2048: 9.1, 3072: 8.5, 4096: 7.7},
  'reformer': {1024: 4.4, 2048: 2.2, 3072: 1.5, 4096: 1.1},
  'sinkhorn': {1024: 9.1, 2048: 7.9, 3072: 6.6, 4096: 5.3},
  'synthesizer': {1024: 8.7, 2048: 5.7, 3072: 6.6, 4096: 1.9},
}
HEADS = ('lm', 'classifier')


def lra_table2(variant: str, seq_len: int) -> float | None:
  """LRA Table 2's steps/s for `variant` at `seq_len`, if it has one."""
  return LRA_TABLE2_STEPS_PER_SEC.get(variant, {}).get(seq_len)


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
  """Times the train step of the config's model with attention `variant`.

  Raises:
    ValueError: for a model head other than 'lm' and 'classifier'.
  """
  config = config.copy_and_resolve_references()
  head = config.model.head
  if head not in HEADS:
    raise ValueError(
      f'the model head {head!r} has no benchmark batches; valid: {HEADS}'
    )
  with config.unlocked():
    config.model.attention = variant
    config.model.max_len = max(config.model.max_len, seq_len)
    config.batch_size = batch_size
    # 0 means "from the data" in the trainer; the random batches are bytes
    # (for classifiers LRA's byte tokenizer: shifted by one, 0 = padding).
    config.model.vocab_size = config.model.vocab_size or (
      256 if head == 'lm' else 257
    )
  graphdef, state = train_state(config)
  if head == 'lm':
    task = 'lm'
    batch = lm_batch(batch_size, seq_len, config.model.vocab_size)
  else:
    task = 'classification'
    batch = classification_batch(
      batch_size, seq_len, config.model.vocab_size, config.model.num_classes
    )
  options = steps.StepOptions(task=tasks.TASKS[task])
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
    'task': task,
    'seq_len': seq_len,
    'batch_size': batch_size,
    'num_layers': config.model.num_layers,
    'emb_dim': config.model.emb_dim,
    'num_heads': config.model.num_heads,
    'attention_options': config.model.attention_options[variant].to_dict(),
    'step_s': step_s,
    'steps_per_sec': 1.0 / step_s,
    'tokens_per_sec': batch_size * seq_len / step_s,
    'lra_table2_steps_per_sec': lra_table2(variant, seq_len),
    'compile_and_first_step_s': first_s,
    'loss': float(step_metrics['loss']),
    **timing.device_info(),
  }


def validate(args: argparse.Namespace) -> tuple[list[str], list[int]]:
  """Checks the flags of scripts/benchmark_training.py.

  Returns:
    The variants ('all' = every registered one) and the lengths.

  Raises:
    ValueError: naming the bad flag and value (and the valid variants).
  """
  for flag in ('batch_size', 'repeats'):
    flags.positive_int(getattr(args, flag), f'--{flag}')
  flags.non_negative_int(args.warmup, '--warmup')
  lengths = [
    flags.positive_int(x, '--seq_len')
    for x in flags.split_list(str(args.seq_len), '--seq_len')
  ]
  variants = flags.split_list(args.variants, '--variants')
  if variants == ['all']:
    variants = attention.names()
  variants = flags.check_choices(
    variants, attention.names(), '--variants', 'attention variant'
  )
  return variants, lengths


def run(
  config,
  *,
  variants: Sequence[str],
  seq_lens: Sequence[int],
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
    seq_lens: tokens per sequence, one table section each.
    batch_size: sequences per step.
    warmup: untimed steps after the first (compiling) one.
    repeats: timed steps (the median is reported).
    json_path: where to write the records; '' for nowhere.
    markdown_path: where to write the table; '' for nowhere.

  Returns:
    One record per (length, variant) (see `measure`).
  """
  records = []
  for seq_len in seq_lens:
    for variant in variants:
      record = measure(config, variant, seq_len, batch_size, warmup, repeats)
      print(
        f'L={seq_len} {variant:12s} {record["tokens_per_sec"]:10.0f} tokens/s'
        f' ({record["step_s"] * 1e3:.0f} ms/step, first step incl. compile '
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
  """Per length and variant: tokens/s, steps/s, ratios to softmax, LRA's.

  'vs softmax' is our steps/s over softmax's at the same length (same run);
  'LRA Table 2' is LRA's steps/s and, in brackets, its ratio to LRA's
  Transformer at that length ('-' where the paper has no number).
  """
  softmax = {
    r['seq_len']: r['steps_per_sec']
    for r in records
    if r['variant'] == 'softmax'
  }
  lines = [
    '| L | variant | tokens/s | steps/s | ms/step | vs softmax | LRA Table 2 '
    'steps/s (vs Transformer) | compile+first step (s) |',
    '|---|---|---|---|---|---|---|---|',
  ]
  for r in records:
    length = r['seq_len']
    base = softmax.get(length)
    ratio = f'{r["steps_per_sec"] / base:.2f}x' if base else 'n/a'
    theirs, theirs_base = (
      lra_table2(r['variant'], length),
      lra_table2('softmax', length),
    )
    lra = (
      '-' if theirs is None else f'{theirs:.1f} ({theirs / theirs_base:.2f}x)'
    )
    lines.append(
      f'| {length} | {r["variant"]} | {r["tokens_per_sec"]:.0f} | '
      f'{r["steps_per_sec"]:.3g} | {r["step_s"] * 1e3:.0f} | {ratio} | '
      f'{lra} | {r["compile_and_first_step_s"]:.1f} |'
    )
  return '\n'.join(lines) + '\n'
