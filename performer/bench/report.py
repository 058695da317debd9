"""What benchmark scripts print and write: numbers, tables, files.

Progress goes to stderr (`log`), so that stdout holds only the results
table. Records are JSON through `performer.workdir.write_json`; every file
is written beside its target and renamed over it, so a reader (or a run
killed mid-write) never sees a truncated one.
"""

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from performer import workdir

Record = dict[str, Any]


def format_ms(ms: float | None) -> str:
  """Milliseconds with about three significant digits; '-' for None."""
  if ms is None:
    return '-'
  if ms >= 100:
    return f'{ms:.0f}'
  if ms >= 10:
    return f'{ms:.1f}'
  return f'{ms:.2f}'


def format_bytes(n: float | None) -> str:
  """Human-readable bytes (binary units); '-' for None."""
  if n is None:
    return '-'
  for unit in ('B', 'KiB', 'MiB', 'GiB'):
    if abs(n) < 1024:
      return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
    n /= 1024
  return f'{n:.1f} TiB'


def markdown_table(
  rows: Sequence[Record],
  columns: Sequence[tuple[str, str, Callable[[Any], str]]],
) -> str:
  """Renders records as a GitHub markdown table.

  Args:
    rows: the records.
    columns: (key, header, formatter) triples; the formatter gets the
      record's value for key (None when absent).

  Returns:
    The table, one line per row, ending with a newline.
  """
  header = '| ' + ' | '.join(h for _, h, _ in columns) + ' |'
  rule = '|' + '|'.join('-' * (len(h) + 2) for _, h, _ in columns) + '|'
  lines = [header, rule]
  for row in rows:
    cells = [fmt(row.get(key)) for key, _, fmt in columns]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def device_line(record: Record) -> str:
  """'Device: <kind> (<backend>), jax <version>' of a benchmark record."""
  return (
    f'Device: {record["device_kind"]} ({record["backend"]}), jax '
    f'{record["jax_version"]}'
  )


def progress_line(
  head: str,
  times_ms: Sequence[tuple[str, float | None]],
  record: Record,
) -> str:
  """One config's outcome: its name, times, peak memory, status, reason.

  Args:
    head: names the config, e.g. 'softmax causal L=1024'.
    times_ms: (label, milliseconds) pairs; None times are left out.
    record: supplies 'peak_bytes', 'status' and 'reason'.
  """
  parts = [head]
  parts += [
    f'{label} {format_ms(ms)} ms' for label, ms in times_ms if ms is not None
  ]
  if record['peak_bytes'] is not None:
    parts.append(f'peak {format_bytes(record["peak_bytes"])}')
  parts.append(record['status'])
  if record['reason']:
    parts.append(record['reason'])
  return ', '.join(parts)


def reason_notes(
  records: Sequence[Record], head: Callable[[Record], str]
) -> list[str]:
  """'- <head>: <status>, <reason>' for each record that has a reason."""
  return [
    f'- {head(r)}: {r["status"]}, {r["reason"]}' for r in records if r['reason']
  ]


def log(message: str) -> None:
  """Progress to stderr, so that stdout holds only the results table."""
  print(message, file=sys.stderr, flush=True)


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically, creating parent directories."""
  ensure_parent(path)
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def ensure_parent(path: str) -> None:
  """Creates the directory that will hold the file `path`."""
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)


def json_saver(path: str | None) -> Callable[[Any], None] | None:
  """A callback that rewrites `path` with the records so far; None: none.

  Benchmarks call it after every config: a run stopped part-way (hours at
  long lengths on a CPU) keeps every record it finished.
  """
  if not path:
    return None
  return lambda records: workdir.write_json(path, records)


def write_outputs(
  records: Sequence[Record],
  table: str,
  *,
  png_path: str | None,
  markdown_path: str | None,
  plot: Callable[[Sequence[Record], str], None],
) -> None:
  """A benchmark script's outputs besides its JSON: plot and table.

  The table is printed and, with `markdown_path`, written there; with
  `png_path`, `plot(records, png_path)` draws the figure.
  """
  if png_path:
    plot(records, png_path)
  print(table)
  if markdown_path:
    write_text(markdown_path, table)
