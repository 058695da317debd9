"""performer/bench/curves.py and scripts/plot_curves.py: metrics.jsonl to PNG.

Also the numbers of scripts/backward_compat.py (`curves.transfer_summary`).
"""

import importlib.util
import json
import pathlib

import pytest

from performer.bench import curves

_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / 'scripts'
_spec = importlib.util.spec_from_file_location(
  'plot_curves', _SCRIPT / 'plot_curves.py'
)
plot_curves = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plot_curves)


def _workdir(path: pathlib.Path, records: list[dict]) -> str:
  path.mkdir()
  lines = [json.dumps(r) for r in records]
  (path / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')
  return str(path)


RECORDS = [
  {'step': 10, 'split': 'train', 'loss': 3.0, 'accuracy': 0.1},
  {'step': 10, 'split': 'validation', 'loss': 2.5, 'accuracy': 0.2},
  {'step': 20, 'split': 'validation', 'loss': 2.0, 'accuracy': 0.3},
  # A resumed run logs step 20 again: the later record wins.
  {'step': 20, 'split': 'validation', 'loss': 1.9, 'accuracy': 0.35},
  {'step': 0, 'split': 'validation', 'loss': 4.0, 'accuracy': 0.05},
  {'step': 20, 'split': 'test', 'loss': 2.1, 'accuracy': 0.33},
]


def test_load_curve_sorts_steps_and_keeps_the_last_record(tmp_path):
  workdir = _workdir(tmp_path / 'run', RECORDS)
  steps, values = curves.load_curve(workdir, 'accuracy')
  assert steps == [0, 10, 20]
  assert values == [0.05, 0.2, 0.35]
  assert curves.load_curve(workdir, 'loss', 'train') == ([10], [3.0])


def test_errors_name_the_workdir_and_the_metrics_present(tmp_path):
  missing = tmp_path / 'nowhere'
  with pytest.raises(FileNotFoundError, match=str(missing)):
    curves.load_curve(str(missing), 'accuracy')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='metrics.jsonl'):
    curves.load_curve(str(tmp_path / 'empty'), 'accuracy')
  workdir = _workdir(tmp_path / 'run', RECORDS)
  with pytest.raises(ValueError, match='present: accuracy, loss$'):
    curves.load_curve(workdir, 'perplexity')


def test_main_writes_png_and_the_plotted_points(tmp_path, capsys):
  a = _workdir(tmp_path / 'a', RECORDS)
  b = _workdir(
    tmp_path / 'b',
    [{'step': 5, 'split': 'validation', 'accuracy': float('nan')}],
  )
  png, out = tmp_path / 'fig' / 'c.png', tmp_path / 'fig' / 'c.json'
  code = plot_curves.main(
    [a, b, '--labels=first,second', f'--png={png}', f'--json={out}']
  )
  assert code == 0
  assert png.read_bytes()[:4] == b'\x89PNG'
  record = json.loads(out.read_text())
  assert record['metric'] == 'accuracy'
  assert record['split'] == 'validation'
  assert [c['label'] for c in record['curves']] == ['first', 'second']
  assert record['curves'][0]['steps'] == [0, 10, 20]
  assert record['curves'][1]['values'] == [None]  # NaN (diverged) as null.
  assert plot_curves.main([a, '--metric=bpb', f'--png={png}']) == 1
  assert 'present: accuracy, loss' in capsys.readouterr().err


def test_runs_with_one_label_are_drawn_as_mean_and_spread(tmp_path):
  """Seeds of one setting: the mean and sample std at the common steps,
  against numpy; every run's values kept; a lone run passes through."""
  import numpy as np

  values = {'s0': [0.1, 0.2, 0.4], 's1': [0.2, 0.3, 0.5], 's2': [0.3, 0.1]}
  dirs = []
  for name, vals in values.items():
    records = [
      {'step': 10 * (k + 1), 'split': 'validation', 'accuracy': v}
      for k, v in enumerate(vals)
    ]
    dirs.append(_workdir(tmp_path / name, records))
  lone = _workdir(tmp_path / 'lone', RECORDS)
  out = tmp_path / 'c.json'
  code = plot_curves.main(
    [*dirs, lone, '--labels=seeds,seeds,seeds,lone']
    + [f'--png={tmp_path / "c.png"}', f'--json={out}']
  )
  assert code == 0
  seeds, single = json.loads(out.read_text())['curves']
  assert seeds['steps'] == [10, 20]  # Step 30 is missing from s2.
  table = np.array([v[:2] for v in values.values()])
  np.testing.assert_allclose(seeds['values'], table.mean(0), rtol=1e-12)
  np.testing.assert_allclose(seeds['std'], table.std(0, ddof=1), rtol=1e-12)
  assert seeds['n'] == 3
  assert [r['values'] for r in seeds['runs']] == table.tolist()
  assert single['label'] == 'lone' and 'std' not in single


def test_backward_compat_summary(tmp_path):
  """scripts/backward_compat.py's numbers, from two fake workdirs."""
  softmax = _workdir(
    tmp_path / 'softmax',
    [
      {'step': s, 'split': 'validation', 'accuracy': a}
      for s, a in ((100, 0.3), (200, 0.5), (300, 0.6))
    ],
  )
  favor = _workdir(
    tmp_path / 'favor',
    [
      {'step': s, 'split': 'validation', 'accuracy': a}
      for s, a in ((0, 0.07), (10, 0.4), (20, 0.58), (30, 0.595))
    ],
  )
  summary = curves.transfer_summary(softmax, favor, 'accuracy')
  assert summary['favor_after_swap'] == 0.07
  assert summary['softmax_best'] == 0.6
  assert summary['favor_reaches_95pct_step'] == 20  # 0.58 >= 0.57.
  assert summary['favor_reaches_99pct_step'] == 30  # 0.595 >= 0.594.
  no_swap = _workdir(
    tmp_path / 'scratch', [{'step': 10, 'split': 'validation', 'accuracy': 1}]
  )
  with pytest.raises(ValueError, match='no step-0 evaluation'):
    curves.transfer_summary(softmax, no_swap, 'accuracy')


def test_backward_compat_main_reuses_finished_runs(tmp_path, capsys):
  spec = importlib.util.spec_from_file_location(
    'backward_compat', _SCRIPT / 'backward_compat.py'
  )
  compat = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(compat)
  softmax = _workdir(
    tmp_path / 'softmax',
    [{'step': 100, 'split': 'validation', 'accuracy': 0.6}],
  )
  root = tmp_path / 'root'
  root.mkdir()
  _workdir(
    root / 'favor_finetune',
    [
      {'step': s, 'split': 'validation', 'accuracy': a}
      for s, a in ((0, 0.1), (10, 0.595))
    ],
  )
  (root / 'favor_finetune' / 'results.json').write_text('{}')
  png, out = tmp_path / 'c.png', tmp_path / 'c.json'
  code = compat.main(
    [
      f'--root={root}',
      f'--pretrained={softmax}',
      f'--png={png}',
      f'--json={out}',
    ]
  )
  assert code == 0
  assert 'reusing the finished run' in capsys.readouterr().out
  assert png.read_bytes()[:4] == b'\x89PNG'
  record = json.loads(out.read_text())
  assert record['summary']['favor_reaches_99pct_step'] == 10
  assert [c['steps'] for c in record['curves']] == [[100], [0, 10]]
