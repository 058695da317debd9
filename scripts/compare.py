r"""Long Range Arena comparison: tasks x attention variants x seeds.

Runs (or, with --collect_only, only reads) one training run per task,
variant and seed, each in its own process so that its peak memory is its
own:

  python scripts/train.py --config=configs/lra_<task>.py:attention=<a>[,lite]
    --config.seed=<s> --workdir=<root>/<task>/<a>/seed<s> [overrides]

and writes, under --out, results.json (every run's record and the
summary), results.csv and results.md (per task and variant: test accuracy
mean and sample standard deviation over the seeds that finished, their
number n, training steps per second, peak memory, and the published LRA
Table 1 accuracy beside ours) and accuracy.png (grouped bars with error
bars, published numbers as markers).

  python scripts/compare.py --tasks=listops,text,retrieval,image,pathfinder \
    --attention=softmax,favor,local,sparse --seeds=0,1 --lite \
    --root=workdirs/lra_lite --out=docs/lra \
    --override=retrieval:data.path=/data/lra_release/tsv_data \
    --override=data.data_dir=/data/tfds

A run whose workdir holds results.json is not run again, nor one that an
earlier results.json of this script given with --previous records as
finished for the same task, variant, seed and --lite (its workdirs may be
gone, on another machine, say); one that stopped
part-way resumes from its checkpoints (the trainer does that); one that
fails (data not prepared, say) is recorded with its error, written to
<workdir>/compare_error.json, and the grid goes on. The log of each run is
<workdir>/compare.log. Published names map to ours as Transformer =
softmax, Performer = favor, Local Att. = local, Sparse Trans. = sparse;
'pathx' is Pathfinder at 128x128 (configs/lra_pathfinder.py:size=128), on
which every LRA model failed.
"""

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # However this script is started.

from performer import attention  # noqa: E402
from performer import benchmark as bench  # noqa: E402
from performer.data import lra_standins  # noqa: E402

# Task -> (config file, extra config argument).
TASKS = {
  'listops': ('configs/lra_listops.py', ''),
  'text': ('configs/lra_text.py', ''),
  'retrieval': ('configs/lra_retrieval.py', ''),
  'image': ('configs/lra_image.py', ''),
  'pathfinder': ('configs/lra_pathfinder.py', ''),
  'pathx': ('configs/lra_pathfinder.py', 'size=128'),
}
# LRA Table 1 (Tay et al., ICLR 2021), test accuracy in %; None = FAIL.
PUBLISHED = {
  'softmax': {  # Transformer
    'listops': 36.37,
    'text': 64.27,
    'retrieval': 57.46,
    'image': 42.44,
    'pathfinder': 71.40,
    'pathx': None,
  },
  'local': {  # Local Att.
    'listops': 15.82,
    'text': 52.98,
    'retrieval': 53.39,
    'image': 41.46,
    'pathfinder': 66.63,
    'pathx': None,
  },
  'sparse': {  # Sparse Trans.
    'listops': 17.07,
    'text': 63.58,
    'retrieval': 59.59,
    'image': 44.24,
    'pathfinder': 71.71,
    'pathx': None,
  },
  'favor': {  # Performer
    'listops': 18.01,
    'text': 65.40,
    'retrieval': 53.82,
    'image': 42.77,
    'pathfinder': 77.05,
    'pathx': None,
  },
}
PUBLISHED_NAMES = {
  'softmax': 'Transformer',
  'local': 'Local Att.',
  'sparse': 'Sparse Trans.',
  'favor': 'Performer',
}
RESULTS_FILE = 'results.json'  # Written by performer.train.
CONFIG_FILE = 'config.json'  # Written by performer.train.
ERROR_FILE = 'compare_error.json'
LOG_FILE = 'compare.log'
CSV_FIELDS = (
  'task',
  'attention',
  'n',
  'failed',
  'missing',
  'test_accuracy_mean_pct',
  'test_accuracy_std_pct',
  'published_accuracy_pct',
  'steps_per_sec',
  'peak_memory_bytes',
  'wall_time_sec',
  'standin_data',
  'recorded',
)


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the grid."""

  task: str
  attention: str
  seed: int
  workdir: str
  command: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
  """The validated grid."""

  tasks: list[str]
  variants: list[str]
  runs: list[Run]
  out: str
  lite: bool
  collect_only: bool
  # (task, attention, seed) -> a finished run's record from --previous.
  previous: dict[tuple[str, str, int], dict[str, Any]] = dataclasses.field(
    default_factory=dict
  )


def build_parser() -> argparse.ArgumentParser:
  """The command-line interface."""
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument(
    '--tasks',
    default='listops,text,retrieval,image,pathfinder',
    help=f'comma-separated, from {list(TASKS)}.',
  )
  p.add_argument(
    '--attention',
    default='softmax,favor,local,sparse',
    help='comma-separated registered attention variants.',
  )
  p.add_argument('--seeds', default='0,1', help='comma-separated ints.')
  p.add_argument(
    '--lite', action='store_true', help="the configs' CPU-sized variant."
  )
  p.add_argument(
    '--root', default='workdirs/lra', help='workdirs go under this folder.'
  )
  p.add_argument(
    '--out', default='docs/lra', help='folder for the tables and the plot.'
  )
  p.add_argument(
    '--collect_only',
    action='store_true',
    help='read existing workdirs; run nothing.',
  )
  p.add_argument(
    '--previous',
    action='append',
    default=[],
    metavar='RESULTS_JSON',
    help='a results.json this script wrote earlier (repeatable): its '
    'finished runs of the same task, variant, seed and --lite count as '
    'finished (not rerun, in the table) where the workdir has no results. '
    'The runs must have used the same overrides: that is not checked.',
  )
  p.add_argument(
    '--override',
    action='append',
    default=[],
    metavar='[TASK:]KEY=VALUE',
    help='a config override passed as --config.KEY=VALUE to every run, or '
    'to the runs of TASK only (repeatable), e.g. '
    'retrieval:data.path=/data/aan.',
  )
  return p


def make_plan(args: argparse.Namespace) -> Plan:
  """Validates the flags and lists the runs, before anything runs.

  Raises:
    ValueError: naming the bad value and the valid ones.
  """
  tasks = _split(args.tasks, '--tasks')
  for task in tasks:
    if task not in TASKS:
      raise ValueError(f'--tasks: unknown task {task!r}; valid: {list(TASKS)}')
  registered = attention.names()
  variants = _split(args.attention, '--attention')
  for name in variants:
    if name not in registered:
      raise ValueError(
        f'--attention: unknown attention variant {name!r}; valid: {registered}'
      )
  seeds = []
  for text in _split(args.seeds, '--seeds'):
    try:
      seed = int(text)
    except ValueError:
      raise ValueError(f'--seeds: {text!r} is not an int') from None
    if seed not in seeds:
      seeds.append(seed)
  for flag, path in (('--root', args.root), ('--out', args.out)):
    if os.path.exists(path) and not os.path.isdir(path):
      raise ValueError(f'{flag}={path} is a file; it must be a folder')
  overrides = _parse_overrides(args.override)
  root = os.path.abspath(args.root)
  runs = []
  for task in tasks:
    path, extra = TASKS[task]
    for name in variants:
      arg = ','.join(
        x for x in (f'attention={name}', extra, 'lite' * args.lite) if x
      )
      for seed in seeds:
        workdir = os.path.join(root, task, name, f'seed{seed}')
        command = (
          sys.executable,
          os.path.join(REPO, 'scripts', 'train.py'),
          f'--config={os.path.join(REPO, path)}:{arg}',
          f'--config.seed={seed}',
          f'--workdir={workdir}',
          *(f'--config.{kv}' for t, kv in overrides if t in ('', task)),
        )
        runs.append(Run(task, name, seed, workdir, command))
  previous = {}
  for path in args.previous:
    previous.update(read_previous(path, args.lite))
  return Plan(
    tasks, variants, runs, args.out, args.lite, args.collect_only, previous
  )


def read_previous(path: str, lite: bool) -> dict[tuple, dict[str, Any]]:
  """The finished runs an earlier results.json of this script records.

  Args:
    path: the file (`<out>/results.json` of an earlier grid).
    lite: the --lite of this grid; the file's must be the same.

  Returns:
    (task, attention, seed) -> the run's record, with `recorded_in` (the
    first file that recorded it) added.

  Raises:
    ValueError: the file is missing, is not such a results file, or was
      written by a grid with the other --lite setting.
  """
  flag = f'--previous={path}'
  try:
    with open(path) as f:
      data = json.load(f)
  except OSError as e:
    raise ValueError(f'{flag}: cannot read it ({e.strerror})') from None
  except ValueError as e:
    raise ValueError(f'{flag}: not JSON ({e})') from None
  if not (
    isinstance(data, dict)
    and isinstance(data.get('runs'), list)
    and isinstance(data.get('lite'), bool)
  ):
    raise ValueError(
      f"{flag}: not a results.json of scripts/compare.py (it needs 'lite' "
      "and a list 'runs')"
    )
  if data['lite'] != lite:
    raise ValueError(
      f'{flag} holds runs with lite={data["lite"]}, this grid has '
      f'lite={lite}; give --lite to both or to neither'
    )
  finished = {}
  for record in data['runs']:
    if isinstance(record, dict) and record.get('status') == 'ok':
      key = tuple(record.get(k) for k in ('task', 'attention', 'seed'))
      finished[key] = {
        **record,
        'recorded_in': record.get('recorded_in') or os.path.abspath(path),
      }
  return finished


def _split(text: str, flag: str) -> list[str]:
  items = [x.strip() for x in text.split(',') if x.strip()]
  if not items:
    raise ValueError(f'{flag} is empty')
  return list(dict.fromkeys(items))  # Each once, in the order given.


def _parse_overrides(overrides: Sequence[str]) -> list[tuple[str, str]]:
  """'[task:]key=value' -> (task or '', 'key=value')."""
  parsed = []
  for item in overrides:
    task, sep, rest = item.partition(':')
    if not sep or '=' in task:  # No task prefix (a value may hold ':').
      task, rest = '', item
    if task and task not in TASKS:
      raise ValueError(
        f'--override={item}: unknown task {task!r}; valid: {list(TASKS)}'
      )
    key, sep, _ = rest.partition('=')
    if not sep or not key:
      raise ValueError(f'--override={item} must look like [TASK:]KEY=VALUE')
    parsed.append((task, rest.removeprefix('config.')))
  return parsed


# ---------------------------------------------------------------------------
# Running and collecting.


def run_command(command: Sequence[str], log_path: str) -> int:
  """Runs `command` from the repository root, output to `log_path`.

  Returns:
    The exit status.
  """
  bench.ensure_parent(log_path)
  with open(log_path, 'a') as log:
    return subprocess.run(
      list(command), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    ).returncode


def collect(
  plan: Plan, runner: Callable[[Sequence[str], str], int] | None = None
) -> list[dict[str, Any]]:
  """Runs what has no results yet (unless collect_only); one record each.

  Args:
    plan: the grid.
    runner: runs a command with its log file and returns the exit status;
      `run_command` when None.
  """
  runner = runner or run_command
  records = []
  for i, run in enumerate(plan.runs):
    name = (
      f'[{i + 1}/{len(plan.runs)}] {run.task}/{run.attention}/seed{run.seed}'
    )
    results_path = os.path.join(run.workdir, RESULTS_FILE)
    error_path = os.path.join(run.workdir, ERROR_FILE)
    recorded = plan.previous.get((run.task, run.attention, run.seed))
    if recorded and not os.path.exists(results_path):
      bench.log(f'{name}: ok, recorded in {recorded["recorded_in"]}')
      records.append(recorded)
      continue
    if not os.path.exists(results_path) and not plan.collect_only:
      bench.log(f'{name}: running')
      log_path = os.path.join(run.workdir, LOG_FILE)
      code = runner(run.command, log_path)
      if os.path.exists(results_path):
        if os.path.exists(error_path):
          os.remove(error_path)  # An earlier failure, fixed since.
      else:
        bench.write_json(
          error_path,
          {
            'returncode': code,
            'error': _error_line(log_path, code),
            'log': log_path,
            'command': list(run.command),
          },
        )
    record = _record(run, results_path, error_path)
    bench.log(f'{name}: {record["status"]} {record.get("error") or ""}')
    records.append(record)
  return records


def _record(run: Run, results_path: str, error_path: str) -> dict[str, Any]:
  record = {
    'task': run.task,
    'attention': run.attention,
    'seed': run.seed,
    'workdir': run.workdir,
    'command': ' '.join(run.command),
  }
  if os.path.exists(results_path):
    with open(results_path) as f:
      results = json.load(f)
    record.update(
      status='ok',
      standin_data=_read_standin(run.workdir),
      test_accuracy=results.get('test/accuracy'),
      validation_accuracy=results.get('validation/accuracy'),
      steps_per_sec=results.get('train/steps_per_sec'),
      peak_memory_bytes=results.get('peak_memory_bytes'),
      wall_time_sec=results.get('wall_time_sec'),
      step=results.get('step'),
      best_step=results.get('best_step'),
    )
  elif os.path.exists(error_path):
    with open(error_path) as f:
      record.update(status='failed', error=json.load(f).get('error'))
  else:
    record.update(status='missing', error='no results.json (not run yet)')
  return record


def _read_standin(workdir: str) -> bool:
  """Whether the run in `workdir` read stand-in data (lra_standins)."""
  try:
    with open(os.path.join(workdir, CONFIG_FILE)) as f:
      data_config = json.load(f)['data']
  except (OSError, ValueError, KeyError):
    return False
  return lra_standins.is_standin(data_config)


_ERROR_RE = re.compile(r'^\s*([\w.]*(Error|Exception|Exit)\b.*)$')


def _error_line(log_path: str, code: int) -> str:
  """The last exception line of a failed run's log, else its last line."""
  try:
    with open(log_path, errors='replace') as f:
      lines = [line.rstrip() for line in f if line.strip()]
  except OSError:
    lines = []
  for line in reversed(lines):
    match = _ERROR_RE.match(line)
    if match:
      return match.group(1)[:500]
  last = lines[-1][:500] if lines else 'no output'
  return f'exit status {code}: {last}'


# ---------------------------------------------------------------------------
# Summary and outputs.


def summarize(
  records: Sequence[dict[str, Any]],
  tasks: Sequence[str],
  variants: Sequence[str],
) -> list[dict[str, Any]]:
  """One row per task and variant, in grid order.

  Accuracies are in %; the spread is the sample standard deviation over the
  seeds that finished (None with fewer than two); steps/s, peak memory and
  wall time are means over them.
  """
  rows = []
  for task in tasks:
    for name in variants:
      mine = [r for r in records if (r['task'], r['attention']) == (task, name)]
      ok = [r for r in mine if r['status'] == 'ok']
      accs = [100 * r['test_accuracy'] for r in ok if _num(r['test_accuracy'])]
      rows.append(
        {
          'task': task,
          'attention': name,
          'n': len(accs),
          'failed': sum(r['status'] == 'failed' for r in mine),
          'missing': sum(r['status'] == 'missing' for r in mine),
          'test_accuracy_mean_pct': statistics.fmean(accs) if accs else None,
          'test_accuracy_std_pct': (
            statistics.stdev(accs) if len(accs) > 1 else None
          ),
          'published_accuracy_pct': PUBLISHED.get(name, {}).get(task),
          'has_published': task in PUBLISHED.get(name, {}),
          'steps_per_sec': _mean(r.get('steps_per_sec') for r in ok),
          'peak_memory_bytes': _mean(r.get('peak_memory_bytes') for r in ok),
          'wall_time_sec': _mean(r.get('wall_time_sec') for r in ok),
          'standin_data': any(r.get('standin_data') for r in ok),
          'recorded': sum(bool(r.get('recorded_in')) for r in ok),
          'recorded_in': sorted(
            {r['recorded_in'] for r in ok if r.get('recorded_in')}
          ),
          'errors': sorted(
            {r['error'] for r in mine if r['status'] == 'failed'}
          ),
        }
      )
  return rows


def _num(x) -> bool:
  return isinstance(x, int | float) and math.isfinite(x)


def _mean(values) -> float | None:
  values = [v for v in values if _num(v)]
  return statistics.fmean(values) if values else None


def _published_text(row: dict[str, Any]) -> str:
  if not row['has_published']:
    return '-'
  value = row['published_accuracy_pct']
  return 'FAIL' if value is None else f'{value:.2f}'


def markdown(rows: Sequence[dict[str, Any]], lite: bool) -> str:
  """The results table, with a caption saying what the numbers are."""
  lines = [
    '| Task | Attention | n | Test accuracy (%) | LRA Table 1 (%) | Steps/s '
    '| Peak memory | Failed | Not run |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  for row in rows:
    mean, std = row['test_accuracy_mean_pct'], row['test_accuracy_std_pct']
    acc = '-' if mean is None else f'{mean:.2f}'
    if std is not None:
      acc += f' ± {std:.2f}'
    steps = row['steps_per_sec']
    lines.append(
      f'| {_task_text(row)} | {row["attention"]} | {row["n"]} | {acc} | '
      f'{_published_text(row)} | {"-" if steps is None else f"{steps:.2f}"} '
      f'| {bench.format_bytes(row["peak_memory_bytes"])} | '
      f'{row["failed"] or ""} | {row["missing"] or ""} |'
    )
  caption = (
    f'Test accuracy of the best-validation checkpoint, mean ± sample std '
    f'over n seeds{" (lite configs)" if lite else ""}; LRA Table 1: '
    'Transformer = softmax, Performer = favor, Local Att. = local, Sparse '
    'Trans. = sparse (FAIL: chance on Path-X). Steps/s and peak memory: '
    'means over the seeds.'
  )
  if any(row['standin_data'] for row in rows):
    caption += (
      ' (stand-in): the runs read stand-in data (performer/data/'
      "lra_standins.py), not the task's dataset; LRA's number is not "
      'comparable there.'
    )
  recorded_in = sorted({p for row in rows for p in row['recorded_in']})
  if recorded_in:
    caption += (
      f' {sum(row["recorded"] for row in rows)} of the runs were read from '
      'earlier results files (--previous), not from workdirs under --root: '
      f'{", ".join(_short_path(p) for p in recorded_in)}.'
    )
  caption += '\n\n'
  errors = [
    f'- {row["task"]}/{row["attention"]}: {error}'
    for row in rows
    for error in row['errors']
  ]
  tail = '\nFailed runs:\n' + '\n'.join(errors) + '\n' if errors else ''
  return caption + '\n'.join(lines) + '\n' + tail


def _short_path(path: str) -> str:
  """`path` relative to the repository when inside it (docs stay portable)."""
  relative = os.path.relpath(path, REPO)
  return path if relative.startswith('..') else relative


def _task_text(row: dict[str, Any]) -> str:
  return f'{row["task"]} (stand-in)' if row['standin_data'] else row['task']


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
  """The summary as CSV (accuracies in %, empty where unknown)."""
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, CSV_FIELDS, extrasaction='ignore')
  writer.writeheader()
  for row in rows:
    values = {k: ('' if row.get(k) is None else row[k]) for k in CSV_FIELDS}
    if row['has_published'] and row['published_accuracy_pct'] is None:
      values['published_accuracy_pct'] = 'FAIL'
    writer.writerow(values)
  return buffer.getvalue()


def plot(rows: Sequence[dict[str, Any]], path: str) -> None:
  """Grouped bars of test accuracy per task, published values as markers."""
  import matplotlib

  matplotlib.use('Agg')  # Headless.
  import matplotlib.pyplot as plt

  tasks = list(dict.fromkeys(r['task'] for r in rows))
  variants = list(dict.fromkeys(r['attention'] for r in rows))
  width = 0.8 / max(1, len(variants))
  fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(tasks), 4))
  by_key = {(r['task'], r['attention']): r for r in rows}
  marked = False
  for j, name in enumerate(variants):
    offset = (j - (len(variants) - 1) / 2) * width
    cells = [(i + offset, by_key[task, name]) for i, task in enumerate(tasks)]
    bars = [(x, r) for x, r in cells if r['test_accuracy_mean_pct'] is not None]
    if bars:
      ax.bar(
        [x for x, _ in bars],
        [r['test_accuracy_mean_pct'] for _, r in bars],
        width,
        yerr=[r['test_accuracy_std_pct'] or 0 for _, r in bars],
        capsize=2,
        color=f'C{j}',
        label=name,
      )
    published = [
      (x, r['published_accuracy_pct'])
      for x, r in cells
      if r['published_accuracy_pct'] is not None
    ]
    if published:
      ax.plot(
        [x for x, _ in published],
        [y for _, y in published],
        'k_',
        linestyle='none',
        markersize=12,
        markeredgewidth=2,
        label=None if marked else 'LRA Table 1',
      )
      marked = True
  standin = {r['task'] for r in rows if r['standin_data']}
  labels = [f'{t}\n(stand-in)' if t in standin else t for t in tasks]
  ax.set_xticks(range(len(tasks)), labels)
  ax.set_ylabel('test accuracy (%)')
  ax.set_ylim(0, 100)
  ax.grid(axis='y', alpha=0.3)
  ax.legend(fontsize='small', ncols=2)
  fig.tight_layout()
  bench.ensure_parent(path)
  fig.savefig(path + '.tmp', dpi=120, format='png')
  plt.close(fig)
  os.replace(path + '.tmp', path)


def write_outputs(
  plan: Plan, records: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
  """Writes results.json, results.csv, results.md and accuracy.png."""
  rows = summarize(records, plan.tasks, plan.variants)
  bench.write_json(
    os.path.join(plan.out, 'results.json'),
    {'lite': plan.lite, 'summary': rows, 'runs': list(records)},
  )
  bench.write_text(os.path.join(plan.out, 'results.csv'), to_csv(rows))
  bench.report(
    rows,
    markdown(rows, plan.lite),
    png_path=os.path.join(plan.out, 'accuracy.png'),
    markdown_path=None,
    plot=plot,
  )
  bench.write_text(
    os.path.join(plan.out, 'results.md'), markdown(rows, plan.lite)
  )
  return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Parses flags, runs or collects the grid, writes the outputs.

  Returns:
    The per-run records.
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    plan = make_plan(args)
  except ValueError as e:
    parser.error(str(e))  # Exits with status 2, before anything runs.
  records = collect(plan)
  write_outputs(plan, records)
  return records


if __name__ == '__main__':
  main(sys.argv[1:])
