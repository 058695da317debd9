"""The user's text files as a byte corpus, sharding and config checks."""

import pickle

import numpy as np
import pytest

from performer import data
from performer.data import build as data_build
from performer.data import lm


def _random_bytes(n: int, seed: int = 0) -> bytes:
  # Random bytes make every window of a few dozen bytes unique, so a
  # window's position in the file can be recovered.
  return np.random.default_rng(seed).integers(0, 256, n, np.uint8).tobytes()


def _create(batch_size=4, seed=0, shard_index=0, shard_count=1, **options):
  config = data.default_config()
  config.name = 'text_files'
  config.update(options)
  return data_build.create(
    config,
    batch_size=batch_size,
    seed=seed,
    shard_index=shard_index,
    shard_count=shard_count,
  )


def _eval_stream(ds, split) -> bytes:
  """Rebuilds a split's bytes from its eval batches."""
  first, rest = None, []
  for batch in ds.eval_batches(split):
    for inputs, targets, weights in zip(
      batch['inputs'], batch['targets'], batch['weights'], strict=True
    ):
      real = weights > 0
      if real.any() and first is None:
        first = inputs[0]
      rest.append(targets[real])
  return bytes([first]) + np.concatenate(rest).astype(np.uint8).tobytes()


def _offsets(corpus: bytes, batch, seq_len: int) -> list[int]:
  """Where each row's window starts in `corpus` (windows are unique)."""
  found = []
  for inputs, targets in zip(batch['inputs'], batch['targets'], strict=True):
    window = bytes(inputs.astype(np.uint8)) + bytes([targets[-1]])
    assert len(window) == seq_len + 1
    found.append(corpus.index(window))
  return found


def test_fraction_split_cuts_bytes_in_order(tmp_path):
  # enwik8's 90 / 5 / 5, at 1/50000 of the size.
  text = _random_bytes(2000)
  (tmp_path / 'enwik').write_bytes(text)
  ds = _create(path=str(tmp_path / 'enwik'), seq_len=16)
  assert ds.eval_splits == ('train', 'validation', 'test')
  assert _eval_stream(ds, 'train') == text[:1800]
  assert _eval_stream(ds, 'validation') == text[1800:1900]
  assert _eval_stream(ds, 'test') == text[1900:]


def test_train_windows_come_from_the_train_bytes_only(tmp_path):
  text = _random_bytes(3000)
  (tmp_path / 'corpus.txt').write_bytes(text)
  ds = _create(
    path=str(tmp_path / 'corpus.txt'),
    seq_len=24,
    validation_fraction=0.1,
    test_fraction=0.2,
  )
  it = iter(ds.train_loader())
  for _ in range(5):
    batch = next(it)
    assert batch['inputs'].shape == (4, 24)
    for start in _offsets(text, batch, 24):
      assert start + 25 <= 2100  # Inside the first 70%.
    np.testing.assert_array_equal(
      batch['targets'][:, :-1], batch['inputs'][:, 1:]
    )


def test_two_shards_read_disjoint_windows(tmp_path):
  text = _random_bytes(4000)
  (tmp_path / 'corpus.txt').write_bytes(text)
  options = {
    'path': str(tmp_path / 'corpus.txt'),
    'seq_len': 16,
    'validation_fraction': 0.0,
    'test_fraction': 0.0,
  }
  starts = []
  for shard in (0, 1):
    ds = _create(shard_index=shard, shard_count=2, **options)
    it = iter(ds.train_loader())
    starts.append({s for _ in range(20) for s in _offsets(text, next(it), 16)})
  assert not starts[0] & starts[1]
  # Each shard draws its start offsets from its own half of the file.
  half = (len(text) - 16) // 2
  assert max(starts[0]) < half <= min(starts[1])

  # Evaluation: same batch count per shard, together exactly the whole pass.
  whole = list(_create(**options).eval_batches('train'))
  shards = [
    list(_create(shard_index=s, shard_count=2, **options).eval_batches('train'))
    for s in (0, 1)
  ]
  assert len(shards[0]) == len(shards[1])
  rows = lambda batches: {
    bytes(r.astype(np.uint8))
    for b in batches
    for r, w in zip(b['inputs'], b['weights'], strict=True)
    if w.any()
  }
  assert not rows(shards[0]) & rows(shards[1])
  assert rows(shards[0]) | rows(shards[1]) == rows(whole)


def test_separate_paths_and_directories(tmp_path):
  (tmp_path / 'train').mkdir()
  (tmp_path / 'train' / 'b.txt').write_bytes(b'second file\n' * 10)
  (tmp_path / 'train' / 'a.txt').write_bytes(b'first file\n' * 10)
  (tmp_path / 'train' / '.hidden').write_bytes(b'never read')
  (tmp_path / 'valid.txt').write_text('held out text, ' * 10)
  ds = _create(
    train_path=str(tmp_path / 'train'),
    validation_path=str(tmp_path / 'valid.txt'),
    seq_len=8,
  )
  assert ds.eval_splits == ('train', 'validation')
  expected = b'first file\n' * 10 + b'second file\n' * 10
  assert _eval_stream(ds, 'train') == expected
  assert _eval_stream(ds, 'validation') == b'held out text, ' * 10
  with pytest.raises(ValueError, match='no .test. split'):
    ds.eval_batches('test')


def test_missing_and_empty_corpora_name_the_path(tmp_path):
  missing = str(tmp_path / 'missing.txt')
  with pytest.raises(FileNotFoundError, match='missing.txt'):
    _create(path=missing)
  (tmp_path / 'train.txt').write_bytes(b'some training text')
  with pytest.raises(FileNotFoundError, match='missing.txt'):
    _create(train_path=str(tmp_path / 'train.txt'), validation_path=missing)
  (tmp_path / 'empty.txt').write_bytes(b'')
  with pytest.raises(ValueError, match='empty.txt'):
    _create(path=str(tmp_path / 'empty.txt'))
  (tmp_path / 'empty_dir').mkdir()
  with pytest.raises(ValueError, match='empty_dir'):
    _create(train_path=str(tmp_path / 'empty_dir'))


def test_bad_text_file_options(tmp_path):
  (tmp_path / 'short.txt').write_bytes(b'0123456789')
  short = str(tmp_path / 'short.txt')
  with pytest.raises(ValueError, match='seq_len'):
    _create(train_path=short, seq_len=32)
  # 5% of 10 bytes rounds to nothing.
  with pytest.raises(ValueError, match='validation split .*short.txt is empty'):
    _create(path=short, seq_len=4)
  with pytest.raises(ValueError, match='not both'):
    _create(path=short, train_path=short)
  with pytest.raises(ValueError, match='train_path'):
    _create()
  with pytest.raises(ValueError, match='< 1'):
    _create(path=short, validation_fraction=0.5, test_fraction=0.5)


def test_file_bytes_pickle_as_a_path(tmp_path):
  (tmp_path / 'f.bin').write_bytes(bytes(range(100)))
  part = lm.FileBytes(str(tmp_path / 'f.bin'), 10, 20)
  np.testing.assert_array_equal(part[:], np.arange(10, 20))
  blob = pickle.dumps(part)
  assert len(blob) < 200  # Not the contents.
  np.testing.assert_array_equal(pickle.loads(blob)[2:4], [12, 13])


def test_unknown_names_and_options_are_errors():
  with pytest.raises(ValueError, match='shakespeare, text_files, lm1b, pg19'):
    data_build.create({'name': 'wikitext'}, batch_size=2, seed=0)
  with pytest.raises(ValueError, match='seq_length'):
    data_build.create({'seq_length': 8}, batch_size=2, seed=0)
  with pytest.raises(ValueError, match='tokenizer'):
    data_build.create({'tokenizer': 'bpe'}, batch_size=2, seed=0)
  with pytest.raises(ValueError, match='text_files'):
    data_build.create({'path': '/tmp/x'}, batch_size=2, seed=0)


def test_default_config_is_command_line_friendly():
  config = data.default_config()
  assert config.name == 'shakespeare' and config.seq_len == 256
  assert config.tokenizer == 'byte' and config.worker_count == 0
  for key, value in config.items():
    assert type(value) in (str, int, float, bool), key
