"""LRA Text (IMDb), Image (CIFAR-10) and Retrieval (AAN) pipelines.

IMDb and CIFAR-10 read `tfds.testing.mock_data` through `tfds.data_source`
(random reviews and images, no download, no TensorFlow; every TFDS split
gets the same records). AAN reads tiny TSV files written here. The token
encodings are checked against references computed here from the raw
records: bytes + 1 cut at seq_len, and the luma formula in float64.
"""

import csv
import pickle
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from performer.data import aan, cifar10, imdb
from performer.data import build as data_build

NUM_RECORDS = 23  # mock records per TFDS split


@pytest.fixture
def mock_tfds():
  with tfds.testing.mock_data(
    num_examples=NUM_RECORDS, policy=tfds.testing.MockPolicy.USE_CODE
  ):
    yield


def _records(tfds_name: str, split: str) -> list[dict]:
  source = tfds.data_source(tfds_name, split=split, download=False)
  return [source[i] for i in range(len(source))]


def _create(name, tmp_path, batch_size, **options):
  config = {'name': name, 'data_dir': str(tmp_path), **options}
  return data_build.create(config, batch_size=batch_size, seed=0)


def _eval_rows(ds, split: str) -> dict[str, np.ndarray]:
  """One pass over `split`, batches concatenated (padding rows included)."""
  batches = list(ds.eval_batches(split))
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _check_batch(batch, batch_size, seq_len, keys=('inputs',)):
  masks = ['mask' + k[len('inputs') :] for k in keys]
  assert set(batch) == {*keys, *masks, 'targets', 'weights'}
  for k, m in zip(keys, masks, strict=True):
    assert batch[k].shape == (batch_size, seq_len)
    assert batch[k].dtype == np.int32
    assert batch[m].shape == (batch_size, seq_len) and batch[m].dtype == bool
    # Padding is exactly where the mask is False.
    np.testing.assert_array_equal(batch[k][~batch[m]], 0)
  assert batch['targets'].shape == (batch_size,)
  assert batch['targets'].dtype == np.int32
  assert batch['weights'].shape == (batch_size,)
  assert batch['weights'].dtype == np.float32


def _padded_bytes(text: str | bytes, seq_len: int) -> tuple[np.ndarray, ...]:
  """Reference: UTF-8 bytes + 1, cut at seq_len, zero-padded; and the mask."""
  raw = list(text.encode('utf-8') if isinstance(text, str) else text)
  raw = raw[:seq_len]
  tokens = np.zeros(seq_len, np.int32)
  tokens[: len(raw)] = np.array(raw, np.int64) + 1
  return tokens, np.arange(seq_len) < len(raw)


# --- IMDb -----------------------------------------------------------------


def test_imdb_batches_are_the_review_bytes(tmp_path, mock_tfds):
  del mock_tfds
  seq_len, batch_size = 14, 4
  train = _records('imdb_reviews/plain_text', 'train')
  test = _records('imdb_reviews/plain_text', 'test')
  lengths = [len(r['text'].encode()) for r in train]
  # The mock reviews (10-19 bytes) exercise both padding and truncation.
  assert min(lengths) < seq_len < max(lengths)
  ds = _create('imdb', tmp_path, batch_size, seq_len=seq_len)
  assert (ds.task, ds.vocab_size, ds.num_classes) == ('classification', 257, 2)
  assert ds.eval_splits == ('train', 'validation', 'test')

  want = {
    split: [(*_padded_bytes(r['text'], seq_len), int(r['label'])) for r in rs]
    for split, rs in (('train', train), ('test', test))
  }
  validation_ids = list(range(0, NUM_RECORDS, 10))  # 0, 10, 20
  train_ids = [i for i in range(NUM_RECORDS) if i not in validation_ids]

  it = iter(ds.train_loader())
  for _ in range(3):
    batch = next(it)
    _check_batch(batch, batch_size, seq_len)
    np.testing.assert_array_equal(batch['weights'], 1.0)
    for row, mask, target in zip(
      batch['inputs'], batch['mask'], batch['targets'], strict=True
    ):
      # Every training row is one of the training reviews, never a
      # validation one.
      matches = [
        i
        for i, (tokens, want_mask, label) in enumerate(want['train'])
        if np.array_equal(row, tokens) and np.array_equal(mask, want_mask)
      ]
      assert matches and set(matches) <= set(train_ids)
      assert target == want['train'][matches[0]][2]

  for split, ids in (
    ('validation', validation_ids),
    ('test', range(NUM_RECORDS)),
    ('train', train_ids),
  ):
    rows = _eval_rows(ds, split)
    _check_batch(rows, len(rows['weights']), seq_len)
    n = len(ids)
    np.testing.assert_array_equal(rows['weights'][:n], 1.0)
    source = want['test' if split == 'test' else 'train']
    for j, i in enumerate(ids):
      tokens, mask, label = source[i]
      np.testing.assert_array_equal(rows['inputs'][j], tokens)
      np.testing.assert_array_equal(rows['mask'][j], mask)
      assert rows['targets'][j] == label
    # The last batch is filled with weight-0 all-padding rows (1 row for
    # validation's 3 reviews and test's 23; none for train's 20).
    assert len(rows['weights']) == -(-n // batch_size) * batch_size
    np.testing.assert_array_equal(rows['weights'][n:], 0.0)
    np.testing.assert_array_equal(rows['inputs'][n:], 0)
    assert not rows['mask'][n:].any()


def test_imdb_validation_is_every_tenth_train_review():
  for n in (1, 9, 10, 23, 25_000):
    first = imdb.split_indices(n)
    again = imdb.split_indices(n)
    train, validation = first['train'], first['validation']
    for split in ('train', 'validation'):
      np.testing.assert_array_equal(first[split], again[split])
    assert not set(train) & set(validation)
    assert sorted([*train, *validation]) == list(range(n))
    np.testing.assert_array_equal(validation, np.arange(0, n, 10))
  assert len(imdb.split_indices(25_000)['validation']) == 2_500


def test_imdb_splits_pickle_for_grain_workers(tmp_path, mock_tfds):
  del mock_tfds
  splits = imdb.load(seq_len=8, data_dir=str(tmp_path))
  for split, examples in splits.items():
    clone = pickle.loads(pickle.dumps(examples))
    assert repr(clone) == repr(examples)
    assert split in repr(examples) and '0x' not in repr(examples)
    np.testing.assert_array_equal(clone[1]['inputs'], examples[1]['inputs'])


# --- CIFAR-10 -------------------------------------------------------------


def _reference_gray(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """floor(Y * 255.5 / 255) in float64, and where float32 may differ.

  The pipeline computes in float32 as TensorFlow does; it may differ by 1
  only where the exact value lies within 1e-4 of an integer (over all
  2**24 colours, TensorFlow differs from this float64 reference at 237,
  each within 3.9e-5 of an integer).
  """
  rgb = image.astype(np.float64)
  luma = 0.2989 * rgb[..., 0] + 0.5870 * rgb[..., 1] + 0.1140 * rgb[..., 2]
  exact = luma * 255.5 / 255
  near_integer = np.abs(exact - np.round(exact)) < 1e-4
  return np.floor(exact).astype(np.int64), near_integer


def test_grayscale_matches_tensorflow_on_known_pixels():
  # By hand: floor(w * 255.5) for one channel at 255; white stays 255.
  # Green is 149 (truncation), where rounding 0.587 * 255 would give 150.
  pixels = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]
  want = [0, 255, 76, 149, 29]
  # tf.image.rgb_to_grayscale (TensorFlow 2.21) on colours whose exact
  # value lies just below an integer (92.999996 for the first) but which
  # float32 rounds up. The pipeline matched TensorFlow on all 2**24
  # colours when this test was written.
  pixels += [[0, 122, 186], [83, 69, 180], [152, 103, 253], [211, 39, 244]]
  want += [93, 86, 135, 114]
  np.testing.assert_array_equal(
    cifar10.grayscale(np.array([pixels], np.uint8)), [want]
  )
  # The same in a CIFAR-sized image and alone: no value depends on how
  # many pixels are converted together (a BLAS product did, on this CPU).
  tiled = np.resize(np.array(pixels, np.uint8), (32, 32, 3))
  np.testing.assert_array_equal(
    cifar10.grayscale(tiled), np.resize(np.array(want), (32, 32))
  )
  for pixel, value in zip(pixels, want, strict=True):
    assert cifar10.grayscale(np.array([[pixel]], np.uint8))[0, 0] == value
  grid = np.stack(np.meshgrid(*[np.arange(0, 256, 15)] * 3), -1)
  grid = grid.reshape(1, -1, 3).astype(np.uint8)
  want, near = _reference_gray(grid)
  got = cifar10.grayscale(grid).astype(np.int64)
  assert np.abs(got - want).max() <= 1
  np.testing.assert_array_equal(got[~near], want[~near])


def test_cifar10_batches_are_gray_pixels(tmp_path, mock_tfds):
  del mock_tfds
  batch_size = 4
  train = _records('cifar10', 'train')
  ds = _create('cifar10', tmp_path, batch_size, seq_len=1024)
  assert (ds.vocab_size, ds.num_classes, ds.seq_len) == (256, 10, 1024)
  want = []
  for record in train:
    gray, near = _reference_gray(record['image'])
    want.append((gray.reshape(-1), near.reshape(-1), int(record['label'])))

  batch = next(iter(ds.train_loader()))
  _check_batch(batch, batch_size, 1024)
  assert batch['mask'].all()  # Pixels fill the sequence; 0 is black.

  # train[:90%] and train[90%:], rounded as TFDS does: 21 and 2 of 23.
  cut = round(NUM_RECORDS * 0.9)
  for split, ids in (
    ('train', range(cut)),
    ('validation', range(cut, NUM_RECORDS)),
  ):
    rows = _eval_rows(ds, split)
    n = len(ids)
    assert rows['mask'][:n].all() and not rows['mask'][n:].any()
    np.testing.assert_array_equal(rows['weights'][:n], 1.0)
    np.testing.assert_array_equal(rows['weights'][n:], 0.0)
    for j, i in enumerate(ids):
      gray, near, label = want[i]
      got = rows['inputs'][j]
      np.testing.assert_array_equal(got[~near], gray[~near])
      assert np.abs(got - gray).max() <= 1
      assert rows['targets'][j] == label

  # A longer seq_len pads after the 1024 pixels.
  longer = _create('cifar10', tmp_path, batch_size, seq_len=1030)
  rows = next(longer.eval_batches('test'))
  assert rows['mask'][:, :1024].all() and not rows['mask'][:, 1024:].any()


def test_cifar10_split_is_the_lra_cut():
  for n in (10, 23, 50_000):
    first, again = cifar10.split_indices(n), cifar10.split_indices(n)
    train, validation = first['train'], first['validation']
    np.testing.assert_array_equal(train, again['train'])
    np.testing.assert_array_equal(validation, again['validation'])
    assert not set(train) & set(validation)
    np.testing.assert_array_equal(np.concatenate([train, validation]), range(n))
  assert len(cifar10.split_indices(50_000)['train']) == 45_000


def test_cifar10_seq_len_shorter_than_the_image_is_an_error(tmp_path):
  with pytest.raises(ValueError, match=r'seq_len=1000 .* 1024 pixels'):
    _create('cifar10', tmp_path, 2, seq_len=1000)


@pytest.mark.parametrize(
  'name, tfds_name', [('imdb', 'imdb_reviews'), ('cifar10', 'cifar10')]
)
def test_unprepared_tfds_dataset_names_the_data_dir(name, tmp_path, tfds_name):
  with pytest.raises(FileNotFoundError) as error:
    _create(name, tmp_path, 2, seq_len=1024)
  message = str(error.value)
  assert str(tmp_path) in message
  assert f'tfds build {tfds_name} --file_format=array_record' in message


# --- AAN ------------------------------------------------------------------

# Quotes stay part of the text (the release is read with quoting off).
DOCS = [
  'b\'Statistical parsing with a "context-free" grammar.\\n\'',
  'Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u2014 UTF-8 takes several bytes',
  '"quoted at both ends"',
  'x' * 40,
  'short',
  "b'It\\'s a bytes literal, as the release writes texts'",
]


def _write_tsv(path, rows, newline='\n'):
  with open(path, 'w', encoding='utf-8', newline='') as f:
    for row in rows:
      f.write('\t'.join(row) + newline)


def _aan_rows(split: str) -> list[list[str]]:
  offset = {'train': 0, 'validation': 1, 'test': 2}[split]
  count = {'train': 7, 'validation': 3, 'test': 2}[split]
  rows = []
  for i in range(count):
    label = ['0', '1', '1.0', '0.0'][(i + offset) % 4]
    one, two = DOCS[(i + offset) % 6], DOCS[(2 * i + offset + 1) % 6]
    rows.append([label, f'P{i:02d}-1', f'W{i:02d}-2', one, two])
  return rows


@pytest.fixture
def aan_dir(tmp_path):
  directory = tmp_path / 'tsv_data'
  directory.mkdir()
  for split, name in aan.FILES.items():
    # The eval file has Windows line endings: they must not reach the text.
    newline = '\r\n' if split == 'validation' else '\n'
    _write_tsv(directory / name, _aan_rows(split), newline)
  return directory


def _read_reference(path) -> list[tuple[str, str, int]]:
  """Independent reader: the csv module, quoting off, as the LRA code."""
  with open(path, encoding='utf-8', newline='') as f:
    rows = list(csv.reader(f, delimiter='\t', quoting=csv.QUOTE_NONE))
  return [
    (text1, text2, int(float(label))) for label, _, _, text1, text2 in rows
  ]


def test_aan_pairs_are_the_document_bytes(aan_dir, tmp_path):
  seq_len, batch_size = 24, 3
  ds = _create('aan', tmp_path, batch_size, seq_len=seq_len, path=str(aan_dir))
  assert (ds.task, ds.vocab_size, ds.num_classes) == ('retrieval', 257, 2)
  keys = ('inputs1', 'inputs2')
  batch = next(iter(ds.train_loader()))
  _check_batch(batch, batch_size, seq_len, keys)

  for split, name in aan.FILES.items():
    want = _read_reference(aan_dir / name)
    rows = _eval_rows(ds, split)
    _check_batch(rows, len(rows['weights']), seq_len, keys)
    n = len(want)
    np.testing.assert_array_equal(rows['weights'][:n], 1.0)
    np.testing.assert_array_equal(rows['weights'][n:], 0.0)
    assert not rows['mask1'][n:].any() and not rows['mask2'][n:].any()
    for j, (text1, text2, label) in enumerate(want):
      for key, text in (('1', text1), ('2', text2)):
        tokens, mask = _padded_bytes(text, seq_len)
        np.testing.assert_array_equal(rows['inputs' + key][j], tokens)
        np.testing.assert_array_equal(rows['mask' + key][j], mask)
      assert rows['targets'][j] == label
  # Training rows are training pairs.
  train = [
    np.concatenate(
      [_padded_bytes(t1, seq_len)[0], _padded_bytes(t2, seq_len)[0]]
    )
    for t1, t2, _ in _read_reference(aan_dir / aan.FILES['train'])
  ]
  for row in np.concatenate([batch['inputs1'], batch['inputs2']], axis=1):
    assert any(np.array_equal(row, t) for t in train)


def test_aan_pairs_pickle_without_their_text(aan_dir):
  pairs = aan.load(str(aan_dir), seq_len=8)['train']
  blob = pickle.dumps(pairs)
  assert b'Statistical' not in blob  # Workers read the file themselves.
  clone = pickle.loads(blob)
  assert repr(clone) == repr(pairs) == "Pairs('aan:train', pairs=7)"
  for i in range(len(pairs)):
    for key in ('inputs1', 'inputs2', 'targets'):
      np.testing.assert_array_equal(clone[i][key], pairs[i][key])


def test_aan_missing_directory_or_files(tmp_path, aan_dir):
  with pytest.raises(FileNotFoundError, match='data.path is not set'):
    _create('aan', tmp_path, 2, seq_len=8)
  missing = tmp_path / 'nowhere'
  with pytest.raises(FileNotFoundError, match=re.escape(str(missing))) as error:
    _create('aan', tmp_path, 2, seq_len=8, path=str(missing))
  for name in aan.FILES.values():
    assert name in str(error.value)
  (aan_dir / aan.FILES['test']).unlink()
  with pytest.raises(FileNotFoundError) as error:
    _create('aan', tmp_path, 2, seq_len=8, path=str(aan_dir))
  message = str(error.value)
  assert message.startswith(f'{aan.FILES["test"]} not found in {aan_dir}')


@pytest.mark.parametrize(
  'bad_row',
  [
    ['1', 'P1', 'P2', 'only one text'],
    ['1', 'P1', 'P2', 'a', 'b', 'c'],
    ['2', 'P1', 'P2', 'a', 'b'],
    ['yes', 'P1', 'P2', 'a', 'b'],
  ],
)
def test_aan_malformed_row_names_file_and_line(aan_dir, tmp_path, bad_row):
  name = aan.FILES['validation']
  rows = _aan_rows('validation')
  rows.insert(1, bad_row)
  _write_tsv(aan_dir / name, rows)
  with pytest.raises(ValueError, match=re.escape(f'{name} line 2: ')):
    _create('aan', tmp_path, 2, seq_len=8, path=str(aan_dir))


def test_aan_train_state_restores_in_a_new_run(aan_dir, tmp_path):
  def create():
    return _create('aan', tmp_path, 2, seq_len=8, path=str(aan_dir))

  it = iter(create().train_loader())
  next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  restored = iter(create().train_loader())
  restored.set_state(state)
  for want in expected:
    got = next(restored)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
