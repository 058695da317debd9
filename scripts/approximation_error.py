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

Kernels: 'softmax' (positive features, FAVOR+) and 'softmax_trig' (sin/cos
features) are compared with exact softmax attention, exp(q . k / sqrt(D));
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

Outputs: a JSON object (--json) with the settings and one record per
(kernel, projection, M) holding every sample's errors and their mean,
standard deviation and median; a PNG (--png) of the mean error versus M
with one-standard-deviation error bars (across samples), log-log; and a
summary table on stdout.

Paper setup (13 minutes on 2 CPU cores shared with other jobs):

  python scripts/approximation_error.py \
    --length 4096 --dim 16 --samples 15 \
    --num_features 16,32,64,128,256 \
    --json docs/benchmarks/approximation_error.json \
    --png docs/benchmarks/approximation_error.png
"""

import argparse
import math
import time
from collections.abc import Sequence
from typing import Any

from performer import approximation, workdir
from performer.attention import features
from performer.bench import flags, plots, report, timing

# The metrics drawn in the PNG, one column each.
PLOTTED = ('attention_mse', 'output_mse', 'small_kernel_mse')


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
    type=float,
    default=1.0,
    help='standard deviation of the query and key entries.',
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
  p.add_argument('--seed', type=int, default=0)
  flags.add_output_flags(p, ('json', 'png'))
  return p


def validate(args: argparse.Namespace) -> dict[str, Any]:
  """Checks the flags; returns the settings to run.

  Raises:
    ValueError: naming the bad value and the valid ones.
  """
  for flag in ('length', 'dim', 'samples'):
    flags.positive_int(getattr(args, flag), f'--{flag}')
  num_features = [
    flags.positive_int(x, '--num_features')
    for x in flags.split_list(args.num_features, '--num_features')
  ]
  kernels = flags.check_choices(
    flags.split_list(args.kernels, '--kernels'),
    approximation.EXACT_KERNELS,
    '--kernels',
    'kernel',
  )
  projections = flags.check_choices(
    flags.split_list(args.projections, '--projections'),
    features.PROJECTIONS,
    '--projections',
    'projection',
  )
  if not (math.isfinite(args.qk_std) and args.qk_std > 0):
    raise ValueError(f'--qk_std must be a positive number, got {args.qk_std}')
  if not (math.isfinite(args.eps) and args.eps >= 0):
    raise ValueError(f'--eps must be >= 0, got {args.eps}')
  if not 0 < args.small_quantile <= 1:
    raise ValueError(
      f'--small_quantile must be in (0, 1], got {args.small_quantile}'
    )
  return {
    'length': args.length,
    'dim': args.dim,
    'samples': args.samples,
    'num_features': num_features,
    'kernels': kernels,
    'projections': projections,
    'qk_std': args.qk_std,
    'eps': args.eps,
    'small_quantile': args.small_quantile,
    'seed': args.seed,
  }


def table(records: Sequence[dict[str, Any]]) -> str:
  """Mean (and std) of the attention and output MSE as markdown."""
  columns = [
    ('kernel', 'kernel', str),
    ('projection', 'projection', str),
    ('num_features', 'M', str),
  ]
  for metric in ('attention_mse', 'output_mse', 'small_kernel_mse'):
    columns.append((f'{metric}_mean', f'{metric} mean', _fmt))
    columns.append((f'{metric}_std', 'std', _fmt))
  return report.markdown_table(records, columns)


def plot(
  records: Sequence[dict[str, Any]], settings: dict[str, Any], path: str
) -> None:
  """Mean error versus M with +-1 std error bars; a row per kernel family."""
  plt = plots.pyplot()
  rows = [
    ('vs exact softmax', [k for k in settings['kernels'] if k != 'relu']),
    (
      'relu vs exact ReLU kernel',
      [k for k in settings['kernels'] if k == 'relu'],
    ),
  ]
  rows = [(title, kernels) for title, kernels in rows if kernels]
  fig, axes = plt.subplots(
    len(rows),
    len(PLOTTED),
    figsize=(4.5 * len(PLOTTED), 3.6 * len(rows)),
    squeeze=False,
  )
  styles = {'iid': {'ls': '--', 'marker': 's'}, 'orthogonal': {'marker': 'o'}}
  names = {'softmax': 'positive', 'softmax_trig': 'trig', 'relu': 'relu'}
  for i, (row_title, kernels) in enumerate(rows):
    for j, metric in enumerate(PLOTTED):
      ax = axes[i][j]
      for c, kernel in enumerate(kernels):
        for projection in settings['projections']:
          rs = [
            r
            for r in records
            if r['kernel'] == kernel
            and r['projection'] == projection
            and r[f'{metric}_mean'] is not None
          ]
          ax.errorbar(
            [r['num_features'] for r in rs],
            [r[f'{metric}_mean'] for r in rs],
            yerr=[r[f'{metric}_std'] for r in rs],
            color=plt.get_cmap('tab10')(c),
            capsize=3,
            label=f'{names.get(kernel, kernel)}, {projection}',
            **styles.get(projection, {}),
          )
      ax.set_xscale('log', base=2)
      ax.set_yscale('log')
      ax.set_xlabel('random features M')
      ax.set_title(f'{row_title}: {metric}', fontsize='medium')
      ax.grid(True, which='both', alpha=0.3)
      ax.legend(fontsize='small')
  fig.suptitle(
    f'L={settings["length"]}, D={settings["dim"]}, '
    f'{settings["samples"]} samples, q,k ~ N(0, {settings["qk_std"]:g}^2); '
    'mean +- 1 std',
    fontsize='medium',
  )
  plots.save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Parses flags, runs, writes the outputs; returns the JSON object."""
  args, settings = flags.parse(build_parser(), argv, validate)
  start = time.perf_counter()
  records = approximation.error_sweep(settings, log=report.log)
  result = {
    'settings': settings,
    **timing.device_info(),
    'seconds': time.perf_counter() - start,
    'records': records,
  }
  if args.json:
    workdir.write_json(args.json, result)
  if args.png:
    plot(records, settings, args.png)
  print(table(records))
  return result


def _fmt(x: float | None) -> str:
  return '-' if x is None else f'{x:.2e}'


if __name__ == '__main__':
  main()
