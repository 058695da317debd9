"""A user's own text as a byte corpus: files, directories, byte fractions.

Two ways to split:

* separate paths for train, validation and test (validation and test are
  optional);
* one path whose bytes are cut by fraction: train first, then validation,
  then test. enwik8 (exactly 10^8 bytes) with validation_fraction =
  test_fraction = 0.05 gives the standard 90M / 5M / 5M bytes.

A path is a file or a directory; a directory stands for all regular files
below it (hidden ones skipped), in sorted path order, joined with nothing in
between. A single file is memory-mapped, never read into memory.
"""

import os

import numpy as np

from performer.data.lm import FileBytes


def _files(path: str, what: str) -> list[str]:
  """Returns the files that `path` stands for; raises on missing or empty."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'{what} not found: {path}')
  if os.path.isfile(path):
    files = [path]
  else:
    files = []
    for root, dirs, names in os.walk(path):
      dirs[:] = [d for d in dirs if not d.startswith('.')]
      files += [os.path.join(root, n) for n in names if not n.startswith('.')]
    files = sorted(f for f in files if os.path.isfile(f))
  if sum(os.path.getsize(f) for f in files) == 0:
    raise ValueError(f'{what} is empty (no bytes): {path}')
  return files


def _read(path: str, what: str) -> FileBytes | np.ndarray:
  """Returns the bytes `path` stands for: mapped for a file, else joined."""
  files = _files(path, what)
  if len(files) == 1:
    return FileBytes(files[0])
  return np.concatenate([np.fromfile(f, np.uint8) for f in files])


def load(
  *,
  path: str = '',
  train_path: str = '',
  validation_path: str = '',
  test_path: str = '',
  validation_fraction: float = 0.05,
  test_fraction: float = 0.05,
) -> dict[str, FileBytes | np.ndarray]:
  """Returns the byte stream of each split.

  Args:
    path: one file or directory to cut by fraction ('' to use the separate
      paths).
    train_path, validation_path, test_path: separate files or directories
      ('' for none; train_path is required when path is '').
    validation_fraction, test_fraction: shares of `path`'s bytes for the
      validation and test splits, taken from its end (test last).

  Raises:
    FileNotFoundError: a path does not exist.
    ValueError: no or conflicting paths, bad fractions, an empty corpus or
      an empty split.
  """
  if path and train_path:
    raise ValueError(
      f'give either data.path ({path}) to split by fraction or '
      f'data.train_path ({train_path}), not both'
    )
  if not path:
    if not train_path:
      raise ValueError(
        'text_files needs data.path (one file or directory split by '
        'fraction) or data.train_path (with optional validation_path and '
        'test_path)'
      )
    named = {
      'train': train_path,
      'validation': validation_path,
      'test': test_path,
    }
    return {split: _read(p, f'{split} text') for split, p in named.items() if p}

  for name, value in (
    ('validation_fraction', validation_fraction),
    ('test_fraction', test_fraction),
  ):
    if not 0 <= value < 1:
      raise ValueError(f'data.{name} must lie in [0, 1), got {value}')
  if validation_fraction + test_fraction >= 1:
    raise ValueError(
      'data.validation_fraction + data.test_fraction must be < 1, got '
      f'{validation_fraction} + {test_fraction}'
    )
  data = _read(path, 'text')
  size = len(data)
  n_test = round(size * test_fraction)
  n_valid = round(size * validation_fraction)
  bounds = {
    'train': (0, size - n_valid - n_test),
    'validation': (size - n_valid - n_test, size - n_test),
    'test': (size - n_test, size),
  }
  wanted = {
    'train': True,
    'validation': validation_fraction > 0,
    'test': test_fraction > 0,
  }
  splits = {}
  for split, (start, stop) in bounds.items():
    if not wanted[split]:
      continue
    if stop == start:
      raise ValueError(f'{split} split of {path} is empty ({size} bytes)')
    if isinstance(data, FileBytes):
      splits[split] = FileBytes(data.path, start, stop)
    else:
      splits[split] = data[start:stop]
  return splits
