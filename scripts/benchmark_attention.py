r"""Benchmarks attention variants: time and peak memory versus length.

For each (variant, causal, length) the script builds the module with
`attention.create`, jits a forward function and a forward+backward function,
compiles both ahead of time, reads XLA's memory estimate, skips the config
when the estimate exceeds the budget, and otherwise times the compiled
executables. Every config becomes one JSON record, whatever happened to it
(`status` is 'ok', 'skipped', 'oom', 'error' or 'partial'); one bad config
never stops the run.

What is measured:
  fwd: out = attn(q, k, v), q, k, v of shape [batch, length, heads,
    head_dim] in --dtype, no mask.
  fwd_bwd: the gradients of loss = sum(out**2) (in float32) with respect to
    q, k and v: one forward and one backward pass, as in training. A squared
    loss gives a data-dependent output gradient, so XLA cannot simplify the
    backward pass away.
  *_ms: the median wall time of --repeats calls after --warmup untimed
    calls, each waited on with jax.block_until_ready. Compilation is timed
    apart (*_compile_s: tracing, lowering and compiling); compile_s is the
    sum over the modes run.
  *_peak_bytes: XLA's static estimate for the compiled program,
      argument_size + output_size + temp_size - alias_size
    from `compiled.memory_analysis()` (performer/bench/timing.py explains
    why; the raw fields are kept in *_memory). peak_bytes is the fwd_bwd
    one.
    --max_peak_gib is checked against this estimate before running; its
    default is the accelerator's allocator limit, or 80% of RAM on a CPU.

FLOPs (--flops): the formulas of performer/bench/flops.py (favor_chunked
for causal favor with chunks, favor_bidirectional for the rest of favor and
favor_scan, softmax_dense for softmax; fwd_bwd is 3x the forward). The
record names its formula (flops_model) and its feature dimension M
(feature_dim). Achieved GFLOP/s is the count over the median time; with
--matmul_peak it is also given as a fraction of the rate of a large dense
matmul (--matmul_size, in --dtype) on the same device. XLA's own count is
kept as *_xla_flops for comparison. Variants without a formula get null
FLOP fields.

Outputs: a JSON list of records (--json), a PNG with, per causal mode, time
versus length for each mode and peak memory versus length, log-log, one line
per variant (--png), and a markdown table printed to stdout (--markdown
also writes it to a file).

CPU targets (B=1, H=8, D=64, M=256, float32; the same command runs on a
GPU with another --json/--png/--markdown):

  python scripts/benchmark_attention.py \
    --variants softmax,favor,favor_scan,local,sparse \
    --lengths 1024,2048,4096,8192,16384,32768,65536 \
    --max_length softmax=8192 --causal both --mode fwd,fwd_bwd \
    --batch 1 --heads 8 --head_dim 64 --num_features 256 \
    --window 256 --block_size 64 --dtype float32 --repeats 3 --warmup 1 \
    --flops --matmul_peak \
    --json docs/benchmarks/attention_cpu.json \
    --png docs/benchmarks/attention_cpu.png \
    --markdown docs/benchmarks/attention_cpu.md
"""

import argparse
from collections.abc import Sequence
from typing import Any

from performer.bench import attention_scaling, flags, grid
from performer.model import DTYPES


def build_parser() -> argparse.ArgumentParser:
  """The command-line interface."""
  p = flags.new_parser(__doc__)
  p.add_argument(
    '--variants',
    default='all',
    help='comma-separated registered variants, or "all" (default).',
  )
  p.add_argument(
    '--lengths',
    default='1024,2048,4096,8192',
    help='comma-separated sequence lengths.',
  )
  p.add_argument('--causal', default='both', choices=('both', 'true', 'false'))
  p.add_argument(
    '--mode', default='fwd,fwd_bwd', help='comma-separated: fwd, fwd_bwd.'
  )
  p.add_argument('--batch', type=int, default=1)
  p.add_argument('--heads', type=int, default=8)
  p.add_argument('--head_dim', type=int, default=64)
  p.add_argument(
    '--num_features',
    type=int,
    default=256,
    help='random features, for variants with a num_features option.',
  )
  p.add_argument(
    '--window', type=int, default=256, help='for variants with a window.'
  )
  p.add_argument(
    '--block_size',
    type=int,
    default=64,
    help='for variants with a block_size option.',
  )
  p.add_argument('--dtype', default='float32', choices=sorted(DTYPES))
  flags.add_timing_flags(p, repeats=5)
  p.add_argument(
    '--option',
    action='append',
    default=[],
    metavar='VARIANT.KEY=VALUE',
    help='a variant option, e.g. favor.chunk_size=128 (repeatable; values '
    'are Python literals, else strings).',
  )
  p.add_argument(
    '--max_length',
    action='append',
    default=[],
    metavar='VARIANT=N',
    help='skip lengths above N for VARIANT, e.g. softmax=8192 (repeatable '
    'or comma-separated).',
  )
  flags.add_memory_budget_flag(p)
  p.add_argument(
    '--flops',
    action='store_true',
    help='report achieved GFLOP/s for variants with a FLOP formula.',
  )
  p.add_argument(
    '--matmul_peak',
    action='store_true',
    help='measure a large dense matmul to report FLOP/s as a fraction.',
  )
  p.add_argument('--matmul_size', type=int, default=4096)
  flags.add_output_flags(p, ('json', 'png', 'markdown'))
  return p


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Parses flags, runs the benchmark, writes the outputs.

  Args:
    argv: command-line arguments without the program name; sys.argv[1:]
      when None.

  Returns:
    The records.
  """
  return grid.run_benchmark(
    build_parser(),
    argv,
    make_plan=attention_scaling.make_plan,
    execute=attention_scaling.execute,
    markdown=attention_scaling.markdown,
    plot=attention_scaling.plot,
  )


if __name__ == '__main__':
  main()
