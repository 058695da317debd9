"""ListOps: validity, labels, determinism, splits, and the kept-tree law.

The labels are checked by a stack evaluator over the token strings, and the
distribution of the kept trees by a whole-tree, generate-then-reject
reference; both are written here, independently of performer.data.listops.
"""

import numpy as np
import pytest
from scipy import stats

from performer.data import build as data_build
from performer.data import listops

OPERATORS = ('[MIN', '[MAX', '[MED', '[SM')


def _evaluate(text: str) -> tuple[int, int, int]:
  """Stack evaluation of a token string; returns (value, length, depth).

  Asserts that brackets balance, arities are 2..10 and there is one root.
  """
  stack, results, depth = [], [], 0
  for token in text.split():
    if token in OPERATORS:
      stack.append((token, []))
      depth = max(depth, len(stack))
    elif token == ']':
      assert stack, f'unbalanced ] in {text}'
      op, args = stack.pop()
      assert 2 <= len(args) <= 10, f'{op} has {len(args)} arguments'
      if op == '[MIN':
        value = min(args)
      elif op == '[MAX':
        value = max(args)
      elif op == '[MED':
        value = int(np.floor(np.median(args)))
      else:
        value = int(np.sum(args)) % 10
      (stack[-1][1] if stack else results).append(value)
    else:
      assert token.isdigit() and len(token) == 1, token
      (stack[-1][1] if stack else results).append(int(token))
      depth = max(depth, len(stack) + 1)
  assert not stack and len(results) == 1, f'not one tree: {text}'
  return results[0], len(text.split()), depth


def test_tokens_and_vocabulary():
  text = '[MAX 2 9 [MIN 4 7 ] 0 ]'
  ids = listops.tokenize(text)
  assert ids.dtype == np.int32 and ids.min() >= 1
  assert ids.max() < listops.VOCAB_SIZE == 16
  assert listops.to_string(ids) == text
  assert _evaluate(text) == (9, 9, 3)  # value, tokens, depth
  with pytest.raises(ValueError, match="'FOO'"):
    listops.tokenize('[MAX 1 FOO ]')


def test_generate_is_deterministic_for_a_seed():
  a = listops.generate(40, seed=0, min_length=10, max_length=60)
  assert a == listops.generate(40, seed=0, min_length=10, max_length=60)
  assert listops.generate(15, seed=0, min_length=10, max_length=60) == a[:15]
  b = listops.generate(40, seed=1, min_length=10, max_length=60)
  assert len({t for t, _ in a} & {t for t, _ in b}) < 5


@pytest.mark.parametrize(
  'min_length,max_length,count', [(10, 60, 300), (500, 2000, 8)]
)
def test_examples_are_valid_and_labels_agree(min_length, max_length, count):
  examples = listops.generate(count, 3, min_length, max_length)
  assert len(examples) == count
  for text, label in examples:
    value, length, depth = _evaluate(text)
    assert label == value, text
    assert min_length < length < max_length
    # The root is depth 1 and nodes at depth 10 are leaves.
    assert depth <= 10
    assert text.split()[0] in OPERATORS
  assert len({t for t, _ in examples}) == count


def test_unique_when_duplicates_are_common():
  # Lengths 1 and 4 only: 10 leaves and 4 * 10 * 10 pairs, 410 trees.
  examples = listops.generate(350, 0, min_length=0, max_length=5)
  texts = [t for t, _ in examples]
  assert len(set(texts)) == 350
  assert {len(t.split()) for t in texts} == {1, 4}


def test_bad_length_window():
  with pytest.raises(ValueError, match='min_length=1 < length < max_length=4'):
    listops.generate(1, 0, min_length=1, max_length=4)


def _whole_trees(rng, num_trees: int) -> dict:
  """Draws complete trees level by level (never stopped early).

  Returns, per tree: length, value, depth (root 1) and root operator
  (index into OPERATORS, -1 for a leaf).
  """
  tree = np.arange(num_trees)  # Tree of each node of this level.
  levels = []
  for depth in range(1, 11):
    n = len(tree)
    is_op = rng.random(n) < 0.25 if depth < 10 else np.zeros(n, bool)
    arity = np.where(is_op, rng.integers(2, 11, n), 0)
    levels.append(
      dict(tree=tree, is_op=is_op, arity=arity, op=rng.integers(0, 4, n))
    )
    levels[-1]['value'] = rng.integers(0, 10, n)  # Leaves keep it.
    tree = np.repeat(tree, arity)
    if not len(tree):
      break
  # Values bottom up: children of level d are contiguous, in parent order.
  for upper, lower in zip(levels[-2::-1], levels[:0:-1], strict=True):
    ops = np.flatnonzero(upper['is_op'])
    starts = np.concatenate([[0], np.cumsum(upper['arity'][ops])[:-1]])
    child = lower['value']
    parent = np.repeat(np.arange(len(ops)), upper['arity'][ops])
    ranked = child[np.lexsort((child, parent))]
    lo = starts + (upper['arity'][ops] - 1) // 2
    hi = starts + upper['arity'][ops] // 2
    candidates = np.stack(
      [
        np.minimum.reduceat(child, starts),
        np.maximum.reduceat(child, starts),
        (ranked[lo] + ranked[hi]) // 2,
        np.add.reduceat(child, starts) % 10,
      ]
    )
    op = upper['op'][ops]
    upper['value'][ops] = candidates[op, np.arange(len(ops))]
  length = np.zeros(num_trees, np.int64)
  depth = np.zeros(num_trees, np.int64)
  for d, level in enumerate(levels, start=1):
    length += np.bincount(
      level['tree'], weights=1 + level['is_op'], minlength=num_trees
    ).astype(np.int64)
    depth[level['tree']] = d
  root = levels[0]
  return {
    'length': length,
    'value': root['value'],
    'depth': depth,
    'root': np.where(root['is_op'], root['op'], -1),
  }


def _kept(rng, count, min_length, max_length) -> dict:
  """`count` whole trees drawn and rejected by the length window."""
  kept = []
  while sum(len(k['length']) for k in kept) < count:
    trees = _whole_trees(rng, 50_000)
    keep = (min_length < trees['length']) & (trees['length'] < max_length)
    kept.append({k: v[keep] for k, v in trees.items()})
  return {k: np.concatenate([t[k] for t in kept])[:count] for k in kept[0]}


def _homogeneity_p(a: np.ndarray, b: np.ndarray) -> float:
  """Chi-square test that two samples share one law over their values.

  Values seen fewer than 10 times in all are pooled into one bin.
  """
  values = np.union1d(a, b)
  table = np.array([[np.sum(s == v) for v in values] for s in (a, b)])
  rare = table.sum(0) < 10
  if rare.any():
    table = np.concatenate(
      [table[:, ~rare], table[:, rare].sum(1, keepdims=True)], axis=1
    )
  return stats.chi2_contingency(table).pvalue


def _statistics(examples) -> dict:
  out = {'length': [], 'value': [], 'depth': [], 'root': []}
  for text, label in examples:
    value, length, depth = _evaluate(text)
    assert value == label
    out['length'].append(length)
    out['value'].append(label)
    out['depth'].append(depth)
    out['root'].append(OPERATORS.index(text.split()[0]))
  return {k: np.array(v) for k, v in out.items()}


def test_kept_trees_follow_the_whole_tree_reference():
  """Stopping a tree early does not change the law of the kept trees.

  Fixed seeds, 6,000 kept trees on each side, 10 < length < 40: a window
  where 15% of the drawn trees reach length 40 and are abandoned (four for
  every kept tree), so a bias from stopping early would show. Each of the
  histograms of length, value, depth and root operator must pass a
  chi-square homogeneity test at p > 0.001 (at these seeds the smallest p
  is 0.16, for the value).
  """
  count, lo, hi = 6_000, 10, 40
  ours = _statistics(listops.generate(count, 7, lo, hi))
  reference = _kept(np.random.default_rng(2024), count, lo, hi)
  for key in ours:
    p = _homogeneity_p(ours[key], reference[key])
    assert p > 1e-3, f'{key}: p = {p:.2g}'


def _config(tmp_path, **options):
  config = {
    'name': 'listops',
    'data_dir': str(tmp_path),
    'num_train': 40,
    'num_validation': 8,
    'num_test': 6,
    'min_length': 10,
    'max_length': 60,
    'seq_len': 64,
  }
  config.update(options)
  return config


def _rows(ds, split):
  """(tokens without padding, label) of every real row of `split`."""
  rows = []
  for batch in ds.eval_batches(split):
    for inputs, mask, target, weight in zip(
      batch['inputs'],
      batch['mask'],
      batch['targets'],
      batch['weights'],
      strict=True,
    ):
      if weight:
        np.testing.assert_array_equal(mask, inputs > 0)
        rows.append((listops.to_string(inputs[mask]), int(target)))
  return rows


def test_create_batches_splits_and_cache(tmp_path, monkeypatch):
  ds = data_build.create(_config(tmp_path), batch_size=4, seed=0)
  assert (ds.vocab_size, ds.num_classes, ds.seq_len) == (16, 10, 64)
  assert ds.eval_splits == ('train', 'validation', 'test')
  batch = next(iter(ds.train_loader()))
  assert batch['inputs'].shape == (4, 64) and batch['inputs'].dtype == np.int32
  assert batch['mask'].shape == (4, 64) and batch['mask'].dtype == bool
  assert batch['targets'].shape == (4,) and batch['targets'].dtype == np.int32
  assert batch['weights'].dtype == np.float32
  np.testing.assert_array_equal(batch['mask'], batch['inputs'] > 0)

  rows = {s: _rows(ds, s) for s in ('validation', 'test', 'train')}
  assert [len(r) for r in rows.values()] == [8, 6, 40]
  # The fixed set, cut in order: validation, test, train; no tree twice.
  everything = rows['validation'] + rows['test'] + rows['train']
  assert everything == listops.generate(54, listops.DATA_SEED, 10, 60)
  assert len({t for t, _ in everything}) == 54

  # A second build reads the cache instead of generating.
  def fail(*args):
    raise AssertionError('regenerated')

  monkeypatch.setattr(listops, '_kept_trees', fail)
  again = data_build.create(_config(tmp_path), batch_size=4, seed=1)
  assert _rows(again, 'test') == rows['test']


def test_seq_len_shorter_than_the_longest_tree(tmp_path):
  with pytest.raises(ValueError, match='seq_len=50.*max_length=60'):
    data_build.create(_config(tmp_path, seq_len=50), batch_size=4, seed=0)
