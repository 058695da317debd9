"""Command-line values, parsed and checked the same way by every script.

Each check raises ValueError naming the flag, the bad value and, where
there is a list, the valid ones; `parse` turns that into argparse's usage
error (exit status 2) before anything runs.
"""

import argparse
import ast
import math
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from performer.bench import timing

GIB = 2**30
Plan = TypeVar('Plan')


def new_parser(doc: str) -> argparse.ArgumentParser:
  """A parser whose --help shows the script's docstring as written."""
  return argparse.ArgumentParser(
    description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
  )


def parse(
  parser: argparse.ArgumentParser,
  argv: Sequence[str] | None,
  make_plan: Callable[[argparse.Namespace], Plan],
) -> tuple[argparse.Namespace, Plan]:
  """Parses `argv` and validates it with `make_plan`.

  Returns:
    (the flags, the plan).

  Raises:
    SystemExit: status 2 with the usage line, for a ValueError of
      `make_plan`.
  """
  args = parser.parse_args(argv)
  try:
    return args, make_plan(args)
  except ValueError as e:
    parser.error(str(e))


def split_list(text: Any, flag: str) -> list[str]:
  """A comma-separated flag value as its items; an empty item is an error."""
  items = [x.strip() for x in str(text).split(',')]
  if any(not x for x in items):
    raise ValueError(f'{flag}: expected a comma-separated list, got {text!r}')
  return items


def positive_int(value: Any, flag: str) -> int:
  """`value` (an int or its text) as a positive int, else a ValueError."""
  if isinstance(value, bool):
    number = None
  elif isinstance(value, int):
    number = value
  else:
    try:
      number = int(str(value).strip())
    except ValueError:
      number = None
  if number is None or number <= 0:
    raise ValueError(f'{flag}: {value!r} is not a positive integer')
  return number


def non_negative_int(value: Any, flag: str) -> int:
  """`value` as an int >= 0, else a ValueError."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ValueError(f'{flag} must be >= 0, got {value!r}')
  return value


def check_choices(
  items: Sequence[str], valid: Collection[str], flag: str, noun: str = 'value'
) -> list[str]:
  """Checks that every item is valid; returns the items.

  Raises:
    ValueError: '<flag>: unknown <noun> <item>; valid: [...]'.
  """
  for item in items:
    if item not in valid:
      raise ValueError(f'{flag}: unknown {noun} {item!r}; valid: {list(valid)}')
  return list(items)


def parse_value(text: str) -> Any:
  """A flag's value as a Python literal; true/false/none in any case; else
  the text itself (a bare word such as relu)."""
  lowered = text.strip().lower()
  if lowered in ('true', 'false'):
    return lowered == 'true'
  if lowered == 'none':
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def add_timing_flags(parser: argparse.ArgumentParser, *, repeats: int) -> None:
  """--warmup, --repeats (default `repeats`) and --seed.

  With `add_memory_budget_flag`, what `timing_settings` reads.
  """
  parser.add_argument('--warmup', type=int, default=1, help='untimed calls.')
  parser.add_argument(
    '--repeats',
    type=int,
    default=repeats,
    help='timed calls (median reported).',
  )
  parser.add_argument('--seed', type=int, default=0)


def timing_settings(args: argparse.Namespace) -> timing.Settings:
  """--warmup, --repeats, --seed and --max_peak_gib, checked.

  Raises:
    ValueError: naming the flag, for a repeat count below 1, a negative
      warm-up or a budget that is not positive.
  """
  positive_int(args.repeats, '--repeats')
  non_negative_int(args.warmup, '--warmup')
  return timing.Settings(
    warmup=args.warmup,
    repeats=args.repeats,
    seed=args.seed,
    budget_bytes=memory_budget(args.max_peak_gib),
  )


def add_memory_budget_flag(parser: argparse.ArgumentParser) -> None:
  """--max_peak_gib, read by `memory_budget`."""
  parser.add_argument(
    '--max_peak_gib',
    type=float,
    default=None,
    help='skip configs whose estimated peak memory exceeds this many GiB '
    '(default: the device limit, or 80%% of RAM on a CPU; inf: no limit).',
  )


def memory_budget(max_peak_gib: float | None) -> int | None:
  """The budget in bytes of --max_peak_gib; None means no limit.

  Args:
    max_peak_gib: the flag; None: the device's limit
      (`timing.memory_budget_bytes`), inf: no limit.
  """
  if max_peak_gib is None:
    return timing.memory_budget_bytes()
  if math.isnan(max_peak_gib) or max_peak_gib <= 0:
    raise ValueError(f'--max_peak_gib must be > 0, got {max_peak_gib}')
  if math.isinf(max_peak_gib):
    return None
  return int(max_peak_gib * GIB)


def add_output_flags(
  parser: argparse.ArgumentParser, kinds: Sequence[str] = ('json', 'png')
) -> None:
  """--json, --png and --markdown (those in `kinds`): where outputs go."""
  what = {'json': 'the records', 'png': 'the plot', 'markdown': 'the table'}
  for kind in kinds:
    parser.add_argument(
      f'--{kind}', default=None, help=f'write {what[kind]} here.'
    )
