r"""Approximation error of random-feature attention (Performer paper, Fig. 4).

For each kernel, projection and number of random features M, and for each of
--samples independent draws of inputs and projection, the script computes the
exact and the estimated attention with dense L x L matrices and records the
mean squared errors (`performer.approximation.error_sweep`):

  attention_mse: of the row-normalized attention matrix D^-1 K.
  output_mse: of the attention output D^-1 K V (the paper's Fig. 4 plots
    the error of the output).
  kernel_mse, small_kernel_mse: of the unnormalized kernel matrix K, over
    all entries and over the entries with the smallest exact values (lowest
    --small_quantile), where positive features should beat trigonometric
    ones most clearly.

Kernels: 'softmax' (positive features, FAVOR+), 'softmax_trig' (sin/cos
features), 'favorpp' (FAVOR++) and 'favorsharp' (FAVOR#; both with A and
Psi from the moments of each sample's q and k) are compared with exact
softmax attention, exp(q . k / sqrt(D));
'relu' (the generalized ReLU kernel, the paper's "Performer") with its own
exact kernel, the expectation over Gaussian rows (the arc-cosine kernel; see
`performer.approximation.exact_relu_kernel`).

Inputs. The paper draws "appropriately normalized random matrix input data"
without more detail. We draw q and k with iid N(0, --qk_std^2) entries and
v with N(0, 1) entries, fresh for every sample (the same draws for every
configuration of a sample, so the comparison is paired). The default
--qk_std 1 gives standard normal queries and keys, the plainest reading,
and makes the logits q . k / sqrt(D) unit-variance, so attention is neither
uniform nor one-hot and the kernel values span a wide range: the regime the
paper's claim about small kernel values is about. A smaller --qk_std
flattens attention (all kernel values near 1), a regime where trigonometric
features are competitive; the result depends on this choice.

--qk_std takes several values: one sweep per scale. --trained_workdir adds
the same errors on a trained run's own queries, keys and values (validation
example --trained_index, every layer and head, causal where the model is;
each sample draws new projections and averages over the heads).

Outputs: a JSON object (--json) with the settings, one record per (inputs,
kernel, projection, M) holding every sample's errors and their mean,
standard deviation, 95% confidence interval of the mean and median, and the
paired comparisons (FAVOR++ / FAVOR+, FAVOR# / FAVOR+, FAVOR# / FAVOR++,
orthogonal / iid: geometric mean of the per-sample ratios with its 95%
interval); a PNG (--png) of the mean error versus M with the intervals, a
row per set of inputs, log-log; and both tables on stdout.

Paper setup (13 minutes on 2 CPU cores shared with other jobs):

  python scripts/approximation_error.py \
    --length 4096 --dim 16 --samples 15 \
    --num_features 16,32,64,128,256 \
    --json docs/benchmarks/approximation_error.json \
    --png docs/benchmarks/approximation_error.png
"""

import argparse
from collections.abc import Sequence
from typing import Any

from performer import approximation
from performer.attention import features
from performer.bench import approximation_error, flags


def build_parser() -> argparse.ArgumentParser:
  """The command-line interface."""
  p = flags.new_parser(__doc__)
  p.add_argument('--length', type=int, default=4096, help='L (= S).')
  p.add_argument('--dim', type=int, default=16, help='D, the head dim.')
  p.add_argument(
    '--samples', type=int, default=15, help='independent draws per point.'
  )
  p.add_argument(
    '--num_features',
    default='16,32,64,128,256',
    help='comma-separated M values (random projection rows).',
  )
  p.add_argument(
    '--kernels',
    default='softmax,softmax_trig,relu',
    help=f'comma-separated, from {list(approximation.EXACT_KERNELS)}.',
  )
  p.add_argument(
    '--projections',
    default='iid,orthogonal',
    help=f'comma-separated, from {list(features.PROJECTIONS)}.',
  )
  p.add_argument(
    '--qk_std',
    default='1',
    help='comma-separated standard deviations of the query and key entries '
    '(one sweep each).',
  )
  p.add_argument(
    '--eps',
    type=float,
    default=1e-3,
    help='additive constant of the generalized (relu) features.',
  )
  p.add_argument(
    '--small_quantile',
    type=float,
    default=0.1,
    help='fraction of smallest exact kernel values for small_kernel_mse.',
  )
  p.add_argument(
    '--a_scales',
    default='1',
    help='comma-separated multiples of A* in [0, 1] at which FAVOR++ and '
    "FAVOR# are run (1: the papers' A*; 0: FAVOR+).",
  )
  p.add_argument(
    '--trained_workdir',
    default=None,
    help='also measure on the queries, keys and values of this run (every '
    "layer and head; a training run's workdir).",
  )
  p.add_argument(
    '--trained_index',
    type=int,
    default=0,
    help='which validation example of that run to feed it.',
  )
  p.add_argument('--seed', type=int, default=0)
  flags.add_output_flags(p, ('json', 'png'))
  return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Parses flags, runs, writes the outputs; returns the JSON object."""
  args, settings = flags.parse(
    build_parser(), argv, approximation_error.validate
  )
  return approximation_error.run(
    settings, json_path=args.json, png_path=args.png
  )


if __name__ == '__main__':
  main()
