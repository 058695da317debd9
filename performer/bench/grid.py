"""The loop of a benchmark: every configuration once, every outcome kept.

A configuration that fails, runs out of memory or would not fit becomes a
record like any other (see `timing.measure_compiled`); one bad config never
stops the run. Where configurations grow (longer sequences), the rest of a
group can be skipped after the first that did not fit, which is the paper's
"until out of memory" and saves compiling programs that cannot run.
"""

import argparse
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from performer.bench import flags, report

Config = TypeVar('Config')
Plan = TypeVar('Plan')
Record = dict[str, Any]


def execute(
  configs: Sequence[Config],
  measure: Callable[[Config, str | None], Record],
  *,
  describe: Callable[[Record], str],
  on_record: Callable[[list[Record]], None] | None = None,
  group: Callable[[Config], Hashable] | None = None,
  stop_reason: Callable[[Record], str | None] | None = None,
) -> list[Record]:
  """Measures every config in order; returns one record each.

  Args:
    configs: what to run, in order.
    measure: (config, skip) -> its record; `skip` is None, or the reason the
      config must be recorded as skipped without running it.
    describe: the progress line of a record (logged to stderr with its
      index).
    on_record: called with the records so far after each config (e.g.
      `report.json_saver`), so that a run stopped part-way keeps them.
    group: the group of a config; with `stop_reason`, the later configs of
      a group are skipped once one of them gave a stop reason.
    stop_reason: why a record stops its group (e.g. it did not fit), or
      None.

  Returns:
    The records, in the order of `configs`.
  """
  records, stopped = [], {}
  for i, config in enumerate(configs):
    key = group(config) if group else None
    record = measure(config, stopped.get(key))
    if stop_reason and key not in stopped:
      reason = stop_reason(record)
      if reason:
        stopped[key] = reason
    records.append(record)
    report.log(f'[{i + 1}/{len(configs)}] {describe(record)}')
    if on_record is not None:
      on_record(records)
  return records


def run_benchmark(
  parser: argparse.ArgumentParser,
  argv: Sequence[str] | None,
  *,
  make_plan: Callable[[argparse.Namespace], Plan],
  execute: Callable[..., list[Record]],
  markdown: Callable[[Sequence[Record]], str],
  plot: Callable[[Sequence[Record], str], None],
) -> list[Record]:
  """The main of a benchmark script with --json, --png and --markdown.

  Parses and validates the flags (a bad one exits with status 2 before
  anything runs), runs `execute(plan, on_record=...)` rewriting the JSON
  after every config, then draws the plot and prints (and writes) the
  table.

  Returns:
    The records.
  """
  args, plan = flags.parse(parser, argv, make_plan)
  records = execute(plan, on_record=report.json_saver(args.json))
  report.write_outputs(
    records,
    markdown(records),
    png_path=args.png,
    markdown_path=args.markdown,
    plot=plot,
  )
  return records
