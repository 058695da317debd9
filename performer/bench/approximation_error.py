"""Approximation error of random-feature attention (the paper's Fig. 4).

`validate` checks the flags of scripts/approximation_error.py (whose
docstring, its --help, says what is computed), `run` sweeps the kernels,
projections and feature counts with `performer.approximation.error_sweep`,
writes the JSON and the PNG and prints the table; `table` and `plot` draw
them from the records.
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


def validate(args: argparse.Namespace) -> dict[str, Any]:
  """Checks the flags of scripts/approximation_error.py; returns the settings.

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


def run(
  settings: dict[str, Any],
  *,
  json_path: str | None = None,
  png_path: str | None = None,
) -> dict[str, Any]:
  """Runs the sweep, writes the outputs, prints the table.

  Args:
    settings: from `validate`.
    json_path: where to write the JSON object; None for nowhere.
    png_path: where to write the plot; None for nowhere.

  Returns:
    The JSON object: the settings, the device, the seconds taken and the
    records.
  """
  start = time.perf_counter()
  records = approximation.error_sweep(settings, log=report.log)
  result = {
    'settings': settings,
    **timing.device_info(),
    'seconds': time.perf_counter() - start,
    'records': records,
  }
  if json_path:
    workdir.write_json(json_path, result)
  if png_path:
    plot(records, settings, png_path)
  print(table(records))
  return result


def _fmt(x: float | None) -> str:
  return '-' if x is None else f'{x:.2e}'
