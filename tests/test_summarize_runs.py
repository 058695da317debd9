"""Tests of scripts/summarize_runs.py on hand-written results.json files."""

import importlib.util
import json
import os
import statistics

import pytest

from performer import workdir as workdir_lib

PATH = os.path.join(
  os.path.dirname(__file__), '..', 'scripts', 'summarize_runs.py'
)
spec = importlib.util.spec_from_file_location('summarize_runs', PATH)
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


def _runs(root, label, values):
  for seed, value in enumerate(values):
    workdir = root / label / f'seed{seed}'
    workdir.mkdir(parents=True)
    workdir_lib.write_json(
      str(workdir / 'results.json'), {'test/loss': value, 'step': 10}
    )


def test_mean_and_sample_std_per_group(tmp_path, capsys):
  _runs(tmp_path, 'a', [1.0, 2.0, 4.0])
  _runs(tmp_path, 'b', [3.0])
  (tmp_path / 'a' / 'unfinished').mkdir()  # No results.json: not counted.
  out = tmp_path / 'summary.json'
  rows = script.main(
    [
      f'--group=a={tmp_path}/a/*',
      f'--group=b={tmp_path}/b/*',
      '--metrics=test/loss',
      f'--json={out}',
    ]
  )
  a, b = rows
  assert a['test/loss']['n'] == 3
  assert a['test/loss']['mean'] == pytest.approx(7 / 3)
  assert a['test/loss']['std'] == pytest.approx(statistics.stdev([1, 2, 4]))
  assert b['test/loss']['std'] is None
  assert json.loads(out.read_text())['rows'][0]['test/loss']['values'] == [
    1.0,
    2.0,
    4.0,
  ]
  assert '| a | 2.3333 ± 1.5275 (n=3) |' in capsys.readouterr().out


@pytest.mark.parametrize(
  'args, message',
  [
    (['--group=a'], '--group must be LABEL=PATTERN'),
    (
      ['--group=a=/nowhere/*'],
      "no finished run (results.json) matches '/nowhere/*'",
    ),
    (
      ['--metrics=test/accuracy'],
      "has no 'test/accuracy'; it has ['test/loss']",
    ),
  ],
)
def test_bad_requests_name_the_problem(tmp_path, capsys, args, message):
  _runs(tmp_path, 'a', [1.0])
  if not any(a.startswith('--group') for a in args):
    args = [f'--group=a={tmp_path}/a/*', *args]
  out = tmp_path / 'summary.json'
  with pytest.raises(SystemExit):
    script.main([*args, f'--json={out}'])
  assert message in capsys.readouterr().err
  assert not out.exists()
