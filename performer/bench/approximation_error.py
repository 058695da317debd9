"""Approximation error of random-feature attention (the paper's Fig. 4).

`validate` checks the flags of scripts/approximation_error.py (whose
docstring, its --help, says what is computed), `run` sweeps the q, k scales,
kernels, projections and feature counts with
`performer.approximation.error_sweep` (and, given a trained run, its own
queries and keys with `trained_error_sweep`), writes the JSON and the PNG
and prints the tables; `table`, `comparisons` and `plot` draw them from the
records.
"""

import argparse
import math
import time
from collections.abc import Sequence
from typing import Any

import jax

from performer import approximation, probe, workdir
from performer.attention import features
from performer.bench import flags, plots, report, timing

# The metrics drawn in the PNG, one column each.
PLOTTED = ('kernel_mse', 'attention_mse', 'output_mse', 'small_kernel_mse')
# Paired comparisons reported: (numerator, denominator) kernels at the same
# projection, and orthogonal over iid at the same kernel.
KERNEL_PAIRS = (
  ('favorpp', 'softmax'),
  ('favorsharp', 'softmax'),
  ('favorsharp', 'favorpp'),
)
COMPARED = ('kernel_mse', 'attention_mse', 'output_mse')


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
  qk_stds = _numbers(
    args.qk_std,
    '--qk_std',
    'positive numbers',
    lambda x: math.isfinite(x) and x > 0,
  )
  a_scales = _numbers(
    args.a_scales, '--a_scales', 'numbers in [0, 1]', lambda x: 0 <= x <= 1
  )
  if args.trained_index < 0:
    raise ValueError(f'--trained_index must be >= 0, got {args.trained_index}')
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
    'qk_stds': qk_stds,
    'a_scales': a_scales,
    'trained_workdir': args.trained_workdir,
    'trained_index': args.trained_index,
    'eps': args.eps,
    'small_quantile': args.small_quantile,
    'seed': args.seed,
  }


def _numbers(text: str, flag: str, valid: str, ok) -> list[float]:
  """A comma-separated flag of floats with ok(x), else a ValueError."""
  out = []
  for item in flags.split_list(text, flag):
    try:
      value = float(item)
    except ValueError:
      value = math.nan
    if not ok(value):
      raise ValueError(f'{flag} must be {valid}, got {item!r}')
    out.append(value)
  return out


def table(records: Sequence[dict[str, Any]]) -> str:
  """Mean and 95% interval half-width of each error as markdown."""
  columns = [
    ('source', 'inputs', str),
    ('qk_std', 'q,k std', _fmt_std),
    ('label', 'kernel', str),
    ('projection', 'projection', str),
    ('num_features', 'M', str),
  ]
  for metric in PLOTTED:
    columns.append((f'{metric}_mean', metric, _fmt))
    columns.append((f'{metric}_ci95', '+-', _fmt))
  return report.markdown_table(records, columns)


def comparisons(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Paired ratios of errors (`approximation.paired_ratio`) per metric.

  Kernel pairs of `KERNEL_PAIRS` at the same inputs, projection and M (and
  every FAVOR++ / FAVOR# A scale over FAVOR+), and orthogonal over iid at
  the same inputs, kernel and M; only the pairs whose both sides were run.
  """
  index = {
    (
      r['source'],
      r.get('qk_std'),
      r['label'],
      r['projection'],
      r['num_features'],
    ): r
    for r in records
  }
  out = []

  def add(what, a, b):
    row = {
      'source': a['source'],
      'qk_std': a.get('qk_std'),
      'compared': what,
      'num_features': a['num_features'],
    }
    for metric in COMPARED:
      row[metric] = approximation.paired_ratio(
        a[f'{metric}_samples'], b[f'{metric}_samples']
      )
    out.append(row)

  for (source, std, name, projection, m), a in index.items():
    pairs = list(KERNEL_PAIRS)
    if a['a_scale'] not in (None, 1.0):
      pairs.append((name, 'softmax'))
    for top, bottom in pairs:
      b = index.get((source, std, bottom, projection, m))
      if name == top and b is not None:
        add(f'{top} / {bottom} ({projection})', a, b)
    b = index.get((source, std, name, 'iid', m))
    if projection == 'orthogonal' and b is not None:
      add(f'orthogonal / iid ({name})', a, b)
  return out


def comparison_table(rows: Sequence[dict[str, Any]]) -> str:
  """Ratios with their 95% intervals, one column per metric."""
  columns = [
    ('source', 'inputs', str),
    ('qk_std', 'q,k std', _fmt_std),
    ('compared', 'ratio of errors', str),
    ('num_features', 'M', str),
  ] + [(metric, metric, _fmt_ratio) for metric in COMPARED]
  return report.markdown_table(rows, columns)


def plot(
  records: Sequence[dict[str, Any]], settings: dict[str, Any], path: str
) -> None:
  """Mean error versus M with 95% intervals; a row per set of inputs."""
  plt = plots.pyplot()
  rows = [
    (f'q,k ~ N(0, {std:g}^2)', [r for r in records if r.get('qk_std') == std])
    for std in settings['qk_stds']
  ]
  trained = [r for r in records if r['source'] == 'trained']
  if trained:
    rows.append(('trained model q, k', trained))
  fig, axes = plt.subplots(
    len(rows),
    len(PLOTTED),
    figsize=(4.5 * len(PLOTTED), 3.4 * len(rows)),
    squeeze=False,
  )
  styles = {'iid': {'ls': '--', 'marker': 's'}, 'orthogonal': {'marker': 'o'}}
  names = {'softmax': 'FAVOR+', 'softmax_trig': 'trig', 'favorpp': 'FAVOR++'}
  names['favorsharp'] = 'FAVOR#'
  names['relu'] = 'relu (vs its kernel)'
  for i, (row_title, row_records) in enumerate(rows):
    for j, metric in enumerate(PLOTTED):
      ax = axes[i][j]
      labels = list(dict.fromkeys(r['label'] for r in records))
      for c, name in enumerate(labels):
        kernel, _, scale = name.partition('@')
        shown = names.get(kernel, kernel) + (f' A*x{scale}' if scale else '')
        for projection in settings['projections']:
          rs = [
            r
            for r in row_records
            if r['label'] == name
            and r['projection'] == projection
            and r[f'{metric}_mean'] is not None
          ]
          ax.errorbar(
            [r['num_features'] for r in rs],
            [r[f'{metric}_mean'] for r in rs],
            yerr=[r[f'{metric}_ci95'] or 0.0 for r in rs],
            color=plt.get_cmap('tab10')(c),
            capsize=3,
            label=f'{shown}, {projection}',
            **styles.get(projection, {}),
          )
      ax.set_xscale('log', base=2)
      ax.set_yscale('log')
      ax.set_xlabel('random features M')
      ax.set_title(f'{row_title}: {metric}', fontsize='medium')
      ax.grid(True, which='both', alpha=0.3)
      if i == 0 and j == 0:
        ax.legend(fontsize='small')
  fig.suptitle(
    f'L={settings["length"]}, D={settings["dim"]}, '
    f'{settings["samples"]} samples; mean and 95% interval of the mean',
    fontsize='medium',
  )
  plots.save_figure(fig, path)


def run(
  settings: dict[str, Any],
  *,
  json_path: str | None = None,
  png_path: str | None = None,
) -> dict[str, Any]:
  """Runs the sweeps, writes the outputs, prints the tables.

  Args:
    settings: from `validate`.
    json_path: where to write the JSON object; None for nowhere.
    png_path: where to write the plot; None for nowhere.

  Returns:
    The JSON object: the settings, the device, the seconds taken, the
    records and the paired comparisons.
  """
  start = time.perf_counter()
  records = approximation.error_sweep(settings, log=report.log)
  heads = None
  if settings['trained_workdir']:
    model, config = probe.load_run(settings['trained_workdir'])
    tokens, mask = probe.example(config, index=settings['trained_index'])
    layers = probe.attention_inputs(model, tokens, mask)
    records += approximation.trained_error_sweep(
      layers, settings, causal=bool(config.model.causal), log=report.log
    )
    heads = approximation.head_statistics(
      layers, causal=bool(config.model.causal)
    )
  paired = comparisons(records)
  theory = theoretical(settings)
  result = {
    'settings': settings,
    **timing.device_info(),
    'seconds': time.perf_counter() - start,
    'records': records,
    'comparisons': paired,
    'theory': theory,
    'trained_heads': heads,
  }
  if json_path:
    workdir.write_json(json_path, result)
  if png_path:
    plot(records, settings, png_path)
  print(table(records))
  if paired:
    print(comparison_table(paired))
  print(theory_table(theory))
  return result


# Rows of the first sample's inputs that the closed forms use (all pairs).
THEORY_ROWS = 512


def theoretical(settings: dict[str, Any]) -> list[dict[str, Any]]:
  """Closed-form per-feature variances (`approximation.closed_form_variances`)

  of FAVOR+ and FAVOR++ (at each --a_scales) on the first `THEORY_ROWS`
  queries and keys of sample 0, per q, k scale.
  """
  key = jax.random.fold_in(jax.random.key(settings['seed']), 0)
  input_key, _ = jax.random.split(key)  # As `approximation.sample_errors`.
  out = []
  for qk_std in settings['qk_stds']:
    q, k, _ = approximation.draw_inputs(
      input_key, settings['length'], settings['dim'], qk_std
    )
    rows = min(THEORY_ROWS, settings['length'])
    out.append(
      {
        'qk_std': qk_std,
        'rows': rows,
        **approximation.closed_form_variances(
          q[:rows], k[:rows], settings['a_scales']
        ),
      }
    )
  return out


def theory_table(theory: Sequence[dict[str, Any]]) -> str:
  """Mean and median per-pair variance of one feature, by A."""
  rows = []
  for t in theory:
    rows.append(
      {'qk_std': t['qk_std'], 'which': 'FAVOR+ (A = 0)', **t['favor_plus']}
    )
    for v in t['favorpp']:
      rows.append(
        {
          **v,
          'qk_std': t['qk_std'],
          'which': f'{v["a_scale"]:g} A* = {v["a"]:.3f}',
        }
      )
  columns = [
    ('qk_std', 'q,k std', _fmt_std),
    ('which', 'A', str),
    ('mean', 'mean variance', _fmt),
    ('median', 'median variance', _fmt),
  ]
  return report.markdown_table(rows, columns)


def _fmt_std(x: float | None) -> str:
  return '-' if x is None else f'{x:g}'


def _fmt_ratio(r: dict[str, Any] | None) -> str:
  if r is None:
    return '-'
  return f'{r["ratio"]:.2f} [{r["low"]:.2f}, {r["high"]:.2f}]'


def _fmt(x: float | None) -> str:
  return '-' if x is None else f'{x:.2e}'
