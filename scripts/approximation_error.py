r"""Approximation error of random-feature attention (Performer paper, Fig. 4).

For each kernel, projection and number of random features M, and for each of
--samples independent draws of inputs and projection, the script computes the
exact and the estimated attention with dense L x L matrices and records the
mean squared errors (`performer.approximation.approximation_errors`):

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
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax

from performer import approximation
from performer import benchmark as bench
from performer.attention import features

METRICS = ('attention_mse', 'output_mse', 'kernel_mse', 'small_kernel_mse')
# The metrics drawn in the PNG, one column each.
PLOTTED = ('attention_mse', 'output_mse', 'small_kernel_mse')


def build_parser() -> argparse.ArgumentParser:
  """The command-line interface."""
  p = argparse.ArgumentParser(
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
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
  p.add_argument('--json', default=None, help='write the results here.')
  p.add_argument('--png', default=None, help='write the plot here.')
  return p


def validate(args: argparse.Namespace) -> dict[str, Any]:
  """Checks the flags; returns the settings to run.

  Raises:
    ValueError: naming the bad value and the valid ones.
  """
  for flag in ('length', 'dim', 'samples'):
    _positive_int(getattr(args, flag), f'--{flag}')
  num_features = [
    _positive_int(x, '--num_features')
    for x in _split(args.num_features, '--num_features')
  ]
  kernels = _split(args.kernels, '--kernels')
  for kernel in kernels:
    if kernel not in approximation.EXACT_KERNELS:
      raise ValueError(
        f'--kernels: unknown kernel {kernel!r}; valid: '
        f'{list(approximation.EXACT_KERNELS)}'
      )
  projections = _split(args.projections, '--projections')
  for projection in projections:
    if projection not in features.PROJECTIONS:
      raise ValueError(
        f'--projections: unknown projection {projection!r}; valid: '
        f'{list(features.PROJECTIONS)}'
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


def run(settings: dict[str, Any]) -> list[dict[str, Any]]:
  """Evaluates every (kernel, projection, M); one record each.

  Sample i uses the key fold_in(key(seed), i) for every configuration, so
  all configurations see the same inputs in a sample.
  """
  fn = jax.jit(
    approximation.sample_errors,
    static_argnames=('length', 'dim', 'num_features', 'projection', 'kernel'),
  )
  base = jax.random.key(settings['seed'])
  keys = [jax.random.fold_in(base, i) for i in range(settings['samples'])]
  records = []
  for kernel in settings['kernels']:
    for projection in settings['projections']:
      for m in settings['num_features']:
        start = time.perf_counter()
        per_sample = {metric: [] for metric in METRICS}
        for key in keys:
          errors = jax.device_get(
            fn(
              key,
              length=settings['length'],
              dim=settings['dim'],
              num_features=m,
              projection=projection,
              kernel=kernel,
              qk_std=settings['qk_std'],
              eps=settings['eps'],
              small_quantile=settings['small_quantile'],
            )
          )
          for metric in METRICS:
            per_sample[metric].append(float(errors[metric]))
        record = {'kernel': kernel, 'projection': projection, 'num_features': m}
        for metric, values in per_sample.items():
          record.update(_summarize(metric, values))
        record['seconds'] = time.perf_counter() - start
        records.append(record)
        _log(
          f'{kernel} {projection} M={m}: attention_mse '
          f'{record["attention_mse_mean"]:.3e}, output_mse '
          f'{record["output_mse_mean"]:.3e} ({record["seconds"]:.1f} s)'
        )
  return records


def _summarize(metric: str, values: list[float]) -> dict[str, Any]:
  finite = [v for v in values if math.isfinite(v)]
  # A trigonometric estimate can put a row sum at (or near) zero; such a
  # sample is kept and counted, but mean and spread use the finite ones.
  return {
    f'{metric}_mean': statistics.fmean(finite) if finite else None,
    f'{metric}_std': statistics.pstdev(finite) if finite else None,
    f'{metric}_median': statistics.median(finite) if finite else None,
    f'{metric}_nonfinite': len(values) - len(finite),
    f'{metric}_samples': [v if math.isfinite(v) else None for v in values],
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
  return bench.markdown_table(records, columns)


def plot(
  records: Sequence[dict[str, Any]], settings: dict[str, Any], path: str
) -> None:
  """Mean error versus M with +-1 std error bars; a row per kernel family."""
  import matplotlib

  matplotlib.use('Agg')  # Headless: no display on servers.
  import matplotlib.pyplot as plt

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
  fig.tight_layout()
  bench.ensure_parent(path)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Parses flags, runs, writes the outputs; returns the JSON object."""
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    settings = validate(args)
  except ValueError as e:
    parser.error(str(e))  # Exits with status 2 and the usage line.
  start = time.perf_counter()
  records = run(settings)
  result = {
    'settings': settings,
    **bench.device_info(),
    'seconds': time.perf_counter() - start,
    'records': records,
  }
  if args.json:
    bench.write_json(args.json, result)
  if args.png:
    plot(records, settings, args.png)
  print(table(records))
  return result


def _split(text: str, flag: str) -> list[str]:
  items = [x.strip() for x in str(text).split(',')]
  if any(not x for x in items):
    raise ValueError(f'{flag}: expected a comma-separated list, got {text!r}')
  return items


def _positive_int(value, flag: str) -> int:
  try:
    number = int(str(value).strip())
  except ValueError:
    number = None
  if number is None or number <= 0:
    raise ValueError(f'{flag}: {value!r} is not a positive integer')
  return number


def _fmt(x: float | None) -> str:
  return '-' if x is None else f'{x:.2e}'


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


if __name__ == '__main__':
  main()
