"""LRA Text: IMDb movie reviews at byte level (TFDS `imdb_reviews`).

A review is its UTF-8 bytes, token = byte + 1 (0 is padding; vocabulary
257), cut to its first `data.seq_len` bytes (1000 in the public LRA code,
4000 in the Performer paper) and padded; label 1 = positive. 2 classes.

Splits. The LRA code validates on the test split, which picks the
checkpoint on the test set. Here validation is held out of the training
reviews instead:

  validation: TFDS train examples 0, 10, 20, ... (index % 10 == 0;
              2,500 reviews)
  train:      the other TFDS train examples (22,500)
  test:       the TFDS test split (25,000)

The TFDS train order is fixed when the dataset is prepared (TFDS shuffles
it by a hash of each example's key), so the cut is the same on every
machine, and taking every 10th example keeps it balanced even if the order
were not shuffled. The unlabeled 'unsupervised' split is not used.

Read from prepared TFDS array_record files without TensorFlow; see
`tfds_source.open_split` and docs/data.md.
"""

import functools
from typing import Any

import numpy as np

from performer.data import classification, tfds_source

TFDS_NAME = 'imdb_reviews/plain_text'
NUM_CLASSES = 2
# Every VALIDATION_EVERY-th TFDS train example is a validation example.
VALIDATION_EVERY = 10


def encode(record: dict[str, Any], *, seq_len: int) -> dict[str, Any]:
  """Maps a TFDS review record to an example of byte tokens."""
  return {
    'inputs': tfds_source.byte_tokens(record['text'], seq_len),
    'targets': int(record['label']),
  }


def split_indices(num_train: int) -> dict[str, np.ndarray]:
  """Returns which TFDS train examples are our train and validation ones."""
  index = np.arange(num_train)
  held_out = index % VALIDATION_EVERY == 0
  return {'train': index[~held_out], 'validation': index[held_out]}


def load(
  *, seq_len: int, data_dir: str = '', download: bool = False
) -> dict[str, tfds_source.Examples]:
  """Opens the train, validation and test splits.

  Args:
    seq_len: bytes kept per review.
    data_dir: TFDS data directory ('' for TFDS's default).
    download: download and prepare the dataset if it is not there.

  Raises:
    FileNotFoundError: the dataset is not prepared in `data_dir`.
  """
  opened = {
    split: tfds_source.open_split(
      TFDS_NAME, split, data_dir=data_dir, download=download
    )
    for split in ('train', 'test')
  }
  to_example = functools.partial(encode, seq_len=seq_len)
  splits = {
    split: tfds_source.Examples(
      f'imdb:{split}', opened['train'], to_example, indices
    )
    for split, indices in split_indices(len(opened['train'])).items()
  }
  splits['test'] = tfds_source.Examples('imdb:test', opened['test'], to_example)
  return splits


def create(c, **options) -> classification.ClassificationDatasets:
  """Builds the byte-level IMDb task from the validated data config `c`.

  Raises:
    FileNotFoundError: `imdb_reviews` is not prepared in `c.data_dir`.
  """
  splits = load(
    seq_len=c.seq_len, data_dir=c.data_dir, download=c.tfds_download
  )
  return classification.ClassificationDatasets.from_config(
    c,
    splits=splits,
    vocab_size=tfds_source.BYTE_VOCAB_SIZE,
    num_classes=NUM_CLASSES,
    truncate=True,
    **options,
  )
