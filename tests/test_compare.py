"""Tests of scripts/compare.py on fake workdirs; no training runs.

The workdirs hold results.json files written here in the trainer's format;
the subprocess runner is replaced by a fake that writes them (or fails).
"""

import csv
import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest

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

  monkeypatch.setattr(script, 'run_command', fake_runner)
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

  monkeypatch.setattr(script, 'run_command', fake_runner)
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
  monkeypatch.setattr(script, 'run_command', pytest.fail)
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

  monkeypatch.setattr(script, 'run_command', fake_runner)
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
  monkeypatch.setattr(script, 'run_command', pytest.fail)
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
