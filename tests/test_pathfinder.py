"""Pathfinder: labels by connected components, determinism, the release.

Labels are checked on the images alone with scipy.ndimage: the markers are
what survives an erosion by the marker square, and the paths are the
connected components once pixels at Chebyshev distance <= `link` are
joined, independently of how performer.data.pathfinder drew them.
"""

import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from performer.data import build as data_build
from performer.data import pathfinder


def _components(image: np.ndarray, link: int) -> tuple[np.ndarray, int]:
  """Labels of the paths: pixels within Chebyshev `link` are joined.

  Each pixel grows by a `link` x `link` square; two grown pixels touch
  (8-connectivity) exactly when the pixels are within `link`. The padding
  keeps the growth off the image's edges.
  """
  grown = ndimage.binary_dilation(
    np.pad(image > 0, link), np.ones((link, link), bool)
  )
  labels, count = ndimage.label(grown, np.ones((3, 3), bool))
  return labels[link:-link, link:-link], count


def _markers(image: np.ndarray, side: int) -> list[tuple[int, int]]:
  """One pixel of each place where a full `side` x `side` square is lit."""
  cores = ndimage.binary_erosion(image > 0, np.ones((side, side), bool))
  labels, count = ndimage.label(cores, np.ones((3, 3), bool))
  return [tuple(np.argwhere(labels == k)[0]) for k in range(1, count + 1)]


@pytest.mark.parametrize(
  'image_size,difficulty,count',
  [
    (32, 'hard', 60),
    (32, 'medium', 20),
    (32, 'easy', 20),
    (64, 'hard', 8),
    (128, 'hard', 4),
  ],
)
def test_labels_agree_with_connected_components(image_size, difficulty, count):
  g = pathfinder.geometry(image_size, difficulty)
  labels = []
  for index in range(count):
    image, label = pathfinder.generate_image(
      index, image_size=image_size, difficulty=difficulty, split='test'
    )
    assert image.shape == (image_size, image_size) and image.dtype == np.uint8
    assert set(np.unique(image)) == {0, 255}
    markers = _markers(image, g.marker)
    assert len(markers) == 2, f'image {index}: {len(markers)} markers'
    components, num_paths = _components(image, g.link)
    # Two long paths, and distractors when they fit.
    assert 2 <= num_paths <= 2 + g.num_distractors
    same = components[markers[0]] == components[markers[1]]
    assert label == int(same), f'image {index}'
    labels.append(label)
  assert sum(labels) == count // 2  # Labels alternate.


def test_generation_is_deterministic():
  a, label = pathfinder.generate_image(7, split='validation')
  b, again = pathfinder.generate_image(7, split='validation')
  np.testing.assert_array_equal(a, b)
  assert label == again == 1
  assert not np.array_equal(
    a, pathfinder.generate_image(9, split='validation')[0]
  )
  assert not np.array_equal(a, pathfinder.generate_image(7, split='train')[0])
  other_seed = pathfinder.generate_image(7, split='validation', seed=1)[0]
  assert not np.array_equal(a, other_seed)


def _config(tmp_path, **options):
  config = {
    'name': 'pathfinder',
    'data_dir': str(tmp_path / 'data'),
    'num_train': 8,
    'num_validation': 4,
    'num_test': 4,
    'seq_len': 1024,
  }
  config.update(options)
  return config


def test_create_generated_batches_and_cache(tmp_path, monkeypatch):
  ds = data_build.create(_config(tmp_path), batch_size=4, seed=0)
  assert (ds.vocab_size, ds.num_classes, ds.seq_len) == (256, 2, 1024)
  batch = next(iter(ds.train_loader()))
  assert (
    batch['inputs'].shape == (4, 1024) and batch['inputs'].dtype == np.int32
  )
  assert batch['mask'].dtype == bool and batch['mask'].all()
  assert batch['targets'].shape == (4,) and batch['targets'].dtype == np.int32
  assert set(np.unique(batch['inputs'])) <= {0, 255}

  (test,) = list(ds.eval_batches('test'))
  for i in range(4):
    image, label = pathfinder.generate_image(i, split='test')
    np.testing.assert_array_equal(test['inputs'][i], image.reshape(-1))
    assert test['targets'][i] == label
  np.testing.assert_array_equal(test['targets'], [0, 1, 0, 1])

  # A second build, and a smaller one, read the cache.
  def fail(*args):
    raise AssertionError('regenerated')

  monkeypatch.setattr(pathfinder, '_generate_rows', fail)
  smaller = data_build.create(
    _config(tmp_path, num_train=4, num_validation=2), batch_size=2, seed=1
  )
  (validation,) = list(smaller.eval_batches('validation'))
  np.testing.assert_array_equal(
    validation['inputs'][1],
    pathfinder.generate_image(1, split='validation')[0].reshape(-1),
  )


def test_bad_config(tmp_path):
  with pytest.raises(ValueError, match='seq_len=1000.*1024 pixels'):
    data_build.create(_config(tmp_path, seq_len=1000), batch_size=4, seed=0)
  with pytest.raises(ValueError, match="'extreme'"):
    data_build.create(
      _config(tmp_path, difficulty='extreme'), batch_size=4, seed=0
    )
  with pytest.raises(ValueError, match='image_size=8'):
    data_build.create(_config(tmp_path, image_size=8), batch_size=4, seed=0)


def _fake_release(root, num_images: int = 21) -> dict[str, int]:
  """Writes a tiny release: two metadata files, one empty image.

  Returns {image file: label} of the non-empty images.
  """
  base = root / 'pathfinder32' / 'curv_contour_length_14'
  (base / 'metadata').mkdir(parents=True)
  rng = np.random.default_rng(0)
  expected = {}
  for n in range(2):
    (base / 'imgs' / str(n)).mkdir(parents=True)
    lines = []
    for i in range(num_images // 2 + n):
      file = base / 'imgs' / str(n) / f'sample_{i}.png'
      label = int(rng.integers(2))
      if (n, i) == (0, 3):
        file.write_bytes(b'')  # The release has an empty file too.
      else:
        pixels = rng.integers(0, 256, (32, 32), dtype=np.uint8)
        Image.fromarray(pixels).save(file)
        expected[str(file)] = label
      lines.append(f'imgs/{n} sample_{i}.png {i} {label}\n')
    (base / 'metadata' / f'{n}.npy').write_text(''.join(lines))
  return expected


def test_release_loader(tmp_path):
  expected = _fake_release(tmp_path)
  assert len(expected) == 20
  for path in (tmp_path / 'pathfinder32', tmp_path):  # Either directory.
    ds = data_build.create(
      {'name': 'pathfinder', 'path': str(path), 'seq_len': 1024},
      batch_size=2,
      seed=0,
    )
    seen = {}
    for split, size in (('train', 16), ('validation', 2), ('test', 2)):
      rows = list(ds.eval_batches(split))
      assert sum(int(b['weights'].sum()) for b in rows) == size
      for b in rows:
        for inputs, target in zip(b['inputs'], b['targets'], strict=True):
          seen[inputs.astype(np.uint8).tobytes()] = int(target)
  # Every image once, with its label.
  want = {
    np.asarray(Image.open(f)).tobytes(): label for f, label in expected.items()
  }
  assert seen == want


def test_release_errors(tmp_path):
  with pytest.raises(
    FileNotFoundError, match='no pathfinder release.*metadata'
  ):
    data_build.create(
      {'name': 'pathfinder', 'path': str(tmp_path), 'seq_len': 1024},
      batch_size=2,
      seed=0,
    )
  _fake_release(tmp_path)
  with pytest.raises(ValueError, match='num_test=5 but the release has 2'):
    data_build.create(
      {
        'name': 'pathfinder',
        'path': str(tmp_path),
        'num_test': 5,
        'seq_len': 1024,
      },
      batch_size=2,
      seed=0,
    )
  missing = tmp_path / 'pathfinder32/curv_contour_length_14/imgs/1/sample_2.png'
  os.remove(missing)
  with pytest.raises(FileNotFoundError, match='sample_2.png'):
    data_build.create(
      {'name': 'pathfinder', 'path': str(tmp_path), 'seq_len': 1024},
      batch_size=2,
      seed=0,
    )
  with pytest.raises(FileNotFoundError, match='curv_baseline'):
    data_build.create(
      {
        'name': 'pathfinder',
        'path': str(tmp_path),
        'seq_len': 1024,
        'difficulty': 'easy',
      },
      batch_size=2,
      seed=0,
    )
