r"""Training throughput of the shared transformer, one attention variant each.

Times the trainer's own jitted `train_step` (forward, backward, AdamW update,
FAVOR+ redraw) on random byte batches, for every requested variant with
everything else fixed by the config, and writes JSON and a markdown table.

  python scripts/benchmark_training.py \
    --config=configs/lm_shakespeare.py --seq_len=2048 --batch_size=4 \
    --variants=softmax,favor,local,sparse \
    --json=docs/benchmarks/training_cpu.json \
    --markdown=docs/benchmarks/training_cpu.md

LRA Table 2's setting (byte-level text classification, lengths 1K-4K,
steps/s beside LRA's and both ratios to softmax):

  python scripts/benchmark_training.py \
    --config=configs/lra_text.py:lite --seq_len=1024,2048,3072,4096 \
    --batch_size=2 --variants=all \
    --json=docs/benchmarks/lra_table2_cpu.json \
    --markdown=docs/benchmarks/lra_table2_cpu.md

Tokens per second = batch_size * seq_len / median step time (the median of
`--repeats` steps after `--warmup` untimed ones; compilation is reported
separately). --variants=all times every registered variant; --seq_len takes
a comma-separated list. The model head decides the batches: next-token for
'lm', padded and masked classification for 'classifier'.
"""

import importlib.util
import sys

from performer.bench import flags, training_throughput


def _load_config(spec: str):
  """Loads `configs/X.py[:arg]` the way scripts/train.py does."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def main(argv: list[str] | None = None) -> list[dict]:
  parser = flags.new_parser(__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/lm_shakespeare.py')
  parser.add_argument('--variants', default='softmax,favor,local,sparse')
  parser.add_argument('--seq_len', default='2048')
  parser.add_argument('--batch_size', type=int, default=4)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--json', default='')
  parser.add_argument('--markdown', default='')
  args, (variants, seq_lens) = flags.parse(
    parser, argv, training_throughput.validate
  )
  return training_throughput.run(
    _load_config(args.config),
    variants=variants,
    seq_lens=seq_lens,
    batch_size=args.batch_size,
    warmup=args.warmup,
    repeats=args.repeats,
    json_path=args.json,
    markdown_path=args.markdown,
  )


if __name__ == '__main__':
  main(sys.argv[1:])
