r"""Mean and spread of finished runs' results, a row per group of seeds.

Each --group is LABEL=PATTERN: the workdirs matching the glob PATTERN (one
per seed, say) whose results.json the trainer wrote. For every group and
--metrics entry (a key of results.json) the table gives the mean, the
sample standard deviation and the number of runs; the JSON beside it keeps
every run's value.

  python scripts/summarize_runs.py \
    --group='softmax=workdirs/lm_favorpp/softmax/seed*' \
    --group='favor=workdirs/lm_favorpp/favor/seed*' \
    --metrics=validation/bits_per_byte,test/bits_per_byte \
    --json=docs/experiments/favorpp_lm.json \
    --markdown=docs/experiments/favorpp_lm.md

A pattern that matches no finished run, or a metric that a run's
results.json lacks (the message lists those it has), is an error; nothing
is written then.
"""

import argparse
import glob
import os
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from performer import workdir as workdir_lib
from performer.bench import flags


def build_parser() -> argparse.ArgumentParser:
  p = flags.new_parser(__doc__)
  p.add_argument(
    '--group',
    action='append',
    required=True,
    help='LABEL=PATTERN (a glob of workdirs); repeat for each group.',
  )
  p.add_argument(
    '--metrics',
    default='validation/loss,test/loss',
    help='comma-separated keys of results.json.',
  )
  p.add_argument('--json', default=None)
  p.add_argument('--markdown', default=None)
  return p


def collect(groups: list[str], metrics: list[str]) -> list[dict[str, Any]]:
  """One row per group: label, runs, and per metric its values."""
  rows = []
  for spec in groups:
    label, sep, pattern = spec.partition('=')
    if not sep or not label or not pattern:
      raise ValueError(f'--group must be LABEL=PATTERN, got {spec!r}')
    runs = []
    for path in sorted(glob.glob(pattern)):
      results = workdir_lib.read_results(path)
      if results is not None:
        runs.append((path, results))
    if not runs:
      raise ValueError(
        f'--group {label}: no finished run (results.json) matches {pattern!r}'
      )
    row = {'label': label, 'runs': [os.path.relpath(p) for p, _ in runs]}
    for metric in metrics:
      values = []
      for path, results in runs:
        if metric not in results:
          have = sorted(k for k, v in results.items() if isinstance(v, float))
          raise ValueError(
            f'{path}/results.json has no {metric!r}; it has {have}'
          )
        values.append(float(results[metric]))
      row[metric] = {
        'mean': statistics.fmean(values),
        'std': statistics.stdev(values) if len(values) > 1 else None,
        'n': len(values),
        'values': values,
      }
    rows.append(row)
  return rows


def markdown(rows: list[dict[str, Any]], metrics: list[str]) -> str:
  """mean ± sample std (n) per group and metric."""
  lines = [
    '| runs | ' + ' | '.join(metrics) + ' |',
    '|---|' + '---|' * len(metrics),
  ]
  for row in rows:
    cells = []
    for metric in metrics:
      m = row[metric]
      spread = '' if m['std'] is None else f' ± {m["std"]:.4f}'
      cells.append(f'{m["mean"]:.4f}{spread} (n={m["n"]})')
    lines.append(f'| {row["label"]} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    metrics = flags.split_list(args.metrics, '--metrics')
    rows = collect(args.group, metrics)
  except ValueError as e:
    parser.error(str(e))
  table = markdown(rows, metrics)
  if args.json:
    workdir_lib.write_json(args.json, {'metrics': metrics, 'rows': rows})
  if args.markdown:
    with open(args.markdown, 'w') as f:
      f.write(table)
  print(table, end='')
  return rows


if __name__ == '__main__':
  main(sys.argv[1:])
