"""LM1B and PG-19 on TFDS mock data, and the SentencePiece tokenizer.

`tfds.testing.mock_data` feeds `tfds.data_source` random documents without
TensorFlow or any download; every split gets the same documents.
"""

import os
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds

from performer import data
from performer.data import build as data_build
from performer.data import tfds_lm, tokenizers

NUM_DOCS = 6


@pytest.fixture
def mock_tfds():
  with tfds.testing.mock_data(
    num_examples=NUM_DOCS, policy=tfds.testing.MockPolicy.USE_CODE
  ):
    yield


def _documents(name: str) -> list[str]:
  """The mock's documents, read straight from TFDS."""
  spec = tfds_lm.SPECS[name]
  source = tfds.data_source(spec.tfds_name, split='test', download=False)
  texts = [source[i][spec.feature] for i in range(len(source))]
  return [t.decode() if isinstance(t, bytes) else t for t in texts]


def _create(name, tmp_path, batch_size=3, **options):
  config = data.default_config()
  config.name = name
  config.data_dir = str(tmp_path)
  config.seq_len = 12
  config.update(options)
  return data_build.create(config, batch_size=batch_size, seed=0)


@pytest.mark.parametrize('name', ['lm1b', 'pg19'])
def test_byte_pipeline_on_mock_documents(name, tmp_path, mock_tfds):
  del mock_tfds
  docs = _documents(name)
  assert len(docs) == NUM_DOCS
  # Documents each followed by the newline separator, as one stream.
  stream = ''.join(d + '\n' for d in docs).encode()
  ds = _create(name, tmp_path)
  assert ds.vocab_size == 256 and ds.eval_splits == (
    'train',
    'validation',
    'test',
  )

  it = iter(ds.train_loader())
  for _ in range(4):
    batch = next(it)
    assert (
      batch['inputs'].shape == (3, 12) and batch['inputs'].dtype == np.int32
    )
    np.testing.assert_array_equal(
      batch['targets'][:, :-1], batch['inputs'][:, 1:]
    )
    np.testing.assert_array_equal(batch['weights'], 1.0)
    for inputs, targets in zip(batch['inputs'], batch['targets'], strict=True):
      window = bytes(inputs.astype(np.uint8)) + bytes([targets[-1]])
      assert window in stream + stream  # A window may wrap to the first doc.

  batches = list(ds.eval_batches('test'))
  weights = np.concatenate([b['weights'] for b in batches])
  targets = np.concatenate([b['targets'] for b in batches])
  inputs = np.concatenate([b['inputs'] for b in batches])
  assert weights.sum() == len(stream) - 1
  rebuilt = bytes([inputs[0, 0]]) + bytes(targets[weights > 0].astype(np.uint8))
  assert rebuilt == stream


def test_train_state_restores_on_documents(tmp_path, mock_tfds):
  del mock_tfds
  ds = _create('pg19', tmp_path)
  it = iter(ds.train_loader())
  next(it)
  state = it.get_state()
  expected = [next(it)['inputs'] for _ in range(3)]
  restored = iter(_create('pg19', tmp_path).train_loader())
  restored.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(restored)['inputs'], want)


@pytest.mark.parametrize('name', ['lm1b', 'pg19'])
def test_sentencepiece_is_trained_once_into_data_dir(
  name, tmp_path, mock_tfds, monkeypatch
):
  del mock_tfds
  ds = _create(name, tmp_path, tokenizer='sentencepiece', spm_vocab_size=300)
  model = tmp_path / 'spm' / f'{name}_300.model'
  assert model.exists()
  assert 256 < ds.vocab_size <= 300
  docs = _documents(name)
  batch = next(iter(ds.train_loader()))
  assert (
    batch['inputs'].shape == (3, 12) and batch['inputs'].max() < ds.vocab_size
  )
  # EOS separators decode to nothing, so windows are text of the joined docs.
  joined = ''.join(docs)
  for row in batch['inputs']:
    assert ds.decode(row) in joined + joined
  batches = list(ds.eval_batches('validation'))
  real = np.concatenate([b['targets'][b['weights'] > 0] for b in batches])
  first = batches[0]['inputs'][0, :1]
  assert ds.decode(np.concatenate([first, real])) == joined

  # The next run loads the model instead of training again.
  def fail(*args, **kwargs):
    raise AssertionError('trained again')

  monkeypatch.setattr(tokenizers, 'train_sentencepiece', fail)
  again = _create(name, tmp_path, tokenizer='sentencepiece', spm_vocab_size=300)
  assert again.vocab_size == ds.vocab_size


def test_sentencepiece_round_trips_any_text(tmp_path):
  lines = ['To be, or not to be, that is the question:'] * 50 + [
    'Whether tis nobler in the mind to suffer',
    'The slings and arrows of outrageous fortune,',
  ] * 50
  path = str(tmp_path / 'tiny.model')
  tokenizers.train_sentencepiece(lines, path, vocab_size=300)
  tok = tokenizers.SentencePieceTokenizer(path)
  text = 'To be,  or not\n\n  to BE — 生きるべきか 🙂\tend '
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and ids.max() < tok.vocab_size
  assert tok.decode(ids) == text
  # Long texts are encoded in parallel chunks with the same result.
  long_text = '\n'.join(lines) * 3
  np.testing.assert_array_equal(
    tok.encode_long(long_text, chunk=100), tok.encode(long_text)
  )
  clone = pickle.loads(pickle.dumps(tok))
  np.testing.assert_array_equal(clone.encode(text), ids)


def test_sentencepiece_on_a_text_file(tmp_path):
  text = ''.join(f'Line {i}: the quick brown fox.\n' for i in range(400))
  (tmp_path / 'corpus.txt').write_text(text)
  ds = _create(
    'text_files',
    tmp_path,
    path=str(tmp_path / 'corpus.txt'),
    tokenizer='sentencepiece',
    spm_model=str(tmp_path / 'own.model'),
    spm_vocab_size=300,
  )
  assert os.path.exists(tmp_path / 'own.model')
  batch = next(iter(ds.train_loader()))
  for inputs, targets in zip(batch['inputs'], batch['targets'], strict=True):
    assert ds.decode(np.append(inputs, targets[-1])) in text
  with pytest.raises(ValueError, match='spm_vocab_size'):
    _create(
      'text_files',
      tmp_path,
      path=str(tmp_path / 'corpus.txt'),
      tokenizer='sentencepiece',
      spm_model=str(tmp_path / 'small.model'),
      spm_vocab_size=200,
    )


def test_unprepared_tfds_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='tfds build lm1b'):
    _create('lm1b', tmp_path)
