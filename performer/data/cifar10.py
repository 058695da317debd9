"""LRA Image: CIFAR-10 as sequences of 1024 gray pixels (TFDS `cifar10`).

Each 32x32 RGB image becomes one gray level per pixel, computed as the LRA
code's `tf.image.rgb_to_grayscale` computes it for uint8 images: the ITU-R
601-2 luma Y = 0.2989 R + 0.5870 G + 0.1140 B of the values scaled to
[0, 1], scaled back by 255.5 and truncated (TensorFlow's
`convert_image_dtype`), in float32:

  gray = floor(Y * 255.5 / 255)        (Y on the 0..255 scale)

so pure green (0, 255, 0) is 149, not round(149.7) = 150. The image is
flattened row by row into 1024 tokens, token = gray value (0..255,
vocabulary 256, as in LRA). Every position is a real pixel, so the inputs
are exactly 1024 tokens long and the mask is all True (a value of 0 is
black, not padding). 10 classes.

Splits, as in LRA (TFDS `train[:90%]` and `train[90%:]`):

  train:      TFDS train examples [0, 45000)
  validation: TFDS train examples [45000, 50000)
  test:       the TFDS test split (10,000)

The TFDS train order is fixed when the dataset is prepared, so the cut is
the same on every machine.
"""

from typing import Any

import numpy as np

from performer.data import classification, tfds_source

TFDS_NAME = 'cifar10'
NUM_CLASSES = 10
NUM_PIXELS = 32 * 32
VOCAB_SIZE = 256
TRAIN_PERCENT = 90
# tf.image.rgb_to_grayscale's weights (ITU-R 601-2 luma).
RGB_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)


def grayscale(image_HWC: np.ndarray) -> np.ndarray:
  """uint8 RGB [H, W, 3] -> uint8 gray [H, W], as tf.image.rgb_to_grayscale.

  Computed in float32 in TensorFlow's order (scale to [0, 1], weigh, scale
  by 255.5, truncate), so that values agree with the LRA pipeline's. The
  weighted sum is spelt out, (r w_r + g w_g) + b w_b with each product
  rounded: a matrix product would leave the order and the use of fused
  multiply-adds to BLAS, whose kernel depends on the CPU and on the number
  of pixels, and colours whose gray value lies within float32 rounding of
  an integer would then change from one machine or batch to another.
  """
  unit_HWC = image_HWC.astype(np.float32) * np.float32(1 / 255)
  w_r, w_g, w_b = RGB_WEIGHTS
  gray_HW = unit_HWC[..., 0] * w_r + unit_HWC[..., 1] * w_g
  gray_HW += unit_HWC[..., 2] * w_b
  return (gray_HW * np.float32(255.5)).astype(np.uint8)


def encode(record: dict[str, Any]) -> dict[str, Any]:
  """Maps a TFDS CIFAR-10 record to 1024 row-major gray-pixel tokens."""
  return {
    'inputs': grayscale(record['image']).reshape(-1).astype(np.int32),
    'targets': int(record['label']),
  }


def split_indices(num_train: int) -> dict[str, np.ndarray]:
  """Returns which TFDS train examples are our train and validation ones.

  The cut rounds like TFDS's percent slices, so it is `train[:90%]`.
  """
  cut = round(num_train * TRAIN_PERCENT / 100)
  return {
    'train': np.arange(cut),
    'validation': np.arange(cut, num_train),
  }


def load(
  *, data_dir: str = '', download: bool = False
) -> dict[str, tfds_source.Examples]:
  """Opens the train, validation and test splits.

  Args:
    data_dir: TFDS data directory ('' for TFDS's default).
    download: download and prepare the dataset if it is not there.

  Raises:
    FileNotFoundError: the dataset is not prepared in `data_dir`.
  """
  train = tfds_source.open_split(
    TFDS_NAME, 'train', data_dir=data_dir, download=download
  )
  test = tfds_source.open_split(
    TFDS_NAME, 'test', data_dir=data_dir, download=download
  )
  splits = {
    split: tfds_source.Examples(f'cifar10:{split}', train, encode, indices)
    for split, indices in split_indices(len(train)).items()
  }
  splits['test'] = tfds_source.Examples('cifar10:test', test, encode)
  return splits


def create(c, **options) -> classification.ClassificationDatasets:
  """Builds the gray CIFAR-10 task from the validated data config `c`.

  Raises:
    ValueError: `c.seq_len` is shorter than the 1024 pixels.
    FileNotFoundError: `cifar10` is not prepared in `c.data_dir`.
  """
  if c.seq_len < NUM_PIXELS:
    raise ValueError(
      f'data.seq_len={c.seq_len} is shorter than the {NUM_PIXELS} pixels of '
      f'a 32x32 CIFAR-10 image; set data.seq_len={NUM_PIXELS}'
    )
  return classification.ClassificationDatasets.from_config(
    c,
    splits=load(data_dir=c.data_dir, download=c.tfds_download),
    vocab_size=VOCAB_SIZE,
    num_classes=NUM_CLASSES,
    first_token=0,  # Pixel levels; no padding.
    **options,
  )
