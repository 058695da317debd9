r"""Training throughput of the shared transformer, one attention variant each.

Times the trainer's own jitted `train_step` (forward, backward, AdamW update,
FAVOR+ redraw) on random byte batches, for every requested variant with
everything else fixed by the config, and writes JSON and a markdown table.

  python scripts/benchmark_training.py \
    --config=configs/lm_shakespeare.py --seq_len=2048 --batch_size=4 \
    --variants=softmax,favor,local,sparse \
    --json=docs/benchmarks/training_cpu.json \
    --markdown=docs/benchmarks/training_cpu.md

Tokens per second = batch_size * seq_len / median step time (the median of
`--repeats` steps after `--warmup` untimed ones; compilation is reported
separately).
"""

import importlib.util
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from performer import attention, optim, steps, tasks, workdir
from performer import model as model_lib
from performer.bench import flags, report, timing


def _load_config(spec: str):
  """Loads `configs/X.py[:arg]` the way scripts/train.py does."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


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
  model = model_lib.create_model(config.model, rngs=nnx.Rngs(0))
  tx, _ = optim.make_optimizer(config)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split(steps.TrainState(model, optimizer))
  options = steps.StepOptions(task=tasks.TASKS['lm'])
  tokens = jax.random.randint(
    jax.random.key(1), (batch_size, seq_len + 1), 0, config.model.vocab_size
  )
  batch = {
    'inputs': tokens[:, :-1].astype(jnp.int32),
    'targets': tokens[:, 1:].astype(jnp.int32),
    'weights': jnp.ones((batch_size, seq_len), jnp.float32),
  }
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


def _variants(args) -> list[str]:
  """Checks the flags; returns the variants to time."""
  for flag in ('seq_len', 'batch_size', 'repeats'):
    flags.positive_int(getattr(args, flag), f'--{flag}')
  flags.non_negative_int(args.warmup, '--warmup')
  return flags.check_choices(
    flags.split_list(args.variants, '--variants'),
    attention.names(),
    '--variants',
    'attention variant',
  )


def main(argv: list[str] | None = None) -> list[dict]:
  parser = flags.new_parser(__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/lm_shakespeare.py')
  parser.add_argument('--variants', default='softmax,favor,local,sparse')
  parser.add_argument('--seq_len', type=int, default=2048)
  parser.add_argument('--batch_size', type=int, default=4)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--json', default='')
  parser.add_argument('--markdown', default='')
  args, variants = flags.parse(parser, argv, _variants)
  config = _load_config(args.config)
  records = []
  for variant in variants:
    record = measure(
      config,
      variant,
      args.seq_len,
      args.batch_size,
      args.warmup,
      args.repeats,
    )
    print(
      f'{variant:10s} {record["tokens_per_sec"]:10.0f} tokens/s '
      f'({record["step_s"] * 1e3:.0f} ms/step, first step incl. compile '
      f'{record["compile_and_first_step_s"]:.1f} s)',
      flush=True,
    )
    records.append(record)
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
  table = '\n'.join(lines) + '\n'
  print(table)
  if args.json:
    workdir.write_json(args.json, records)
  if args.markdown:
    report.write_text(args.markdown, table)
  return records


if __name__ == '__main__':
  main(sys.argv[1:])
