"""LRA ListOps: generated nested list operations, seeded and cached.

An example is a tree of operators over digits, written in prefix form,
e.g. `[MAX 2 9 [MIN 4 7 ] 0 ]`, and its value (10 classes). The trees
follow the LRA generator (google-research/long-range-arena,
lra_benchmarks/data/listops.py) and the definition in published.md:

* Operators `[MIN`, `[MAX`, `[MED` (median, rounded down: the floor of the
  mean of the two middle values for an even count) and `[SM` (sum modulo
  10), each closed by `]`; leaves are the digits 0-9.
* The root has depth 1. A node at depth < 10 is a leaf with probability
  0.75, otherwise an operator with a uniform number of arguments in [2, 10]
  and a uniform operator; a node at depth 10 is always a leaf. As in the
  original, the root is not forced to be an operator: a leaf root (length
  1) is simply rejected by the length window whenever min_length >= 1.
* Length counts a leaf as 1 and an operator as 2 (its open and close
  tokens), so it is the number of tokens. Trees with
  min_length < length < max_length are kept; duplicates are dropped.

Speed. Keeping 100,000 trees means drawing about 1.1 million trees of 150
million tokens in all, whatever the implementation; the original's nested
tuples, built, hashed, printed and evaluated recursively, cost microseconds
per token, hence hours. Here each node is one integer from a block of
pre-drawn ones, the tokens are a flat list and each operator's value is
computed as it closes, so the full set takes about two minutes on one core.
A tree is also abandoned as soon as its running length reaches max_length:
its final length could only be larger, so it would have been rejected
anyway, and the next tree starts from fresh random numbers, so each kept
tree is still a draw of the original process conditioned on its length
window: the distribution of kept trees is unchanged (tests/test_listops.py
compares it with a whole-tree generate-then-reject reference). At the
published window that saves only about 5% (1% of the trees reach length
2000), but it bounds the work per tree.

Determinism. One numpy random stream per seed drives the draws, so
`generate(n, seed)` is the first n unique kept trees, in draw order (a
prefix of `generate(m, seed)` for m > n). `create` generates one set with
`DATA_SEED` and cuts it in order into validation, test and train (the
evaluation splits first, so that a smaller train set keeps the same
validation and test examples), caches it on disk and reuses it.

Tokens: 0 is padding, 1-10 the digits 0-9, 11-14 the operators, 15 `]`
(vocabulary 16); strings are split on whitespace, as the LRA pipeline does.
"""

import fcntl
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from performer.data import classification

OPERATORS = ('[MIN', '[MAX', '[MED', '[SM')
END = ']'
VOCAB = ('<pad>', *map(str, range(10)), *OPERATORS, END)
TOKEN_IDS = {token: i for i, token in enumerate(VOCAB)}
VOCAB_SIZE = len(VOCAB)
NUM_CLASSES = 10
MAX_DEPTH = 10
# The published set: 96,000 / 2,000 / 2,000 trees of 500 < length < 2000.
SPLIT_SIZES = {'train': 96_000, 'validation': 2_000, 'test': 2_000}
# The evaluation splits come first in the generated order.
SPLIT_ORDER = ('validation', 'test', 'train')
# The dataset is the same for every training seed.
DATA_SEED = 0
# Part of the cache key: bump when the generated trees change.
GENERATOR_VERSION = 1

_DIGIT = 1  # Id of the digit 0.
_OPERATOR = 11  # Id of [MIN.
_END = 15
# Each node is decided by one integer x uniform in [0, 720): a leaf when
# x < 540 (probability 3/4), else an operator whose 36 (arity, operator)
# pairs share the other 180 values 5 each, and the digit is x % 10. 720 is
# the least common multiple of the probabilities' denominators, so every
# choice is exactly uniform and a forced leaf at depth 10 can use x % 10
# too.
_CHOICES = 720
_LEAVES = 540
_BLOCK = 1 << 16


def _value(operator: int, args: list[int]) -> int:
  if operator == 0:
    return min(args)
  if operator == 1:
    return max(args)
  if operator == 2:
    args = sorted(args)
    n = len(args)
    return args[n // 2] if n % 2 else (args[n // 2 - 1] + args[n // 2]) // 2
  return sum(args) % 10


def _draw_tree(draw, max_length: int) -> tuple[list[int] | None, int, int]:
  """Draws one tree depth first; returns (token ids, value, length).

  Stops early, with ids None, once the length reaches `max_length`.
  """
  tokens = []
  length = 0
  # Open operators: [operator, arguments still to draw, argument values].
  stack = []
  while True:
    x = draw()
    # The node's depth is len(stack) + 1.
    if x >= _LEAVES and len(stack) < MAX_DEPTH - 1:
      pair = (x - _LEAVES) // 5
      operator, arity = pair % 4, 2 + pair // 4
      tokens.append(_OPERATOR + operator)
      length += 2  # Its `]` comes for sure.
      if length >= max_length:
        return None, 0, length
      stack.append([operator, arity, []])
      continue
    value = x % 10
    tokens.append(_DIGIT + value)
    length += 1
    if length >= max_length:
      return None, 0, length
    # Close every operator that this leaf completes.
    while stack:
      top = stack[-1]
      top[2].append(value)
      top[1] -= 1
      if top[1]:
        break
      stack.pop()
      tokens.append(_END)
      value = _value(top[0], top[2])
    else:
      return tokens, value, length


def _check_lengths(min_length: int, max_length: int):
  # Possible lengths: 1 (a leaf) and every length >= 4.
  if not (
    min_length >= 0
    and (min_length < 1 < max_length or max(min_length + 1, 4) < max_length)
  ):
    raise ValueError(
      f'no ListOps tree has min_length={min_length} < length < '
      f'max_length={max_length}; trees have length 1 or >= 4 (the '
      'published window is 500, 2000)'
    )


def _kept_trees(
  seed: int, min_length: int, max_length: int
) -> Iterator[tuple[bytes, int]]:
  """Yields the unique kept trees as (token id bytes, value), in order."""
  _check_lengths(min_length, max_length)
  rng = np.random.default_rng(seed)
  # Python ints from a list iterator: far faster than numpy scalars.
  stream = itertools.chain.from_iterable(
    rng.integers(0, _CHOICES, _BLOCK).tolist() for _ in itertools.count()
  )
  draw = stream.__next__
  seen = set()
  while True:
    tokens, value, length = _draw_tree(draw, max_length)
    if tokens is not None and length > min_length:
      key = bytes(tokens)
      if key not in seen:
        seen.add(key)
        yield key, value


def to_string(token_ids) -> str:
  """Token ids -> the LRA-style string, e.g. `[MAX 2 9 [MIN 4 7 ] 0 ]`."""
  return ' '.join(VOCAB[int(i)] for i in token_ids)


def tokenize(text: str) -> np.ndarray:
  """An LRA-style string -> int32 token ids (split on whitespace).

  Raises:
    ValueError: an unknown token.
  """
  try:
    return np.array([TOKEN_IDS[t] for t in text.split()], np.int32)
  except KeyError as e:
    raise ValueError(
      f'unknown ListOps token {e.args[0]!r}; tokens are {VOCAB[1:]}'
    ) from None


def generate(
  num_examples: int, seed: int, min_length: int = 500, max_length: int = 2000
) -> list[tuple[str, int]]:
  """Generates unique ListOps trees with min_length < length < max_length.

  Args:
    num_examples: how many trees.
    seed: the random seed; the same seed gives the same trees in the same
      order, and a smaller `num_examples` gives a prefix.
    min_length: lengths are greater than this.
    max_length: lengths are smaller than this.

  Returns:
    (token string, value) pairs, e.g. ('[MAX 2 9 [MIN 4 7 ] 0 ]', 9).

  Raises:
    ValueError: a length window that no tree fits.
  """
  trees = itertools.islice(
    _kept_trees(seed, min_length, max_length), num_examples
  )
  return [(to_string(tokens), value) for tokens, value in trees]


class Examples:
  """Random-access examples of one split, memory-mapped from the cache.

  Pickles as its file paths and range, so grain workers map the files
  themselves instead of receiving a copy.
  """

  def __init__(self, name: str, directory: str, start: int, stop: int):
    self.name = name
    self.directory = directory
    self.start = start
    self.stop = stop
    self._arrays = None

  def _open(self):
    if self._arrays is None:
      self._arrays = tuple(
        np.load(os.path.join(self.directory, f'{key}.npy'), mmap_mode='r')
        for key in ('tokens', 'offsets', 'labels')
      )
    return self._arrays

  def __len__(self) -> int:
    return self.stop - self.start

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f'{self.name}: index {index} not in [0, {len(self)})')
    tokens, offsets, labels = self._open()
    i = self.start + index
    return {
      'inputs': np.asarray(tokens[offsets[i] : offsets[i + 1]], np.int32),
      'targets': int(labels[i]),
    }

  def __getstate__(self):
    return {
      'name': self.name,
      'directory': self.directory,
      'start': self.start,
      'stop': self.stop,
    }

  def __setstate__(self, state):
    self.__init__(**state)

  def __repr__(self) -> str:
    # Grain compares this in a restored state: keep it free of addresses.
    return f'listops.Examples({self.name!r}, {len(self)} examples)'


def _write(directory: str, params: dict):
  """Generates the set and writes it to `directory` (atomically)."""
  trees = list(
    itertools.islice(
      _kept_trees(params['seed'], params['min_length'], params['max_length']),
      params['num_examples'],
    )
  )
  lengths = np.array([len(t) for t, _ in trees], np.int64)
  arrays = {
    'tokens': np.frombuffer(b''.join(t for t, _ in trees), np.uint8),
    'offsets': np.concatenate([[0], np.cumsum(lengths)]),
    'labels': np.array([v for _, v in trees], np.uint8),
  }
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  # Written beside its final place and renamed, so a reader never sees a
  # half-written set.
  tmp = tempfile.mkdtemp(dir=parent, prefix='.tmp-')
  try:
    for key, array in arrays.items():
      np.save(os.path.join(tmp, f'{key}.npy'), array)
    with open(os.path.join(tmp, 'params.json'), 'w') as f:
      json.dump(params, f, indent=2)
    os.rename(tmp, directory)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def cache_dir(
  data_dir: str, num_examples: int, seed: int, min_length: int, max_length: int
) -> str:
  """Where a generated set lives: <data_dir>/listops/<hash of params>."""
  params = _params(num_examples, seed, min_length, max_length)
  key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()
  root = data_dir or tfds.core.constants.get_default_data_dir()
  return os.path.join(root, 'listops', key[:16])


def _params(num_examples, seed, min_length, max_length) -> dict:
  return {
    'version': GENERATOR_VERSION,
    'num_examples': num_examples,
    'seed': seed,
    'min_length': min_length,
    'max_length': max_length,
  }


def load(
  data_dir: str,
  sizes: dict[str, int],
  min_length: int = 500,
  max_length: int = 2000,
) -> dict[str, Examples]:
  """Returns the splits, generating and caching the set on first use.

  Args:
    data_dir: root of the cache ('' for TFDS's default data directory).
    sizes: examples per split ('train', 'validation', 'test').
    min_length: lengths are greater than this.
    max_length: lengths are smaller than this.
  """
  _check_lengths(min_length, max_length)
  total = sum(sizes.values())
  directory = cache_dir(data_dir, total, DATA_SEED, min_length, max_length)
  os.makedirs(os.path.dirname(directory), exist_ok=True)
  # Processes that start together would all generate the set: one does.
  with open(directory + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(os.path.join(directory, 'params.json')):
      _write(directory, _params(total, DATA_SEED, min_length, max_length))
  splits, start = {}, 0
  for split in SPLIT_ORDER:
    stop = start + sizes[split]
    splits[split] = Examples(f'listops:{split}', directory, start, stop)
    start = stop
  return splits


def create(c, **options) -> classification.ClassificationDatasets:
  """Builds ListOps from the validated data config `c`.

  Sizes come from c.num_train, c.num_validation, c.num_test (0: the
  published 96,000 / 2,000 / 2,000), lengths from c.min_length and
  c.max_length. `seed` only shuffles training: the set is fixed.

  Raises:
    ValueError: `c.seq_len` shorter than the longest kept tree, or a length
      window that no tree fits.
  """
  if c.seq_len < c.max_length - 1:
    raise ValueError(
      f'data.seq_len={c.seq_len} is shorter than the longest ListOps tree '
      f'(data.max_length={c.max_length} - 1 = {c.max_length - 1} tokens); '
      f'set data.seq_len >= {c.max_length - 1} or lower data.max_length'
    )
  sizes = {
    split: c[f'num_{split}'] or default
    for split, default in SPLIT_SIZES.items()
  }
  splits = load(c.data_dir, sizes, c.min_length, c.max_length)
  return classification.ClassificationDatasets.from_config(
    c,
    splits=splits,
    vocab_size=VOCAB_SIZE,
    num_classes=NUM_CLASSES,
    **options,
  )
