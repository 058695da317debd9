"""Shared parts of the downloaded Long Range Arena tasks (IMDb, AAN, CIFAR-10).

* `open_split`: a prepared TFDS split as a `tfds.data_source` (array_record,
  read without TensorFlow), with a clear error when it is not prepared and
  a warning when it is a stand-in written by `lra_standins`.
* `Examples`: a random-access, picklable view of chosen records of such a
  source, each mapped to an example only when it is read (grain workers
  receive the source, not the data).
* `LocalBuilder`: the base of this package's TFDS builders (data made or
  found on this machine).
* `byte_tokens`: the byte encoding of the text tasks (token = byte + 1, so
  0 stays the padding id; vocabulary 257), as the LRA code's
  `ByteTextEncoder` does.
"""

import glob
import inspect
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

# Byte tokens: 256 byte values shifted by one, plus padding id 0.
BYTE_VOCAB_SIZE = 257
# How the description of a stand-in dataset (lra_standins) begins.
STANDIN_MARK = 'STAND-IN'


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A TFDS builder of data that is on this machine (nothing to download)."""

  # TFDS 4.9.10 finds a builder's source file through `importlib_resources`,
  # a backport it declares only for Python < 3.9 (tensorflow/datasets#11212);
  # naming the file directly avoids the missing import.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))


def byte_tokens(text: str | bytes | np.ndarray, limit: int) -> np.ndarray:
  """Returns the first `limit` bytes of `text` plus one, as int32.

  Args:
    text: a str (encoded as UTF-8), bytes, or a uint8 array.
    limit: the most tokens kept (the documented policy is to truncate).
  """
  if isinstance(text, str):
    text = text.encode('utf-8')
  if isinstance(text, bytes):
    text = np.frombuffer(text, np.uint8)
  return np.asarray(text[:limit], np.int32) + 1


def open_split(
  tfds_name: str, split: str, *, data_dir: str = '', download: bool = False
) -> Sequence[dict[str, Any]]:
  """Opens a prepared TFDS split as a random-access data source.

  Args:
    tfds_name: the TFDS dataset, with its config ('imdb_reviews/plain_text').
    split: the TFDS split ('train', 'test').
    data_dir: TFDS data directory ('' for $TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    download: download and prepare the dataset first if it is missing
      (needs network access and TensorFlow).

  Raises:
    FileNotFoundError: the dataset is not prepared in `data_dir`.
  """
  try:
    source = tfds.data_source(
      tfds_name,
      split=split,
      data_dir=data_dir or None,
      download=download,
      builder_kwargs={'file_format': 'array_record'},
    )
  except (KeyError, FileNotFoundError, AssertionError) as e:
    # TFDS says "splits is empty" (KeyError) for a dataset never prepared.
    where = data_dir or '$TFDS_DATA_DIR or ~/tensorflow_datasets'
    name = tfds_name.split('/')[0]
    raise FileNotFoundError(
      f'TFDS dataset {tfds_name!r} (split {split!r}) is not prepared in '
      f'{where}. Prepare it once with `tfds build {name} '
      '--file_format=array_record --data_dir=...` (needs TensorFlow and '
      'network access; see docs/data.md) or set data.tfds_download=True.'
    ) from e
  _warn_if_standin(source, tfds_name)
  return source


def _warn_if_standin(source, tfds_name: str) -> None:
  """Warns when the prepared files are a stand-in, not the real dataset."""
  # The source's DatasetInfo describes the registered (real) builder; the
  # files' own dataset_info.json says what was written.
  version_dir = str(source.dataset_info.data_dir)
  description = _written_description(version_dir)
  if description.startswith(STANDIN_MARK):
    logging.warning(
      '%s in %s is a stand-in, not the real dataset: %s',
      tfds_name,
      version_dir,
      description,
    )


def standin_description(tfds_name: str, data_dir: str = '') -> str | None:
  """The description of a stand-in of `tfds_name` prepared in `data_dir`.

  Returns None when no prepared version there is a stand-in.
  """
  for description in prepared_descriptions(tfds_name, data_dir).values():
    if description.startswith(STANDIN_MARK):
      return description
  return None


def prepared_descriptions(tfds_name: str, data_dir: str = '') -> dict:
  """{version directory: description} of each prepared `tfds_name`."""
  root = data_dir or tfds.core.constants.get_default_data_dir()
  pattern = os.path.join(root, *tfds_name.split('/'), '*', 'dataset_info.json')
  return {
    os.path.dirname(path): _written_description(os.path.dirname(path))
    for path in sorted(glob.glob(pattern))
  }


def _written_description(version_dir: str) -> str:
  try:
    with open(os.path.join(version_dir, 'dataset_info.json')) as f:
      return json.load(f).get('description', '')
  except (OSError, ValueError):
    return ''


class Examples:
  """Records `indices` of a data source, each mapped by `encode` when read.

  Attributes:
    name: dataset and split, for messages and grain's state check.
    indices: the source records, in order: example i is
      `encode(source[indices[i]])`.
  """

  def __init__(
    self,
    name: str,
    source: Sequence[Any],
    encode: Callable[[Any], dict[str, Any]],
    indices: np.ndarray | None = None,
  ):
    """Wraps `source`.

    Args:
      name: dataset and split.
      source: random-access records (a `tfds.data_source`).
      encode: maps a record to an example; a picklable callable (a module
        function or a `functools.partial` of one) for grain workers.
      indices: the records to keep (default: all, in order).
    """
    self.name = name
    self.indices = (
      np.arange(len(source)) if indices is None else np.asarray(indices)
    )
    self._source = source
    self._encode = encode

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self._encode(self._source[int(self.indices[index])])

  def __repr__(self) -> str:
    # Grain compares this in a restored state: keep it free of addresses.
    return f'Examples({self.name!r}, examples={len(self)})'
