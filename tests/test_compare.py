"""Tests of scripts/compare.py and performer/bench/lra_grid.py; no training.

The workdirs hold results.json files written here in the trainer's format;
the subprocess runner is replaced by a fake that writes them (or fails).
"""

import csv
import importlib.util
import json
import os
import pathlib
import sys

import numpy as np
import pytest

from performer.bench import lra_grid
from performer.data import lra_standins

_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / 'scripts' / 'compare.py'
_spec = importlib.util.spec_from_file_location('compare', _SCRIPT)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

# Test accuracies (fractions) per (task, attention), one per seed.
ACCURACIES = {
  ('listops', 'softmax'): [0.31, 0.36, 0.38],
  ('listops', 'favor'): [0.21, 0.19, 0.30],
  ('pathx', 'softmax'): [0.5, 0.52, 0.49],
  ('pathx', 'favor'): [0.55, 0.51, 0.5],
}


def _results(accuracy: float, seed: int) -> dict:
  """A results.json as performer.train writes it."""
  return {
    'step': 100,
    'best_step': 80,
    'train/loss': 1.0,
    'train/accuracy': accuracy,
    'validation/loss': 1.1,
    'validation/accuracy': accuracy - 0.01,
    'test/loss': 1.2,
    'test/accuracy': accuracy,
    'train/steps_per_sec': 10.0 + seed,
    'peak_memory_bytes': 2**20 * (1 + seed),
    'wall_time_sec': 60.0,
    'checkpoint_dir': '/nowhere',
  }


def _write_results(root, task, name, seed, accuracy):
  workdir = root / task / name / f'seed{seed}'
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'results.json').write_text(json.dumps(_results(accuracy, seed)))


def _argv(root, out, *extra, tasks='listops,pathx', seeds='0,1,2'):
  return [
    f'--tasks={tasks}',
    '--attention=softmax,favor',
    f'--seeds={seeds}',
    f'--root={root}',
    f'--out={out}',
    *extra,
  ]


def _workdir_of(command) -> pathlib.Path:
  (arg,) = [a for a in command if a.startswith('--workdir=')]
  return pathlib.Path(arg.removeprefix('--workdir='))


def test_collect_only_means_stds_and_published(tmp_path):
  root, out = tmp_path / 'runs', tmp_path / 'out'
  for (task, name), accs in ACCURACIES.items():
    for seed, acc in enumerate(accs):
      _write_results(root, task, name, seed, acc)

  records = script.main(_argv(root, out, '--collect_only'))

  assert len(records) == 12
  assert all(r['status'] == 'ok' for r in records)
  summary = json.loads((out / 'results.json').read_text())['summary']
  with open(out / 'results.csv') as f:
    rows = {(r['task'], r['attention']): r for r in csv.DictReader(f)}
  for row in summary:
    accs = 100 * np.array(ACCURACIES[row['task'], row['attention']])
    assert row['n'] == 3
    # Reference: numpy mean and sample std (ddof=1), in %.
    assert row['test_accuracy_mean_pct'] == pytest.approx(accs.mean(), 1e-12)
    assert row['test_accuracy_std_pct'] == pytest.approx(
      accs.std(ddof=1), 1e-12
    )
    # _write_results puts validation 0.01 below test.
    assert row['validation_accuracy_mean_pct'] == pytest.approx(
      accs.mean() - 1.0, 1e-12
    )
    assert row['validation_accuracy_std_pct'] == pytest.approx(
      accs.std(ddof=1), 1e-9
    )
    assert row['steps_per_sec'] == pytest.approx(11.0, 1e-12)  # 10, 11, 12
    assert row['peak_memory_bytes'] == pytest.approx(2 * 2**20, 1e-12)
    csv_row = rows[row['task'], row['attention']]
    assert float(csv_row['test_accuracy_mean_pct']) == pytest.approx(
      accs.mean(), 1e-12
    )
    assert csv_row['n'] == '3'
  assert rows['listops', 'softmax']['published_accuracy_pct'] == '36.37'
  assert rows['listops', 'favor']['published_accuracy_pct'] == '18.01'
  assert rows['pathx', 'favor']['published_accuracy_pct'] == 'FAIL'
  table = (out / 'results.md').read_text()
  for text in (
    '36.37',
    '18.01',
    'FAIL',
    f'{100 * np.mean([0.31, 0.36, 0.38]):.2f}',
  ):
    assert text in table
  assert (out / 'accuracy.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_finished_runs_are_not_rerun(tmp_path, monkeypatch):
  root, out = tmp_path / 'runs', tmp_path / 'out'
  for name in ('softmax', 'favor'):
    _write_results(root, 'listops', name, 0, 0.4)
  calls = []

  def fake_runner(command, log_path):
    calls.append(list(command))
    workdir = _workdir_of(command)
    assert pathlib.Path(log_path).parent == workdir
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'results.json').write_text(json.dumps(_results(0.3, 1)))
    return 0

  monkeypatch.setattr(lra_grid, 'run_command', fake_runner)
  records = script.main(
    _argv(
      root,
      out,
      '--lite',
      '--override=listops:data.num_train=64',
      '--override=config.log_every_steps=7',
      '--override=retrieval:data.path=/x',
      tasks='listops',
      seeds='0,1',
    )
  )

  ran = sorted(_workdir_of(c).relative_to(root).as_posix() for c in calls)
  assert ran == ['listops/favor/seed1', 'listops/softmax/seed1']
  (command,) = [c for c in calls if 'favor' in _workdir_of(c).parts]
  assert command[2].endswith('configs/lra_listops.py:attention=favor,lite')
  assert '--config.seed=1' in command
  assert '--config.data.num_train=64' in command
  assert '--config.log_every_steps=7' in command
  assert not any('data.path' in a for a in command)  # Another task's.
  assert [r['status'] for r in records] == ['ok'] * 4


def test_failed_run_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
  root, out = tmp_path / 'runs', tmp_path / 'out'

  def fake_runner(command, log_path):
    workdir = _workdir_of(command)
    workdir.mkdir(parents=True, exist_ok=True)
    if 'favor' in workdir.parts:
      pathlib.Path(log_path).write_text(
        'Traceback (most recent call last):\n  File "x.py"\n'
        'FileNotFoundError: no ListOps data in /nowhere\nexiting\n'
      )
      return 1
    (workdir / 'results.json').write_text(json.dumps(_results(0.3, 0)))
    return 0

  monkeypatch.setattr(lra_grid, 'run_command', fake_runner)
  records = script.main(_argv(root, out, tasks='listops', seeds='0'))

  by_name = {r['attention']: r for r in records}
  assert by_name['softmax']['status'] == 'ok'
  assert by_name['favor']['status'] == 'failed'
  message = 'FileNotFoundError: no ListOps data in /nowhere'
  assert by_name['favor']['error'] == message
  assert message in (out / 'results.md').read_text()
  # Reading again reports the failure from the workdir.
  again = script.main(
    _argv(root, out, '--collect_only', tasks='listops', seeds='0')
  )
  assert [r['status'] for r in again] == ['ok', 'failed']
  summary = json.loads((out / 'results.json').read_text())['summary']
  favor = [row for row in summary if row['attention'] == 'favor'][0]
  assert (favor['n'], favor['failed'], favor['test_accuracy_mean_pct']) == (
    0,
    1,
    None,
  )


def test_collect_only_reports_missing_runs(tmp_path):
  root, out = tmp_path / 'runs', tmp_path / 'out'
  _write_results(root, 'listops', 'softmax', 0, 0.5)
  records = script.main(
    _argv(root, out, '--collect_only', tasks='listops', seeds='0')
  )
  assert [r['status'] for r in records] == ['ok', 'missing']
  assert not (root / 'listops' / 'favor').exists()  # Nothing was run.
  # A run not made yet is not counted as failed.
  favor_row = next(
    line
    for line in (out / 'results.md').read_text().splitlines()
    if line.startswith('| listops | favor |')
  )
  assert favor_row.endswith('|  | 1 |'), favor_row


@pytest.mark.parametrize(
  'flag, words',
  [
    ('--tasks=listops,listop', ["'listop'", 'pathfinder']),
    ('--attention=softmax,fast', ["'fast'", 'favor', 'sparse']),
    ('--seeds=0,one', ["'one'"]),
    ('--override=imagenet:data.path=/x', ["'imagenet'", 'retrieval']),
  ],
)
def test_bad_flags_fail_before_running(
  tmp_path, capsys, monkeypatch, flag, words
):
  monkeypatch.setattr(lra_grid, 'run_command', pytest.fail)
  with pytest.raises(SystemExit) as info:
    script.main([f'--root={tmp_path / "runs"}', f'--out={tmp_path}/o', flag])
  assert info.value.code == 2
  err = capsys.readouterr().err
  for word in words:
    assert word in err
  assert not os.path.exists(tmp_path / 'o')


def test_root_that_is_a_file_fails(tmp_path, capsys):
  root = tmp_path / 'runs'
  root.write_text('not a folder')
  with pytest.raises(SystemExit):
    script.main([f'--root={root}', f'--out={tmp_path}/o', '--collect_only'])
  assert f'--root={root} is a file' in capsys.readouterr().err


def test_runs_on_standin_data_are_marked(tmp_path):
  root, out = tmp_path / 'runs', tmp_path / 'out'
  standin, real = tmp_path / 'standin_aan', tmp_path / 'real_aan'
  lra_standins.write_aan(str(standin))
  real.mkdir()  # The release's files would be here; no mark file.
  for seed in (0, 1):
    _write_results(root, 'retrieval', 'softmax', seed, 0.6)
    config = {'data': {'name': 'aan', 'path': str(standin)}}
    workdir = root / 'retrieval' / 'softmax' / f'seed{seed}'
    (workdir / 'config.json').write_text(json.dumps(config))
  for seed in (0, 1):
    _write_results(root, 'retrieval', 'favor', seed, 0.6)
    config = {'data': {'name': 'aan', 'path': str(real)}}
    workdir = root / 'retrieval' / 'favor' / f'seed{seed}'
    (workdir / 'config.json').write_text(json.dumps(config))

  records = script.main(
    _argv(root, out, '--collect_only', tasks='retrieval', seeds='0,1')
  )

  marks = {(r['attention'], r['seed']): r['standin_data'] for r in records}
  assert marks == {
    ('softmax', 0): True,
    ('softmax', 1): True,
    ('favor', 0): False,
    ('favor', 1): False,
  }
  with open(out / 'results.csv') as f:
    rows = {r['attention']: r for r in csv.DictReader(f)}
  assert rows['softmax']['standin_data'] == 'True'
  assert rows['favor']['standin_data'] == 'False'
  table = (out / 'results.md').read_text()
  assert '| retrieval (stand-in) | softmax |' in table
  assert '| retrieval | favor |' in table
  assert 'not comparable' in table


def test_previous_results_count_as_finished(tmp_path, monkeypatch):
  # A first grid finished some runs; its workdirs are then gone.
  first_root, first_out = tmp_path / 'first', tmp_path / 'first_out'
  for seed, acc in enumerate([0.31, 0.36]):
    _write_results(first_root, 'listops', 'softmax', seed, acc)
  _write_results(first_root, 'listops', 'favor', 0, 0.21)
  script.main(
    _argv(first_root, first_out, '--collect_only', tasks='listops', seeds='0,1')
  )
  previous = first_out / 'results.json'
  # The second grid: a new root, one workdir of its own that wins over the
  # recorded run of the same key.
  root, out = tmp_path / 'runs', tmp_path / 'out'
  _write_results(root, 'listops', 'softmax', 1, 0.40)
  calls = []

  def fake_runner(command, log_path):
    calls.append(_workdir_of(command).relative_to(root).as_posix())
    workdir = _workdir_of(command)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'results.json').write_text(json.dumps(_results(0.25, 1)))
    return 0

  monkeypatch.setattr(lra_grid, 'run_command', fake_runner)
  records = script.main(
    _argv(root, out, f'--previous={previous}', tasks='listops', seeds='0,1')
  )

  assert calls == ['listops/favor/seed1']  # The one no one has finished.
  by_key = {(r['attention'], r['seed']): r for r in records}
  assert by_key['softmax', 0]['recorded_in'] == str(previous)
  assert by_key['softmax', 0]['test_accuracy'] == 0.31
  assert 'recorded_in' not in by_key['softmax', 1]  # Its own workdir.
  assert by_key['softmax', 1]['test_accuracy'] == 0.40
  assert by_key['favor', 0]['recorded_in'] == str(previous)
  summary = {
    r['attention']: r
    for r in json.loads((out / 'results.json').read_text())['summary']
  }
  assert summary['softmax']['test_accuracy_mean_pct'] == pytest.approx(
    100 * np.mean([0.31, 0.40]), 1e-12
  )
  assert summary['favor']['test_accuracy_mean_pct'] == pytest.approx(
    100 * np.mean([0.21, 0.25]), 1e-12
  )
  assert (summary['softmax']['recorded'], summary['favor']['recorded']) == (
    1,
    1,
  )
  assert (
    '2 of the runs were read from earlier results files'
    in (out / 'results.md').read_text()
  )
  # Chained: the new file keeps naming the file that first recorded a run.
  again = script.main(
    _argv(
      tmp_path / 'empty',
      tmp_path / 'out2',
      f'--previous={out / "results.json"}',
      '--collect_only',
      tasks='listops',
      seeds='0,1',
    )
  )
  assert [r['status'] for r in again] == ['ok'] * 4
  assert again[0]['recorded_in'] == str(previous)


@pytest.mark.parametrize(
  'content, words',
  [
    (None, ['cannot read it']),
    ('{', ['not JSON']),
    ('{"summary": []}', ["'lite'", "'runs'"]),
    ('{"lite": true, "runs": []}', ['lite=True', 'lite=False']),
  ],
)
def test_bad_previous_fails_before_running(
  tmp_path, capsys, monkeypatch, content, words
):
  monkeypatch.setattr(lra_grid, 'run_command', pytest.fail)
  path = tmp_path / 'old.json'
  if content is not None:
    path.write_text(content)
  with pytest.raises(SystemExit) as info:
    script.main(_argv(tmp_path / 'runs', tmp_path / 'o', f'--previous={path}'))
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert f'--previous={path}' in err
  for word in words:
    assert word in err
  assert not os.path.exists(tmp_path / 'o')


def _output_bytes(out) -> dict:
  names = ('results.json', 'results.csv', 'results.md', 'accuracy.png')
  return {name: (out / name).read_bytes() for name in names}


def test_collecting_nothing_is_an_error_and_writes_nothing(tmp_path, capsys):
  root, out = tmp_path / 'runs', tmp_path / 'out'
  for seed in (0, 1):
    _write_results(root, 'listops', 'softmax', seed, 0.4)
    _write_results(root, 'listops', 'favor', seed, 0.3)
  script.main(_argv(root, out, '--collect_only', tasks='listops', seeds='0,1'))
  before = _output_bytes(out)

  # A misspelt root holds no workdirs: every run is missing.
  misspelt = tmp_path / 'rnus'
  with pytest.raises(SystemExit) as info:
    script.main(
      _argv(misspelt, out, '--collect_only', tasks='listops', seeds='0,1')
    )

  assert info.value.code not in (0, None)
  assert 'collected nothing' in str(info.value.code)
  assert _output_bytes(out) == before
  # Into a fresh folder too: nothing collected, nothing written.
  with pytest.raises(SystemExit):
    script.main(_argv(misspelt, tmp_path / 'fresh', '--collect_only'))
  assert not (tmp_path / 'fresh').exists()


def test_outputs_never_lose_finished_runs(tmp_path):
  root, out = tmp_path / 'runs', tmp_path / 'out'
  for seed in (0, 1):
    _write_results(root, 'listops', 'softmax', seed, 0.4 + seed / 10)
  first = [
    '--tasks=listops',
    '--attention=softmax',
    '--seeds=0,1',
    f'--root={root}',
    f'--out={out}',
    '--collect_only',
  ]
  script.main(first)
  before = _output_bytes(out)
  # A second root that holds only seed 0: seed 1 would be lost.
  other = tmp_path / 'other'
  _write_results(other, 'listops', 'softmax', 0, 0.45)
  argv = [
    '--tasks=listops',
    '--attention=softmax',
    '--seeds=0,1',
    f'--root={other}',
    f'--out={out}',
    '--collect_only',
  ]
  with pytest.raises(SystemExit) as info:
    script.main(argv)
  message = str(info.value.code)
  assert 'listops/softmax/seed1' in message
  assert '--previous=' in message
  assert _output_bytes(out) == before
  # The other --lite setting would replace every finished run.
  with pytest.raises(SystemExit):
    script.main(argv + ['--lite'])
  assert _output_bytes(out) == before

  # Keeping them with --previous: seed 0 from the new root, 1 recorded.
  records = script.main(argv + [f'--previous={out / "results.json"}'])
  assert [(r['seed'], r['test_accuracy']) for r in records] == [
    (0, 0.45),
    (1, 0.5),
  ]


def test_recorded_paths_are_relative(tmp_path):
  root, out = tmp_path / 'runs', tmp_path / 'out'
  _write_results(root, 'listops', 'softmax', 0, 0.4)
  (record,) = script.main(
    [
      '--tasks=listops',
      '--attention=softmax',
      '--seeds=0',
      f'--root={root}',
      f'--out={out}',
      '--collect_only',
    ]
  )
  # A root outside the project: the workdir is named relative to it.
  assert record['workdir'] == 'listops/softmax/seed0'
  assert record['command'].startswith(
    'python scripts/train.py --config=configs/lra_listops.py:attention='
    'softmax --config.seed=0 --workdir='
  )
  assert sys.executable not in record['command']
  assert lra_grid.PROJECT_ROOT not in json.dumps(record)

  # A root inside the project: every path relative to the project root.
  inside = os.path.join(lra_grid.PROJECT_ROOT, 'workdirs', 'lra_test')
  plan = lra_grid.make_plan(
    tasks='listops',
    variants='favor',
    seeds='1',
    lite=True,
    root=inside,
    out=str(out),
  )
  (run,) = plan.runs
  assert run.name == 'workdirs/lra_test/listops/favor/seed1'
  assert run.recorded_command() == (
    'python scripts/train.py --config=configs/lra_listops.py:'
    'attention=favor,lite --config.seed=1 '
    '--workdir=workdirs/lra_test/listops/favor/seed1'
  )
  assert not os.path.exists(inside)  # Planning creates nothing.


def test_previous_records_with_absolute_paths_are_made_relative(tmp_path):
  project = lra_grid.PROJECT_ROOT
  workdir = f'{project}/workdirs/lra_lite/listops/softmax/seed0'
  old = {
    'task': 'listops',
    'attention': 'softmax',
    'seed': 0,
    'workdir': workdir,
    'command': (
      f'{project}/.venv/bin/python {project}/scripts/train.py '
      f'--config={project}/configs/lra_listops.py:attention=softmax,lite '
      f'--config.seed=0 --workdir={workdir}'
    ),
    'status': 'ok',
    'test_accuracy': 0.343,
    'recorded_in': f'{project}/docs/lra/results.json',
  }
  previous = tmp_path / 'old.json'
  previous.write_text(json.dumps({'lite': True, 'runs': [old]}))
  out = tmp_path / 'out'

  (record,) = script.main(
    [
      '--tasks=listops',
      '--attention=softmax',
      '--seeds=0',
      '--lite',
      f'--root={tmp_path / "runs"}',
      f'--out={out}',
      f'--previous={previous}',
      '--collect_only',
    ]
  )

  assert record['workdir'] == 'workdirs/lra_lite/listops/softmax/seed0'
  assert record['command'] == (
    'python scripts/train.py --config=configs/lra_listops.py:attention='
    'softmax,lite --config.seed=0 '
    '--workdir=workdirs/lra_lite/listops/softmax/seed0'
  )
  assert record['recorded_in'] == 'docs/lra/results.json'
  assert record['test_accuracy'] == 0.343
  assert project not in (out / 'results.json').read_text()


def test_committed_lra_results_hold_no_absolute_paths():
  path = pathlib.Path(lra_grid.PROJECT_ROOT) / 'docs' / 'lra' / 'results.json'
  data = json.loads(path.read_text())
  for record in data['runs']:
    for key in ('workdir', 'command', 'recorded_in'):
      value = record.get(key) or ''
      assert not any(word.startswith('/') for word in value.split(' ')), (
        key,
        value,
      )
      assert not any('=/' in word for word in value.split(' ')), (key, value)
  for row in data['summary']:
    assert not any(p.startswith('/') for p in row['recorded_in']), row
