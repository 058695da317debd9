"""Training curves read from workdirs' metrics.jsonl, drawn and compared.

A curve is (steps, values) of one metric on one split of one run. The JSON
written beside a figure holds the plotted points, so the figure can be
redrawn or quoted without the workdirs.
"""

import json
import math
import os
from collections.abc import Sequence
from typing import Any

from performer import workdir as workdir_lib
from performer.bench import plots

SPLITS = ('train', 'validation', 'test')


def load_curve(
  workdir: str, metric: str, split: str = 'validation'
) -> tuple[list[int], list[float]]:
  """Returns (steps, values) of `metric` on `split` in `workdir`.

  A step recorded twice (a run resumed after it had logged that step keeps
  the later record) appears once, with its last value.

  Raises:
    FileNotFoundError: the workdir or its metrics.jsonl is missing.
    ValueError: no record of `split` holds `metric` (the message lists the
      metrics the split has), or `split` is not one of SPLITS.
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'workdir {workdir} does not exist')
  path = workdir_lib.metrics_path(workdir)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'{path} does not exist: {workdir} is not a trainer workdir, or the '
      'run has not logged yet'
    )
  try:
    records = workdir_lib.read_jsonl(path)
  except json.JSONDecodeError as error:
    raise ValueError(f'{path}: not JSON lines ({error})') from None
  by_step, present = {}, set()
  for record in records:
    if record.get('split') != split:
      continue
    present.update(k for k in record if k not in ('step', 'split'))
    if metric in record:
      by_step[int(record['step'])] = float(record[metric])
  if not by_step:
    have = ', '.join(sorted(present)) or 'none'
    raise ValueError(
      f'{path} has no {split!r} records of {metric!r}; {split} metrics '
      f'present: {have}'
    )
  steps = sorted(by_step)
  return steps, [by_step[s] for s in steps]


def plot_curves(
  curves: Sequence[dict[str, Any]],
  *,
  metric: str,
  split: str,
  png: str = '',
  json_path: str = '',
  title: str = '',
  log_y: bool = False,
) -> dict[str, Any]:
  """Draws curves and writes the PNG and the JSON of the plotted points.

  Args:
    curves: dicts with 'label', 'steps', 'values' and optionally 'workdir',
      'style' (a matplotlib format such as '--'), 'marker', and, for a
      group of seeds (`grouped`), 'std', 'n' and 'runs'.
    metric: the y axis.
    split: named in the axis label.
    png: the PNG to write ('' = none).
    json_path: the JSON to write ('' = none).
    title: the figure title.
    log_y: a logarithmic y axis.

  Returns:
    The JSON record: {'metric', 'split', 'curves': [{'label', 'workdir',
    'steps', 'values'}]}.
  """
  record = {
    'metric': metric,
    'split': split,
    'curves': [
      {
        'label': c['label'],
        'workdir': c.get('workdir', ''),
        'steps': list(c['steps']),
        # JSON has no NaN: a diverged value is recorded as null.
        'values': _finite_or_none(c['values']),
        **{key: c[key] for key in ('n', 'runs') if key in c},
        **({'std': _finite_or_none(c['std'])} if 'std' in c else {}),
      }
      for c in curves
    ],
  }
  if json_path:
    workdir_lib.write_json(json_path, record)
  if png:
    fig, ax = plots.pyplot().subplots(figsize=(6.4, 4.2))
    for c in curves:
      label = c['label'] + (f' (mean ± std, n = {c["n"]})' if 'n' in c else '')
      (line,) = ax.plot(
        c['steps'],
        c['values'],
        c.get('style', '-'),
        marker=c.get('marker', 'o' if len(c['steps']) < 30 else None),
        markersize=3,
        label=label,
      )
      if 'std' in c:
        low = [m - s for m, s in zip(c['values'], c['std'], strict=True)]
        high = [m + s for m, s in zip(c['values'], c['std'], strict=True)]
        ax.fill_between(
          c['steps'], low, high, color=line.get_color(), alpha=0.2
        )
    ax.set_xlabel('training step')
    ax.set_ylabel(f'{split} {metric}')
    if log_y:
      ax.set_yscale('log')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
      ax.set_title(title, fontsize=10)
    plots.save_figure(fig, png)
  return record


def _finite_or_none(values: Sequence[float]) -> list[float | None]:
  return [v if math.isfinite(v) else None for v in values]


def default_metric(split: str) -> str:
  """Accuracy on evaluation splits; loss on train (also logged each step)."""
  return 'loss' if split == 'train' else 'accuracy'


def recovery_step(
  steps: Sequence[int],
  values: Sequence[float],
  target: float,
  higher_is_better: bool = True,
) -> int | None:
  """The first step whose value reaches `target`, or None."""
  for step, value in zip(steps, values, strict=True):
    if (value >= target) if higher_is_better else (value <= target):
      return step
  return None


def transfer_summary(pretrained: str, finetuned: str, metric: str) -> dict:
  """How a fine-tuned run recovers the level of the run it started from.

  The backward-compatibility experiment (paper Fig. 5 left): `finetuned`
  started from `pretrained`'s weights with another attention and was
  evaluated at step 0, right after the swap.

  Args:
    pretrained: the workdir of the run whose weights were transferred.
    finetuned: the workdir of the run started from them.
    metric: the validation metric compared ('accuracy': higher is better;
      any other, e.g. loss: lower is better).

  Returns:
    The pretrained run's best and final values, the fine-tuned run's value
    right after the swap, its final and best values, and the first
    fine-tuning steps within 1% and 5% (relative) of the pretrained best.

  Raises:
    ValueError: `finetuned` has no step-0 evaluation.
  """
  soft_steps, soft_values = load_curve(pretrained, metric)
  fav_steps, fav_values = load_curve(finetuned, metric)
  if fav_steps[0] != 0:
    raise ValueError(
      f'{finetuned} has no step-0 evaluation: it was not started with '
      'init_from (or by a trainer without the transfer hook)'
    )
  higher = metric == 'accuracy'  # Loss, perplexity, bits: lower is better.
  best = max if higher else min
  reference = best(soft_values)

  def reaches(fraction: float) -> int | None:
    target = reference * (fraction if higher else 2 - fraction)
    return recovery_step(fav_steps, fav_values, target, higher)

  return {
    'metric': metric,
    'softmax_steps': soft_steps[-1],
    'softmax_best': reference,
    'softmax_final': soft_values[-1],
    'favor_after_swap': fav_values[0],
    'favor_final': fav_values[-1],
    'favor_best': best(fav_values),
    'finetune_steps': fav_steps[-1],
    'favor_reaches_99pct_step': reaches(0.99),
    'favor_reaches_95pct_step': reaches(0.95),
  }


def curves_of(
  runs: Sequence[tuple[str, str]], metric: str, split: str = 'validation'
) -> list[dict[str, Any]]:
  """The curves of (label, workdir) pairs, for `plot_curves`."""
  curves = []
  for label, workdir in runs:
    steps, values = load_curve(workdir, metric, split)
    curves.append(
      {'label': label, 'workdir': workdir, 'steps': steps, 'values': values}
    )
  return curves


def grouped(curves: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Curves that share a label (the seeds of one setting) as one.

  A group of n > 1 runs becomes its mean at the steps every run has, with
  'std' (sample standard deviation over the runs, n - 1), 'n' and 'runs'
  (each run's workdir and values at those steps); `plot_curves` draws the
  mean with a band of one standard deviation. Single runs pass through.
  Labels keep their first-seen order.
  """
  by_label: dict[str, list[dict[str, Any]]] = {}
  for c in curves:
    by_label.setdefault(c['label'], []).append(c)
  out = []
  for label, group in by_label.items():
    if len(group) == 1:
      out.append(group[0])
      continue
    steps = sorted(set.intersection(*(set(c['steps']) for c in group)))
    if not steps:
      raise ValueError(f'the runs labelled {label!r} share no step')
    rows = [
      [dict(zip(c['steps'], c['values'], strict=True))[s] for s in steps]
      for c in group
    ]
    n = len(rows)
    mean = [sum(col) / n for col in zip(*rows, strict=True)]
    std = [
      math.sqrt(sum((v - m) ** 2 for v in col) / (n - 1))
      for col, m in zip(zip(*rows, strict=True), mean, strict=True)
    ]
    out.append(
      {
        'label': label,
        'workdir': '',
        'steps': steps,
        'values': mean,
        'std': std,
        'n': n,
        'runs': [
          {'workdir': c.get('workdir', ''), 'values': row}
          for c, row in zip(group, rows, strict=True)
        ],
      }
    )
  return out


def written(png: str, json_path: str) -> str:
  """The last line of a curve script: which files it wrote."""
  return f'wrote {png}' + (f' and {json_path}' if json_path else '')
