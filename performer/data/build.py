"""Opens the dataset a data config names: `create` and `load_tokenizer`.

  datasets = build.create(config.data, batch_size=32, seed=0)

The config is checked by `performer.validate.check_data` first; the
dataset modules are imported only when their dataset is opened.
"""

import hashlib
import importlib
import itertools
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from performer import validate
from performer.data import (
  CLASSIFICATION_NAMES,
  PROTEIN_NAMES,
  lm,
  masking,
  shakespeare,
  text_files,
  tfds_lm,
  tokenizers,
)


def _spm_text_sample(split, sample_bytes: int) -> Iterator[str]:
  """Yields lines of about `sample_bytes` of text spread over `split`."""
  rng = np.random.default_rng(0)
  if isinstance(split, lm.StreamSplit):
    data = split.tokens()
    n = len(data)
    if n <= sample_bytes:
      texts = [bytes(data[:])]
    else:
      # Evenly spaced pieces, so that the sample spans the whole split.
      piece = min(1 << 20, sample_bytes)
      starts = np.linspace(0, n - piece, max(1, sample_bytes // piece))
      texts = (bytes(data[int(s) : int(s) + piece]) for s in starts)
  else:
    n = len(split)
    if n <= 10**6:
      keys = rng.permutation(n)
    else:  # Skip a permutation of millions; repeats are rare.
      keys = (rng.integers(n) for _ in itertools.count())
    texts = (split.text(int(k)) for k in keys)
  total = 0
  for text in texts:
    if isinstance(text, bytes):
      text = text.decode('utf-8', errors='replace')
    for line in text.splitlines():
      if line.strip():
        yield line
    total += len(text)
    if total >= sample_bytes:
      return


def _corpus_id(c) -> str:
  """Names the corpus in the default SentencePiece model's file name."""
  if c.name == 'text_files':
    # Different text, different default SentencePiece model.
    where = os.path.abspath(c.path or c.train_path)
    return f'text_files_{hashlib.sha1(where.encode()).hexdigest()[:10]}'
  return c.name


def _spm_path(c) -> str:
  """The SentencePiece model file: data.spm_model or the default path."""
  if c.spm_model:
    return c.spm_model
  root = c.data_dir or tfds.core.constants.get_default_data_dir()
  return os.path.join(root, 'spm', f'{_corpus_id(c)}_{c.spm_vocab_size}.model')


def load_tokenizer(data_config: Mapping[str, Any]):
  """The tokenizer a trained model of `data_config` uses, without the data.

  Bytes, a SentencePiece model, or amino-acid letters for proteins.

  Raises:
    ValueError: an invalid data config.
    FileNotFoundError: a SentencePiece model that was never trained.
  """
  c = validate.check_data(data_config)
  if c.name in PROTEIN_NAMES:
    # Imported here, like the dataset itself: it pulls in its TFDS builder.
    from performer.data import protein

    return protein.AminoAcidTokenizer()
  if c.tokenizer == 'byte':
    return tokenizers.ByteTokenizer()
  return tokenizers.SentencePieceTokenizer(_spm_path(c))


def _tokenizer(c, splits):
  """Returns the byte tokenizer, or loads or trains the SentencePiece one."""
  if c.tokenizer == 'byte':
    return tokenizers.ByteTokenizer()
  path = _spm_path(c)
  if not os.path.exists(path):
    tokenizers.train_sentencepiece(
      _spm_text_sample(splits['train'], c.spm_sample_bytes),
      path,
      c.spm_vocab_size,
    )
  return tokenizers.SentencePieceTokenizer(path)


def create(
  data_config: Mapping[str, Any],
  *,
  batch_size: int,
  seed: int,
  shard_index: int = 0,
  shard_count: int = 1,
) -> Any:
  """Builds the corpus that `data_config` names, ready for the trainer.

  Checks the config and opens every split now, so that a bad name, a
  missing file or an unprepared dataset fails before training starts.

  Args:
    data_config: options of `default_config()` (a ConfigDict or a mapping
      with a subset of its keys).
    batch_size: examples per batch in this process.
    seed: shuffles the training windows (taken modulo 2**32).
    shard_index: this process's shard, in [0, shard_count).
    shard_count: number of processes that share the data.

  Returns:
    A `loader.Datasets`, with `train_loader()`, `eval_batches(split)`,
    `eval_splits`, `vocab_size`, `seq_len` and `task` ('lm', 'mlm',
    'classification' or 'retrieval'): what the trainer optimizes. For the
    LM corpora `lm.Datasets` (with `encode` and `decode`); for the
    classification tasks `classification.ClassificationDatasets` (with
    `num_classes`); for protein `protein.ProteinDatasets` (with `encode`
    and `decode`).

  Raises:
    ValueError: an invalid option or a corpus too small.
    FileNotFoundError: a missing file or an unprepared TFDS dataset.
  """
  c = validate.check_data(data_config)
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f'batch_size must be a positive int, got {batch_size}')
  if not 0 <= shard_index < shard_count:
    raise ValueError(
      f'need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}'
    )

  options = dict(
    batch_size=batch_size,
    seed=seed,
    shard_index=shard_index,
    shard_count=shard_count,
  )
  if c.name in CLASSIFICATION_NAMES + PROTEIN_NAMES:
    # Imported here: each task module pulls in only what it needs.
    module = importlib.import_module(f'performer.data.{c.name}')
    datasets = module.create(c, **options)
    if c.name in CLASSIFICATION_NAMES and c.objective == 'masked':
      return masking.MaskedInputDatasets.of_task(
        datasets, mask_rate=c.mask_rate
      )
    return datasets
  if c.name == 'shakespeare':
    streams = shakespeare.load(c.data_dir)
  elif c.name == 'text_files':
    streams = text_files.load(
      path=c.path,
      train_path=c.train_path,
      validation_path=c.validation_path,
      test_path=c.test_path,
      validation_fraction=c.validation_fraction,
      test_fraction=c.test_fraction,
    )
  else:
    streams = None
  if streams is None:
    splits = tfds_lm.load(c.name, data_dir=c.data_dir, download=c.tfds_download)
  else:
    splits = {
      split: lm.StreamSplit(f'{c.name}:{split}', data)
      for split, data in streams.items()
    }

  tokenizer = _tokenizer(c, splits)
  if streams is not None and c.tokenizer == 'sentencepiece':
    # Streams are tokenized once, up front; documents window by window.
    for split, data in streams.items():
      ids = tokenizer.encode_long(bytes(data[:]))
      splits[split] = lm.StreamSplit(f'{c.name}:{split}', ids)
  return lm.Datasets.from_config(
    c, splits=splits, tokenizer=tokenizer, **options
  )
