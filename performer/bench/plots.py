"""Figures of the benchmark scripts: headless matplotlib, atomic PNGs.

`plot_scaling` draws the measurement-versus-length grids of the attention
and whole-model benchmarks; the other scripts draw their own axes and save
them with `save_figure`.
"""

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from performer.bench import report


def pyplot():
  """matplotlib.pyplot on the headless Agg backend (no display on servers)."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  return plt


def save_figure(fig, path: str, *, tight: bool = True) -> None:
  """Writes `fig` as a PNG at `path` atomically and closes it.

  Args:
    fig: the figure.
    path: the PNG (parent directories created).
    tight: apply `tight_layout` first.
  """
  if tight:
    fig.tight_layout()
  report.ensure_parent(path)
  fig.savefig(path + '.tmp', dpi=120, format='png')
  pyplot().close(fig)
  os.replace(path + '.tmp', path)


@dataclasses.dataclass(frozen=True)
class Panel:
  """One column of `plot_scaling`.

  Attributes:
    key: the record field to plot.
    status_key: the record field that says whether `key` was measured; only
      records where it is 'ok' are joined by lines.
    title: the panel title (units included).
    scale: factor applied to the values (e.g. bytes to MiB).
    show_skipped: also draw, as open markers, the values of records whose
      status is 'skipped' (estimates, such as memory of a config that was
      over budget).
  """

  key: str
  status_key: str
  title: str
  scale: float = 1.0
  show_skipped: bool = False


def plot_scaling(
  records: Sequence[dict[str, Any]],
  path: str,
  *,
  panels: Sequence[Panel],
  series: Callable[[dict[str, Any]], str],
  row: Callable[[dict[str, Any]], str] | None = None,
  x_key: str = 'length',
  title: str = '',
) -> None:
  """Writes a PNG grid of log-log plots of measurements versus length.

  Args:
    records: benchmark records.
    path: the PNG to write (parent directories created).
    panels: one column each.
    series: names the line a record belongs to (one line per name, same
      colour in every panel).
    row: names the row a record belongs to; one row when None.
    x_key: the record field on the x axis.
    title: the figure title.
  """
  plt = pyplot()
  from matplotlib import ticker

  row = row or (lambda r: '')
  row_names = list(dict.fromkeys(row(r) for r in records)) or ['']
  names = list(dict.fromkeys(series(r) for r in records))
  cmap = plt.get_cmap('tab10')
  colors = {name: cmap(i % 10) for i, name in enumerate(names)}
  fig, axes = plt.subplots(
    len(row_names),
    len(panels),
    figsize=(4.5 * len(panels), 3.6 * len(row_names)),
    squeeze=False,
  )
  for i, row_name in enumerate(row_names):
    for j, panel in enumerate(panels):
      ax = axes[i][j]
      for name in names:
        rs = sorted(
          (r for r in records if row(r) == row_name and series(r) == name),
          key=lambda r: r[x_key],
        )
        for status, style in (
          ('ok', {'marker': 'o'}),
          ('skipped', {'marker': 'o', 'ls': 'none', 'mfc': 'none'}),
        ):
          if status == 'skipped' and not panel.show_skipped:
            continue
          pts = [
            (r[x_key], r[panel.key] * panel.scale)
            for r in rs
            if r.get(panel.status_key) == status and r.get(panel.key)
          ]
          ax.plot(
            [x for x, _ in pts],
            [y for _, y in pts],
            color=colors[name],
            label=name if status == 'ok' else None,
            **style,
          )
      ax.set_xscale('log', base=2)
      ax.set_yscale('log')
      # Plain numbers read better than 2^k and 10^k at a glance.
      ax.xaxis.set_major_formatter(ticker.FuncFormatter(_format_length))
      ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f'{y:g}'))
      ax.yaxis.set_minor_formatter(ticker.NullFormatter())
      ax.set_xlabel(x_key)
      ax.set_title(f'{row_name}: {panel.title}' if row_name else panel.title)
      ax.grid(True, which='both', alpha=0.3)
  axes[0][0].legend(fontsize='small')
  if title:
    fig.suptitle(title, fontsize='medium')
  save_figure(fig, path)


def _format_length(x: float, _=None) -> str:
  if x >= 1024 and x % 1024 == 0:
    return f'{x / 1024:g}k'
  return f'{x:g}'
