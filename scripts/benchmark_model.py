r"""Benchmarks the whole model: forward+backward time and memory vs length.

The Performer paper's Fig. 3: a bidirectional transformer on byte tokens
(vocabulary 256), one training-style pass (forward, cross-entropy loss,
gradients of every parameter), timed for sequence lengths in powers of two
until the memory runs out, for several attention variants and an upper
bound where attention is replaced by the identity.

Settings (--settings):
  regular: 6 layers, 8 heads, d_ff 2048, d 512 (the paper's).
  small: 1 head, d_ff 64, d 64 (the paper's), and 6 layers: the paper does
    not give the small model's depth, so it keeps the regular one's.
  --num_layers overrides the depth of both.

Variants (--variants):
  softmax: exact attention (`softmax`, implementation 'auto').
  favor_softmax: FAVOR+ with positive softmax features (`favor`,
    kernel='softmax').
  favor_relu: FAVOR+ with the generalized ReLU kernel (`favor`,
    kernel='relu'), what the paper calls "Performer".
  local: block-local attention (`local`, --window).
  sparse: the Sparse Transformer's fixed pattern (`sparse`,
    --block_size).
  identity: the upper bound "X": each block's attention returns its values
    unchanged, so the block keeps its query, key, value and output
    projections and its MLP, and only the attention computation is gone.
FAVOR+ uses --num_features random features (orthogonal, the registry's
defaults otherwise). --remat=off,on runs each variant without and with
per-block rematerialization (model.remat: the backward pass recomputes
each block from its input), rows '<variant>+remat'.

The identity is a benchmark-only module swapped into the built model
(`IdentityAttention`), not a registered variant: it is not attention (it
mixes nothing across positions), so offering it to the trainer and every
config through the registry would invite meaningless training runs, and
registering it would mean changing the attention package for a measurement
aid.

What is measured, per (setting, variant, length), batch --batch:
  fwd_bwd_ms: median wall time of --repeats calls (after --warmup) of the
    compiled function params -> value_and_grad(loss)(params), loss the
    mean cross-entropy of the logits against the input tokens themselves
    (the model is bidirectional, so there is no next-token target; the loss
    only has to depend on every output, its value is irrelevant).
  peak_bytes: XLA's static estimate for the compiled program (argument +
    output + temp - alias; `performer/bench/timing.py`), checked against
    --max_peak_gib before running. Lengths are tried in increasing order;
    after the first length that is over the budget (status 'skipped') or
    fails with out of memory ('oom'), the longer lengths of that (setting,
    variant) are recorded as 'skipped' without compiling, which is the
    paper's "until out of memory". --max_length caps the lengths, for all
    settings or per setting (e.g. regular=1024,small=4096).

Outputs: a JSON list of records (--json, rewritten after every config),
a PNG of time and peak memory versus length, one row per setting and one
line per variant (--png), and a markdown table (stdout, --markdown).

CPU run of docs/benchmarks/model_cpu.* (8 minutes on 2 shared cores):

  python scripts/benchmark_model.py --settings small,regular \
    --min_length 512 --max_length small=8192,regular=1024 \
    --repeats 3 --warmup 1 --max_peak_gib 4 \
    --json docs/benchmarks/model_cpu.json \
    --png docs/benchmarks/model_cpu.png \
    --markdown docs/benchmarks/model_cpu.md

On a GPU, to the paper's lengths (until the memory runs out), leave
--max_length at its default 65536 and --max_peak_gib unset.

The longest sequence each variant trains at within 4 GiB, with and
without rematerialization (docs/benchmarks/remat_cpu.*):

  python scripts/benchmark_model.py --settings small \
    --variants softmax,favor_softmax,local,sparse --remat off,on \
    --min_length 1024 --max_length 131072 --repeats 1 --warmup 0 \
    --max_peak_gib 4 --json docs/benchmarks/remat_cpu.json \
    --png docs/benchmarks/remat_cpu.png --markdown docs/benchmarks/remat_cpu.md
"""

import argparse
from collections.abc import Sequence
from typing import Any

from performer.bench import flags, grid, model_scaling


def build_parser() -> argparse.ArgumentParser:
  """The command-line interface."""
  p = flags.new_parser(__doc__)
  p.add_argument(
    '--settings',
    default='regular,small',
    help=f'comma-separated, from {list(model_scaling.SETTINGS)}.',
  )
  p.add_argument(
    '--variants',
    default=','.join(model_scaling.VARIANTS),
    help=f'comma-separated, from {list(model_scaling.VARIANTS)}.',
  )
  p.add_argument(
    '--min_length', type=int, default=512, help='first length (power of 2).'
  )
  p.add_argument(
    '--max_length',
    default='65536',
    help='last length tried (lengths double from --min_length): N for '
    'every setting, or SETTING=N,... per setting (unnamed ones: 65536).',
  )
  p.add_argument('--batch', type=int, default=1)
  p.add_argument(
    '--num_layers',
    type=int,
    default=None,
    help='override the depth of every setting.',
  )
  p.add_argument('--num_features', type=int, default=256, help='FAVOR+ M.')
  p.add_argument('--window', type=int, default=256, help='local window.')
  p.add_argument('--block_size', type=int, default=64, help='sparse block.')
  p.add_argument(
    '--remat',
    default='off',
    help='comma-separated from off,on: per-block rematerialization '
    "(model.remat); 'on' rows are labelled <variant>+remat.",
  )
  flags.add_timing_flags(p, repeats=3)
  flags.add_memory_budget_flag(p)
  flags.add_output_flags(p, ('json', 'png', 'markdown'))
  return p


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Parses flags, runs the benchmark, writes the outputs."""
  return grid.run_benchmark(
    build_parser(),
    argv,
    make_plan=model_scaling.make_plan,
    execute=model_scaling.execute,
    markdown=model_scaling.markdown,
    plot=model_scaling.plot,
  )


if __name__ == '__main__':
  main()
