"""The Long Range Arena grid: tasks x attention variants x seeds.

One training run per task, variant and seed, each in its own process so
that its peak memory is its own:

  python scripts/train.py --config=configs/lra_<task>.py:attention=<a>[,lite]
    --config.seed=<s> --workdir=<root>/<task>/<a>/seed<s> [overrides]

With self-pretraining (`pretrain_steps` N > 0: a masked-token stage on the
task's inputs, then the task, in one run; `performer.pretrain`) the
argument gains `pretrain_steps=N` and the row its label: variant
'<a>+pretrain<N>', workdir <root>/<task>/<a>+pretrain<N>/seed<s>. Its
record holds both stages' results.

`make_plan` lists the runs, `collect` runs what has no results yet (or only
reads the workdirs) and returns one record per run, and `write_outputs`
writes results.json (every run's record and the summary), results.csv,
results.md and accuracy.png, with LRA Table 1's published accuracy beside
ours (scripts/compare.py is the command line).

Two rules protect results that are already written. Collecting nothing
(every run missing: no workdir under the root has results, e.g. a misspelt
--root) is an error, and results.json in the output folder is never
replaced by one that lacks a finished run it records (give it as a
previous results file to keep those runs). Records hold no absolute path
of the machine that made them where they can be avoided: paths inside the
project are relative to the project root, workdirs outside it relative to
the grid's root.
"""

import csv
import dataclasses
import io
import math
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from performer import attention, workdir
from performer.bench import flags, plots, report
from performer.data import lra_standins

# The project checkout: scripts/train.py and configs/ are found from here,
# and recorded paths inside it are written relative to it.
PROJECT_ROOT = os.path.dirname(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
TRAIN_SCRIPT = os.path.join('scripts', 'train.py')

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
  'reformer': {  # Reformer
    'listops': 37.27,
    'text': 56.10,
    'retrieval': 53.40,
    'image': 38.07,
    'pathfinder': 68.50,
    'pathx': None,
  },
  'linformer': {  # Linformer
    'listops': 35.70,
    'text': 53.94,
    'retrieval': 52.27,
    'image': 38.56,
    'pathfinder': 76.34,
    'pathx': None,
  },
  'longformer': {  # Longformer
    'listops': 35.63,
    'text': 62.85,
    'retrieval': 56.89,
    'image': 42.22,
    'pathfinder': 69.71,
    'pathx': None,
  },
  'sinkhorn': {  # Sinkhorn
    'listops': 33.67,
    'text': 61.20,
    'retrieval': 53.83,
    'image': 41.23,
    'pathfinder': 67.45,
    'pathx': None,
  },
  'synthesizer': {  # Synthesizer
    'listops': 36.99,
    'text': 61.68,
    'retrieval': 54.67,
    'image': 41.61,
    'pathfinder': 69.45,
    'pathx': None,
  },
  'linear': {  # Linear Trans.
    'listops': 16.13,
    'text': 65.90,
    'retrieval': 53.09,
    'image': 42.34,
    'pathfinder': 75.30,
    'pathx': None,
  },
}
# Record field (after 'pretrain_') -> results.json key (after 'pretrain/').
PRETRAIN_FIELDS = {
  'validation_accuracy': 'validation/accuracy',
  'validation_loss': 'validation/loss',
  'steps_per_sec': 'train/steps_per_sec',
  'wall_time_sec': 'wall_time_sec',
  'step': 'step',
}
ERROR_FILE = 'compare_error.json'
LOG_FILE = 'compare.log'
CSV_FIELDS = (
  'task',
  'variant',
  'attention',
  'pretrain_steps',
  'n',
  'failed',
  'missing',
  'test_accuracy_mean_pct',
  'test_accuracy_std_pct',
  'validation_accuracy_mean_pct',
  'validation_accuracy_std_pct',
  'pretrain_accuracy_mean_pct',
  'pretrain_accuracy_std_pct',
  'published_accuracy_pct',
  'steps_per_sec',
  'peak_memory_bytes',
  'wall_time_sec',
  'standin_data',
  'recorded',
)


def variant_label(attention_name: str, pretrain_steps: int) -> str:
  """'favor', or 'favor+pretrain500' for a self-pretrained run."""
  if pretrain_steps:
    return f'{attention_name}+pretrain{pretrain_steps}'
  return attention_name


def record_key(record: dict[str, Any]) -> tuple[str, str, int]:
  """(task, variant label, seed) of a run record (old ones: no pretraining)."""
  label = variant_label(record.get('attention'), record.get('pretrain_steps'))
  return record.get('task'), label, record.get('seed')


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the grid."""

  task: str
  attention: str
  seed: int
  workdir: str  # Absolute.
  # Run from PROJECT_ROOT: sys.executable, then the trainer's arguments.
  command: tuple[str, ...]
  # The workdir as records name it (see `recorded_workdir`).
  name: str = ''
  pretrain_steps: int = 0

  @property
  def variant(self) -> str:
    """The row this run belongs to (`variant_label`)."""
    return variant_label(self.attention, self.pretrain_steps)

  def recorded_command(self) -> str:
    """The command as records hold it: portable, not this machine's."""
    return ' '.join(('python', *map(_portable_argument, self.command[1:])))


@dataclasses.dataclass(frozen=True)
class Plan:
  """The validated grid."""

  tasks: list[str]
  variants: list[str]  # Row labels: attention variants (+pretrain<N>).
  runs: list[Run]
  root: str
  out: str
  lite: bool
  collect_only: bool
  # (task, variant label, seed) -> a finished run's record, --previous.
  previous: dict[tuple[str, str, int], dict[str, Any]] = dataclasses.field(
    default_factory=dict
  )


def make_plan(
  *,
  tasks: str,
  variants: str,
  seeds: str,
  lite: bool,
  root: str,
  out: str,
  collect_only: bool = False,
  previous: Sequence[str] = (),
  overrides: Sequence[str] = (),
  pretrain_steps: str = '0',
) -> Plan:
  """Validates the grid and lists its runs, before anything runs.

  Args:
    tasks: comma-separated, from TASKS.
    variants: comma-separated registered attention variants.
    seeds: comma-separated ints.
    lite: the configs' CPU-sized variant.
    root: workdirs go under this folder.
    out: folder for the tables and the plot.
    collect_only: read existing workdirs; run nothing.
    previous: results.json files of earlier grids (`read_previous`).
    overrides: '[TASK:]KEY=VALUE' config overrides.
    pretrain_steps: comma-separated ints >= 0: a row per variant and value
      (0: from scratch).

  Raises:
    ValueError: naming the bad value (with its flag) and the valid ones.
  """
  tasks = _unique(flags.split_list(tasks, '--tasks'))
  flags.check_choices(tasks, TASKS, '--tasks', 'task')
  variants = _unique(flags.split_list(variants, '--attention'))
  flags.check_choices(
    variants, attention.names(), '--attention', 'attention variant'
  )
  seed_list = []
  for text in _unique(flags.split_list(seeds, '--seeds')):
    try:
      seed_list.append(int(text))
    except ValueError:
      raise ValueError(f'--seeds: {text!r} is not an int') from None
  pretrain_list = []
  for text in _unique(flags.split_list(pretrain_steps, '--pretrain_steps')):
    try:
      value = int(text)
    except ValueError:
      value = -1
    if value < 0:
      raise ValueError(
        f'--pretrain_steps: {text!r} is not an int >= 0 (0 = from scratch)'
      )
    pretrain_list.append(value)
  for flag, path in (('--root', root), ('--out', out)):
    if os.path.exists(path) and not os.path.isdir(path):
      raise ValueError(f'{flag}={path} is a file; it must be a folder')
  parsed = _parse_overrides(overrides)
  root = os.path.abspath(root)
  runs = []
  for task in tasks:
    path, extra = TASKS[task]
    for name in variants:
      for steps in pretrain_list:
        pretrain = f'pretrain_steps={steps}' if steps else ''
        arg = ','.join(
          x for x in (f'attention={name}', extra, 'lite' * lite, pretrain) if x
        )
        label = variant_label(name, steps)
        for seed in _unique(seed_list):
          run_dir = os.path.join(root, task, label, f'seed{seed}')
          command = (
            sys.executable,
            TRAIN_SCRIPT,
            f'--config={path}:{arg}',
            f'--config.seed={seed}',
            f'--workdir={run_dir}',
            *(f'--config.{kv}' for t, kv in parsed if t in ('', task)),
          )
          runs.append(
            Run(
              task,
              name,
              seed,
              run_dir,
              command,
              recorded_workdir(run_dir, root),
              steps,
            )
          )
  finished = {}
  for path in previous:
    finished.update(read_previous(path, lite))
  labels = [variant_label(n, s) for n in variants for s in pretrain_list]
  return Plan(tasks, labels, runs, root, out, lite, collect_only, finished)


def recorded_workdir(path: str, root: str) -> str:
  """A workdir as records name it: relative to the project root when in
  it, else to the grid's root."""
  relative = project_relative(path)
  return os.path.relpath(path, root) if relative == path else relative


def project_relative(path: str) -> str:
  """An absolute `path` inside the project relative to its root; any other
  path as it is."""
  if not os.path.isabs(path):
    return path
  relative = os.path.relpath(path, PROJECT_ROOT)
  return path if relative.startswith('..') else relative


def _portable_argument(argument: str) -> str:
  """A command-line argument with a path in the project made relative."""
  flag, sep, value = argument.partition('=')
  if sep and flag.startswith('--'):
    return f'{flag}={_portable_argument(value)}'
  path, sep, rest = argument.partition(':')  # A config file and its arg.
  return project_relative(path) + sep + rest


def portable_record(record: dict[str, Any]) -> dict[str, Any]:
  """A run record with this project's absolute paths made relative.

  For records written before paths were recorded relative (their workdir,
  command and recorded_in hold the project's absolute paths); anything
  outside the project is left as it is.
  """
  record = dict(record)
  for key in ('workdir', 'recorded_in'):
    if isinstance(record.get(key), str):
      record[key] = project_relative(record[key])
  command = record.get('command')
  if isinstance(command, str) and command:
    interpreter, *arguments = command.split(' ')
    if os.path.basename(interpreter).startswith('python'):
      interpreter = 'python'
    record['command'] = ' '.join(
      (interpreter, *map(_portable_argument, arguments))
    )
  return record


def read_previous(path: str, lite: bool) -> dict[tuple, dict[str, Any]]:
  """The finished runs an earlier results.json of this script records.

  Args:
    path: the file (`<out>/results.json` of an earlier grid).
    lite: the --lite of this grid; the file's must be the same.

  Returns:
    `record_key` (task, variant label, seed) -> the run's record, with
    `recorded_in` (the first file that recorded it) added.

  Raises:
    ValueError: the file is missing, is not such a results file, or was
      written by a grid with the other --lite setting.
  """
  flag = f'--previous={path}'
  try:
    data = workdir.read_json(path)
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
      finished[record_key(record)] = portable_record(
        {
          **record,
          'recorded_in': record.get('recorded_in') or os.path.abspath(path),
        }
      )
  return finished


def _unique(items: Sequence[Any]) -> list[Any]:
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
  """Runs `command` from the project root, output to `log_path`.

  Returns:
    The exit status.
  """
  report.ensure_parent(log_path)
  with open(log_path, 'a') as log:
    return subprocess.run(
      list(command), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT
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
  runner = runner or run_command  # Looked up here: tests replace it.
  records = []
  for i, run in enumerate(plan.runs):
    name = f'[{i + 1}/{len(plan.runs)}] {run.task}/{run.variant}/seed{run.seed}'
    results_path = workdir.results_path(run.workdir)
    error_path = os.path.join(run.workdir, ERROR_FILE)
    recorded = plan.previous.get((run.task, run.variant, run.seed))
    if recorded and not os.path.exists(results_path):
      report.log(f'{name}: ok, recorded in {recorded["recorded_in"]}')
      records.append(recorded)
      continue
    if not os.path.exists(results_path) and not plan.collect_only:
      report.log(f'{name}: running')
      log_path = os.path.join(run.workdir, LOG_FILE)
      code = runner(run.command, log_path)
      if os.path.exists(results_path):
        if os.path.exists(error_path):
          os.remove(error_path)  # An earlier failure, fixed since.
      else:
        workdir.write_json(
          error_path,
          {
            'returncode': code,
            'error': _error_line(log_path, code),
            'log': log_path,
            'command': list(run.command),
          },
        )
    record = _record(run, results_path, error_path)
    report.log(f'{name}: {record["status"]} {record.get("error") or ""}')
    records.append(record)
  return records


def _record(run: Run, results_path: str, error_path: str) -> dict[str, Any]:
  record = {
    'task': run.task,
    'attention': run.attention,
    'pretrain_steps': run.pretrain_steps,
    'seed': run.seed,
    'workdir': run.name,
    'command': run.recorded_command(),
  }
  if os.path.exists(results_path):
    results = workdir.read_json(results_path)
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
    if run.pretrain_steps:
      # The masked-token stage (its accuracy is over the masked tokens).
      record.update(
        {
          f'pretrain_{key}': results.get(f'pretrain/{name}')
          for key, name in PRETRAIN_FIELDS.items()
        }
      )
  elif os.path.exists(error_path):
    record.update(
      status='failed', error=workdir.read_json(error_path).get('error')
    )
  else:
    record.update(status='missing', error='no results.json (not run yet)')
  return record


def _read_standin(run_dir: str) -> bool:
  """Whether the run in `run_dir` read stand-in data (lra_standins)."""
  try:
    data_config = workdir.read_config(run_dir)['data']
  except (OSError, ValueError, KeyError, TypeError):
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
    for label in variants:
      mine = [r for r in records if record_key(r)[:2] == (task, label)]
      ok = [r for r in mine if r['status'] == 'ok']
      name = mine[0]['attention'] if mine else label
      accs = _percents(ok, 'test_accuracy')
      val_mean, val_std = _spread(_percents(ok, 'validation_accuracy'))
      test_mean, test_std = _spread(accs)
      pre_mean, pre_std = _spread(_percents(ok, 'pretrain_validation_accuracy'))
      rows.append(
        {
          'task': task,
          'variant': label,
          'attention': name,
          'pretrain_steps': mine[0].get('pretrain_steps', 0) if mine else 0,
          'n': len(accs),
          'failed': sum(r['status'] == 'failed' for r in mine),
          'missing': sum(r['status'] == 'missing' for r in mine),
          'test_accuracy_mean_pct': test_mean,
          'test_accuracy_std_pct': test_std,
          'validation_accuracy_mean_pct': val_mean,
          'validation_accuracy_std_pct': val_std,
          'pretrain_accuracy_mean_pct': pre_mean,
          'pretrain_accuracy_std_pct': pre_std,
          'published_accuracy_pct': PUBLISHED.get(name, {}).get(task),
          'has_published': task in PUBLISHED.get(name, {}),
          'steps_per_sec': _mean(r.get('steps_per_sec') for r in ok),
          'peak_memory_bytes': _mean(r.get('peak_memory_bytes') for r in ok),
          'wall_time_sec': _mean(_total_wall_time(r) for r in ok),
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


def _total_wall_time(record: dict[str, Any]) -> float | None:
  """Seconds of a run, its pretraining stage included."""
  total = record.get('wall_time_sec')
  pretraining = record.get('pretrain_wall_time_sec')
  if _num(total) and _num(pretraining):
    return total + pretraining
  return total


def _percents(records, key: str) -> list[float]:
  """100 x the finite values of `key` in `records`."""
  return [100 * r[key] for r in records if _num(r.get(key))]


def _spread(values: Sequence[float]) -> tuple[float | None, float | None]:
  """(mean, sample std): None when there is no value (std: fewer than 2)."""
  mean = statistics.fmean(values) if values else None
  return mean, statistics.stdev(values) if len(values) > 1 else None


def _spread_text(mean: float | None, std: float | None) -> str:
  text = '-' if mean is None else f'{mean:.2f}'
  return text if std is None else f'{text} ± {std:.2f}'


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
    '| Task | Attention | n | Test accuracy (%) | Validation accuracy (%) '
    '| Pretraining accuracy (%) | LRA Table 1 (%) | Steps/s | Minutes '
    '| Peak memory | Failed | Not run |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for row in rows:
    acc = _spread_text(
      row['test_accuracy_mean_pct'], row['test_accuracy_std_pct']
    )
    val = _spread_text(
      row['validation_accuracy_mean_pct'], row['validation_accuracy_std_pct']
    )
    pre = _spread_text(
      row['pretrain_accuracy_mean_pct'], row['pretrain_accuracy_std_pct']
    )
    steps, seconds = row['steps_per_sec'], row['wall_time_sec']
    lines.append(
      f'| {_task_text(row)} | {row["variant"]} | {row["n"]} | {acc} | '
      f'{val} | {pre} | {_published_text(row)} | '
      f'{"-" if steps is None else f"{steps:.2f}"} | '
      f'{"-" if seconds is None else f"{seconds / 60:.1f}"} '
      f'| {report.format_bytes(row["peak_memory_bytes"])} | '
      f'{row["failed"] or ""} | {row["missing"] or ""} |'
    )
  caption = (
    f'Test accuracy of the best-validation checkpoint and its validation '
    f'accuracy, mean ± sample std over n seeds'
    f'{" (lite configs)" if lite else ""}; <variant>+pretrain<N>: after N '
    'steps of self-pretraining on the masked inputs, whose masked-token '
    'validation accuracy is the pretraining accuracy; LRA Table 1: '
    'Transformer = softmax, Performer = favor, Local Att. = local, Sparse '
    'Trans. = sparse, Linear Trans. = linear, the others by their names '
    '(FAIL: chance on Path-X). Steps/s (of the task), minutes (pretraining '
    'included) and peak memory: means over the seeds.'
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
      f'{", ".join(project_relative(p) for p in recorded_in)}.'
    )
  caption += '\n\n'
  errors = [
    f'- {row["task"]}/{row["attention"]}: {error}'
    for row in rows
    for error in row['errors']
  ]
  tail = '\nFailed runs:\n' + '\n'.join(errors) + '\n' if errors else ''
  return caption + '\n'.join(lines) + '\n' + tail


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
  plt = plots.pyplot()
  tasks = list(dict.fromkeys(r['task'] for r in rows))
  variants = list(dict.fromkeys(r['variant'] for r in rows))
  width = 0.8 / max(1, len(variants))
  fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(tasks), 4))
  by_key = {(r['task'], r['variant']): r for r in rows}
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
  plots.save_figure(fig, path)


class RefusedToWrite(RuntimeError):
  """Writing the outputs would lose results; nothing was written."""


def check_outputs(plan: Plan, records: Sequence[dict[str, Any]]) -> None:
  """Refuses outputs that would lose results.

  Raises:
    RefusedToWrite: every run of the grid is missing (nothing collected), or
      the results.json already in the output folder records a finished
      run that `records` does not have as finished.
  """
  if all(r['status'] == 'missing' for r in records):
    raise RefusedToWrite(
      f'collected nothing: none of the {len(records)} runs has results '
      f'under --root={plan.root} (or in a --previous file); is the root '
      f'right? Nothing was written to {plan.out}.'
    )
  path = os.path.join(plan.out, workdir.RESULTS_FILE)
  if not os.path.exists(path):
    return
  try:
    existing = read_previous(path, plan.lite)
  except ValueError as e:
    raise RefusedToWrite(
      f'{e}; {path} is not replaced by results of this grid.'
    ) from None
  finished = {record_key(r) for r in records if r['status'] == 'ok'}
  lost = [key for key in existing if key not in finished]
  if lost:
    names = ', '.join(f'{t}/{a}/seed{s}' for t, a, s in lost[:5])
    more = f' and {len(lost) - 5} more' if len(lost) > 5 else ''
    raise RefusedToWrite(
      f'{path} records {len(lost)} finished runs that this grid did not '
      f'produce ({names}{more}); writing would lose them. Give '
      f'--previous={path} to keep them, or another --out. Nothing was '
      'written.'
    )


def write_outputs(
  plan: Plan, records: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
  """Writes results.json, results.csv, results.md and accuracy.png.

  Raises:
    RefusedToWrite: see `check_outputs`; then nothing is written.
  """
  check_outputs(plan, records)
  rows = summarize(records, plan.tasks, plan.variants)
  table = markdown(rows, plan.lite)
  workdir.write_json(
    os.path.join(plan.out, workdir.RESULTS_FILE),
    {'lite': plan.lite, 'summary': rows, 'runs': list(records)},
  )
  report.write_text(os.path.join(plan.out, 'results.csv'), to_csv(rows))
  report.write_outputs(
    rows,
    table,
    png_path=os.path.join(plan.out, 'accuracy.png'),
    markdown_path=os.path.join(plan.out, 'results.md'),
    plot=plot,
  )
  return rows
