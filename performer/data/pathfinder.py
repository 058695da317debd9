"""LRA Pathfinder: are two marked dots on one dashed path? (2 classes).

Generated images in the style of Linsley et al. 2018 ("Learning long-range
spatial dependencies with horizontal gated recurrent units"), whose
generator made the LRA release (pathfinder32: 32x32, paths of 6, 9 or 14
dashes for easy / medium / hard; Path-X: 128x128, the same dash counts with
larger dashes). The procedure is our own.

An image holds two long paths of `num_dashes` dashes and short distractor
paths (a third as many dashes each, about 20 distractor dashes in all at
32x32 and 35 at 128x128, as in the release; a distractor that finds no room
is left out). A path is a chain of short straight dashes separated by gaps;
its heading turns by at most 40 degrees from one dash to the next. Two
square markers sit on path ends: label 1 (connected) puts them on the two
ends of one long path, label 0 on one end of each long path. The layout is
drawn the same way for both labels and both ends of both long paths keep
room for a marker, so only the marker placement depends on the label.
Labels alternate with the index, so every split is balanced.

Exact labels. Call two pixels linked when their Chebyshev distance is at
most `link` (`Geometry.link`: 2 at 32x32, 3 at 128x128).

* Every dash is an 8-connected line, and consecutive dashes of a path are
  linked: their continuous ends are `gap` apart, and rounding to pixels
  moves each by at most half a pixel per axis, so the rounded ends are at
  most floor(gap) + 1 = link apart.
* Every pixel of a path, its reserved marker squares included, is checked
  to be farther than `link` from every pixel of every other path before it
  is accepted; a dash that fails is redrawn with other turns, a path that
  gets stuck backs up a few dashes or restarts elsewhere, and an image
  whose long paths do not fit is redrawn.

So the components of the foreground under linking are exactly the paths,
and the label is 1 exactly when both markers lie in one component
(tests/test_pathfinder.py checks this with scipy.ndimage). A path also
keeps `link` away from its own dashes three or more back, so it never
touches itself. Markers are `marker` x `marker` squares, wider than the
dash lines, so an erosion by that square finds exactly the two markers.

Pixels are 0 (background) or 255, flattened row-major into image_size**2
tokens, token = pixel value (vocabulary 256, as LRA's image tasks): every
position is a real pixel, and the mask, which comes from the sequence
length, is all True.

Image i of a split is a function of (DATA_SEED, split, i) only
(`generate_image`). A 32x32 hard image takes about 10-35 ms of Python, too
slow to draw at every read for 200 epochs, so `create` draws each split
once, in parallel processes, into
`<data_dir>/pathfinder/<size>_<difficulty>_seed0_v1/<split>-<n>.npy`
(uint8, memory-mapped, written atomically); a cached split at least as long
serves a smaller request.
Default sizes: 200,000 images cut 80/10/10 (the release's size per
difficulty for pathfinder32).

With `c.path` set, the official LRA release is read instead:
`<path>/<difficulty dir>/metadata/<n>.npy` (text files despite the
extension; each line `imgs/<n> sample_<i>.png <id> <label>`) naming
`<path>/<difficulty dir>/imgs/<n>/sample_<i>.png`, where the difficulty
dirs are curv_baseline, curv_contour_length_9 and curv_contour_length_14.
`path` may also be the release root holding `pathfinder<image_size>/`.
Empty image files (the release has one) are skipped; the rest is shuffled
with DATA_SEED and cut 80/10/10.
"""

import concurrent.futures
import dataclasses
import fcntl
import math
import multiprocessing
import os

import numpy as np
import tensorflow_datasets as tfds

from performer.data import classification

DIFFICULTIES = {'easy': 6, 'medium': 9, 'hard': 14}
RELEASE_DIRS = {
  'easy': 'curv_baseline',
  'medium': 'curv_contour_length_9',
  'hard': 'curv_contour_length_14',
}
NUM_CLASSES = 2
VOCAB_SIZE = 256
MIN_IMAGE_SIZE = 24
NUM_EXAMPLES = 200_000
SPLIT_FRACTIONS = {'train': 0.8, 'validation': 0.1, 'test': 0.1}
SPLIT_IDS = {'train': 0, 'validation': 1, 'test': 2}
# The images are the same for every training seed.
DATA_SEED = 0
# Part of every example's seed: bump when the generated images change.
GENERATOR_VERSION = 1
FOREGROUND = 255
MAX_TURN = math.radians(40)
# Redraws before giving up: a dash's turn, a path's start, a whole image.
_TURN_TRIES = 8
_BACKTRACKS = 4
_START_TRIES = 20
_DISTRACTOR_TRIES = 3
_IMAGE_TRIES = 100
# Images per task when generating the cache.
_CHUNK = 1000


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Sizes in pixels of one image size and difficulty.

  Attributes:
    size: the image side.
    num_dashes: dashes of each of the two long paths.
    distractor_dashes: dashes of each distractor path.
    num_distractors: distractor paths.
    dash_length: distance between a dash's two end points.
    gap: distance between a dash's end and the next dash's start.
    thickness: side of the square brush that draws the dashes.
    marker: side of the square markers (odd).
    link: pixels this close (Chebyshev) belong to one path; distinct paths
      stay farther apart.
    border: empty pixels kept along the image's edges.
  """

  size: int
  num_dashes: int
  distractor_dashes: int
  num_distractors: int
  dash_length: float
  gap: float
  thickness: int
  marker: int
  link: int
  border: int


def geometry(image_size: int = 32, difficulty: str = 'hard') -> Geometry:
  """The dash and marker sizes for `image_size` and `difficulty`.

  Dashes grow with the image (1.5 px at 32x32, 6 px at 128x128), gaps with
  its square root, so that a path keeps its dash count at every size, as in
  the release.

  Raises:
    ValueError: an unknown difficulty or an image smaller than 24 pixels.
  """
  if difficulty not in DIFFICULTIES:
    raise ValueError(
      f'unknown pathfinder difficulty {difficulty!r}; valid: '
      f'{", ".join(DIFFICULTIES)}'
    )
  if image_size < MIN_IMAGE_SIZE:
    raise ValueError(
      f'pathfinder image_size={image_size} is too small; it must be at '
      f'least {MIN_IMAGE_SIZE} (LRA: 32, Path-X: 128)'
    )
  scale = image_size / 32
  num_dashes = DIFFICULTIES[difficulty]
  distractor_dashes = max(1, num_dashes // 3)
  # Distractor dashes in all: 20 at 32x32, 35 at 128x128 (the release's).
  budget = 20 + 7.5 * max(0.0, math.log2(scale))
  gap = 1.2 * math.sqrt(scale)
  return Geometry(
    size=image_size,
    num_dashes=num_dashes,
    distractor_dashes=distractor_dashes,
    num_distractors=max(1, round(budget / distractor_dashes)),
    dash_length=1.5 * scale,
    gap=gap,
    thickness=max(1, round(scale / 2)),
    marker=2 * max(1, round(1 + math.log2(scale))) + 1,
    link=math.floor(gap) + 1,
    border=1,
  )


def _square(center: np.ndarray, side: int) -> np.ndarray:
  """Pixels [n, 2] of the `side` x `side` square centred on a pixel."""
  r = np.arange(side) - side // 2
  rows, cols = np.meshgrid(r, r, indexing='ij')
  offsets = np.stack([rows.ravel(), cols.ravel()], axis=1)
  return np.rint(center).astype(np.int64) + offsets


class _Canvas:
  """Occupancy of the paths drawn so far, and the drawing of new dashes."""

  def __init__(self, g: Geometry):
    self.g = g
    step = g.dash_length + g.gap
    # Maps are padded so that no dash or look-ahead tried from inside the
    # image indexes past them, and the padding and the border are marked
    # taken: then "inside and off the other paths" is one lookup. Pixel
    # coordinates here are padded ones.
    self.pad = math.ceil(g.gap + g.dash_length + 2 * step)
    self.pad += g.thickness + g.link + 2
    n = g.size + 2 * self.pad
    # Pixels within `link` of an accepted path: later paths avoid them.
    self.blocked = np.ones((n, n), bool)
    inner = slice(self.pad + g.border, self.pad + g.size - g.border)
    self.blocked[inner, inner] = False
    self._halo = _square(np.zeros(2), 2 * g.link + 1)
    brush = np.arange(g.thickness)
    self._brush = np.stack(np.meshgrid(brush, brush, indexing='ij'), -1)
    self._brush = self._brush.reshape(1, 1, -1, 2)
    # Samples at most half a pixel apart round to 8-adjacent pixels, so a
    # dash is an 8-connected line.
    steps = math.ceil(2 * g.dash_length) + 1
    self._t = np.linspace(0.0, 1.0, steps)[None, :, None]
    # Points checked ahead of a new dash: up to two dashes further.
    self._ahead = np.linspace(step / 2, 2 * step, 4)[None, :, None]

  @staticmethod
  def free(pixels: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Which rows of pixels [..., n, 2] are all off `taken`."""
    return ~taken[pixels[..., 0], pixels[..., 1]].any(axis=-1)

  def halo(self, pixels: np.ndarray, into: np.ndarray):
    """Marks every pixel within `link` of `pixels` in the map `into`."""
    near = (pixels[:, None, :] + self._halo[None]).reshape(-1, 2)
    into[near[:, 0], near[:, 1]] = True

  def next_dash(self, point, headings, taken):
    """Tries one dash from `point` per heading; the best or None.

    Of the headings whose dash is free, the first that also leaves room
    ahead, else the first: looking ahead steers a path away from walls and
    other paths before it is trapped. Returns (heading, end, pixels).
    """
    directions = np.empty((len(headings), 1, 2))
    directions[:, 0, 0] = np.sin(headings)
    directions[:, 0, 1] = np.cos(headings)
    ends = point + self.g.dash_length * directions  # [T, 1, 2]
    lines = np.rint(point + self._t * (ends - point)).astype(np.int64)
    pixels = (lines[:, :, None, :] + self._brush).reshape(len(headings), -1, 2)
    ok = self.free(pixels, taken)
    if not ok.any():
      return None
    probes = np.rint(ends + self._ahead * directions).astype(np.int64)
    roomy = ok & self.free(probes[:, :, None, :], taken).all(-1)
    k = int(np.argmax(roomy)) if roomy.any() else int(np.argmax(ok))
    return headings[k], ends[k, 0], pixels[k]


@dataclasses.dataclass
class _Path:
  dashes: list  # Pixel arrays [n, 2].
  ends: tuple  # The marker squares at the start and the end.


def _grow(rng, canvas: _Canvas, num_dashes: int, markers: bool, tries: int):
  """Draws one path that avoids the canvas's paths; None if none fits.

  With `markers`, room for a marker square is kept at both ends. A dash
  that does not fit is redrawn with other turns; when none fits, the path
  backs up a dash (a few times) before it restarts elsewhere.
  """
  g = canvas.g
  lo = canvas.pad + g.border + g.marker // 2
  hi = canvas.pad + g.size - 1 - g.border - g.marker // 2
  for _ in range(tries):
    point = rng.uniform(lo, hi, 2)
    # Pieces (markers, dashes) in order; a new piece keeps `link` away from
    # the pieces three or more back (`own`), so a path never touches itself.
    pieces, states = [], []
    own = canvas.blocked.copy()
    if markers:
      pieces.append(_square(point, g.marker))
      if not canvas.free(pieces[0][None], canvas.blocked)[0]:
        continue
    first = len(pieces)
    heading = rng.uniform(0, 2 * math.pi)
    backtracks = _BACKTRACKS
    while len(pieces) - first < num_dashes:
      if len(pieces) == first:  # Any direction for the first dash.
        headings = rng.uniform(0, 2 * math.pi, _TURN_TRIES)
      else:
        headings = heading + rng.uniform(-MAX_TURN, MAX_TURN, _TURN_TRIES)
      dash = canvas.next_dash(point, headings, own)
      if dash is None:
        if len(pieces) == first or not backtracks:
          break
        backtracks -= 1
        pieces.pop()
        point, heading, own = states.pop()
        continue
      states.append((point, heading, own))
      heading, end, pixels = dash
      pieces.append(pixels)
      if len(pieces) > 2:
        own = own.copy()  # The saved map stays as it was, for backing up.
        canvas.halo(pieces[-3], own)
      point = end + g.gap * np.array([math.sin(heading), math.cos(heading)])
    if len(pieces) - first < num_dashes:
      continue
    ends = (None, None)
    if markers:
      pieces.append(_square(end, g.marker))
      if not canvas.free(pieces[-1][None], own)[0]:
        continue
      ends = (pieces[0], pieces[-1])
    canvas.halo(np.concatenate(pieces), canvas.blocked)
    dashes = pieces[first : first + num_dashes]
    return _Path(dashes, ends)
  return None


def generate_image(
  index: int,
  *,
  split: str = 'train',
  image_size: int = 32,
  difficulty: str = 'hard',
  seed: int = DATA_SEED,
) -> tuple[np.ndarray, int]:
  """Draws example `index` of `split`: (uint8 image [S, S], label).

  A function of (seed, split, index) only; label = index % 2.

  Raises:
    ValueError: an unknown split or difficulty, or a too small image.
  """
  if split not in SPLIT_IDS:
    raise ValueError(f'unknown split {split!r}; valid: {", ".join(SPLIT_IDS)}')
  g = geometry(image_size, difficulty)
  rng = np.random.default_rng(
    [GENERATOR_VERSION, seed, SPLIT_IDS[split], index]
  )
  label = index % 2
  for _ in range(_IMAGE_TRIES):
    canvas = _Canvas(g)
    paths = []
    while len(paths) < 2:
      path = _grow(rng, canvas, g.num_dashes, True, _START_TRIES)
      if path is None:
        break
      paths.append(path)
    if len(paths) == 2:
      break
  else:
    raise RuntimeError(
      f'no pathfinder layout fits a {image_size}x{image_size} image after '
      f'{_IMAGE_TRIES} tries'
    )
  for _ in range(g.num_distractors):
    distractor = _grow(
      rng, canvas, g.distractor_dashes, False, _DISTRACTOR_TRIES
    )
    if distractor is not None:
      paths.append(distractor)
  if label:
    marked = paths[rng.integers(2)].ends
  else:
    marked = tuple(paths[k].ends[rng.integers(2)] for k in range(2))
  image = np.zeros((image_size, image_size), np.uint8)
  for pixels in [d for path in paths for d in path.dashes] + list(marked):
    image[pixels[:, 0] - canvas.pad, pixels[:, 1] - canvas.pad] = FOREGROUND
  return image, label


def split_sizes(c, total: int) -> dict[str, int]:
  """Examples per split: c.num_<split>, or 80/10/10 of `total`."""
  sizes = {}
  for split, fraction in SPLIT_FRACTIONS.items():
    sizes[split] = c[f'num_{split}'] or round(total * fraction)
  return sizes


def _generate_rows(
  split: str, start: int, stop: int, image_size: int, difficulty: str, seed: int
) -> np.ndarray:
  """Images [start, stop) of a split, flattened: uint8 [stop - start, S*S]."""
  rows = np.empty((stop - start, image_size**2), np.uint8)
  for i in range(start, stop):
    image, _ = generate_image(
      i, split=split, image_size=image_size, difficulty=difficulty, seed=seed
    )
    rows[i - start] = image.reshape(-1)
  return rows


def _workers() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def cache_dir(data_dir: str, image_size: int, difficulty: str, seed: int):
  """Where generated images live: <data_dir>/pathfinder/<S>_<difficulty>_..."""
  root = data_dir or tfds.core.constants.get_default_data_dir()
  name = f'{image_size}_{difficulty}_seed{seed}_v{GENERATOR_VERSION}'
  return os.path.join(root, 'pathfinder', name)


def _write_split(file: str, split: str, size: int, g: Geometry, seed: int):
  """Generates `size` images of `split` into the .npy `file` (atomically)."""
  directory = os.path.dirname(file)
  tmp = os.path.join(directory, f'.tmp-{os.getpid()}-{os.path.basename(file)}')
  out = np.lib.format.open_memmap(
    tmp, mode='w+', dtype=np.uint8, shape=(size, g.size**2)
  )
  chunks = [(a, min(a + _CHUNK, size)) for a in range(0, size, _CHUNK)]
  args = [(split, a, b, g.size, _difficulty(g), seed) for a, b in chunks]
  workers = min(_workers(), len(chunks))
  try:
    if workers > 1:
      # Spawned, not forked: the parent may hold JAX's threads.
      context = multiprocessing.get_context('spawn')
      with concurrent.futures.ProcessPoolExecutor(workers, context) as pool:
        blocks = pool.map(_generate_rows, *zip(*args, strict=True))
        for (a, b), block in zip(chunks, blocks, strict=True):
          out[a:b] = block
    else:
      for (a, b), arg in zip(chunks, args, strict=True):
        out[a:b] = _generate_rows(*arg)
    out.flush()
    del out
    os.replace(tmp, file)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _difficulty(g: Geometry) -> str:
  return next(d for d, n in DIFFICULTIES.items() if n == g.num_dashes)


class CachedExamples:
  """Random-access examples of one split, memory-mapped from the cache.

  Row i of the file is `generate_image(i, split=...)`, label i % 2. Pickles
  as its path, so grain workers map the file themselves.
  """

  def __init__(self, name: str, file: str, size: int):
    self.name = name
    self.file = file
    self.size = size
    self._rows = None

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < self.size:
      raise IndexError(f'{self.name}: index {index} not in [0, {self.size})')
    if self._rows is None:
      self._rows = np.load(self.file, mmap_mode='r')
    return {
      'inputs': np.asarray(self._rows[index], np.int32),
      'targets': index % 2,
    }

  def __getstate__(self):
    return {'name': self.name, 'file': self.file, 'size': self.size}

  def __setstate__(self, state):
    self.__init__(**state)

  def __repr__(self) -> str:
    return f'pathfinder.CachedExamples({self.name!r}, {self.size} images)'


def load_generated(
  data_dir: str,
  sizes: dict[str, int],
  image_size: int = 32,
  difficulty: str = 'hard',
) -> dict[str, CachedExamples]:
  """The generated splits, drawn once (in parallel) and cached on disk.

  A split's file holds its first n images; any cached file at least as
  long serves a smaller request.
  """
  g = geometry(image_size, difficulty)
  directory = cache_dir(data_dir, image_size, difficulty, DATA_SEED)
  os.makedirs(directory, exist_ok=True)
  splits = {}
  # Processes that start together would all generate: one does.
  with open(os.path.join(directory, '.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    for split, size in sizes.items():
      cached = [
        (int(n[len(split) + 1 : -4]), n)
        for n in os.listdir(directory)
        if n.startswith(f'{split}-') and n.endswith('.npy')
      ]
      enough = sorted(c for c in cached if c[0] >= size)
      if enough:
        file = os.path.join(directory, enough[0][1])
      else:
        file = os.path.join(directory, f'{split}-{size}.npy')
        _write_split(file, split, size, g, DATA_SEED)
      splits[split] = CachedExamples(f'pathfinder:{split}', file, size)
  return splits


def _layout_help(image_size: int) -> str:
  return (
    f'expected <path>/<difficulty dir>/metadata/<n>.npy and '
    f'<path>/<difficulty dir>/imgs/<n>/sample_<i>.png (difficulty dirs '
    f'{", ".join(RELEASE_DIRS.values())}), where <path> is the LRA '
    f"release's pathfinder{image_size} directory"
  )


def release_files(
  path: str, difficulty: str, image_size: int = 32
) -> list[tuple[str, int]]:
  """Lists the release's (image file, label) pairs of one difficulty.

  In metadata file order (files by number, lines in order), without empty
  image files.

  Raises:
    FileNotFoundError: no metadata or a missing image, naming the paths.
    ValueError: an unknown difficulty or a malformed metadata line.
  """
  if difficulty not in RELEASE_DIRS:
    raise ValueError(
      f'unknown pathfinder difficulty {difficulty!r}; valid: '
      f'{", ".join(RELEASE_DIRS)}'
    )
  candidates = [
    os.path.join(path, RELEASE_DIRS[difficulty]),
    os.path.join(path, f'pathfinder{image_size}', RELEASE_DIRS[difficulty]),
  ]
  directory = next((d for d in candidates if os.path.isdir(d)), None)
  if directory is None:
    raise FileNotFoundError(
      f'no pathfinder release directory at {" or ".join(candidates)}; '
      + _layout_help(image_size)
    )
  meta_dir = os.path.join(directory, 'metadata')
  names = os.listdir(meta_dir) if os.path.isdir(meta_dir) else []
  names = [n for n in names if n.endswith('.npy') and n[:-4].isdigit()]
  if not names:
    raise FileNotFoundError(
      f'no metadata files <n>.npy in {meta_dir}; ' + _layout_help(image_size)
    )
  files = []
  for name in sorted(names, key=lambda n: int(n[:-4])):
    meta = os.path.join(meta_dir, name)
    with open(meta) as f:
      for number, line in enumerate(f, start=1):
        fields = line.split()
        if not fields:
          continue
        if len(fields) < 4 or fields[3] not in ('0', '1'):
          raise ValueError(
            f'{meta}:{number}: expected "imgs/<n> sample_<i>.png <id> '
            f'<label 0 or 1>", got {line.strip()!r}'
          )
        image = os.path.join(directory, fields[0], fields[1])
        try:
          empty = os.path.getsize(image) == 0
        except FileNotFoundError:
          raise FileNotFoundError(
            f'{image}, listed in {meta}:{number}, does not exist; '
            + _layout_help(image_size)
          ) from None
        if not empty:
          files.append((image, int(fields[3])))
  return files


class ReleaseExamples:
  """Random-access examples read from the release's PNG files."""

  def __init__(self, name: str, files: list[tuple[str, int]], image_size: int):
    self.name = name
    self.files = files
    self.image_size = image_size

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> dict:
    from PIL import Image  # Only the release needs Pillow.

    image_file, label = self.files[int(index)]
    with Image.open(image_file) as image:
      pixels = np.asarray(image.convert('L'))
    if pixels.shape != (self.image_size, self.image_size):
      raise ValueError(
        f'{image_file} is {pixels.shape[1]}x{pixels.shape[0]}, not '
        f'data.image_size={self.image_size}; set data.image_size to match'
      )
    return {'inputs': pixels.reshape(-1).astype(np.int32), 'targets': label}

  def __repr__(self) -> str:
    return f'pathfinder.ReleaseExamples({self.name!r}, {len(self)} images)'


def load_release(c) -> dict[str, ReleaseExamples]:
  """The release's images of c.difficulty, shuffled and cut 80/10/10.

  Raises:
    FileNotFoundError: missing release files.
    ValueError: a split asked larger than the release allows.
  """
  files = release_files(c.path, c.difficulty, c.image_size)
  order = np.random.default_rng(DATA_SEED).permutation(len(files))
  cuts = {s: round(len(files) * f) for s, f in SPLIT_FRACTIONS.items()}
  cuts['train'] = len(files) - cuts['validation'] - cuts['test']
  # A split takes the first c.num_<split> images of its part, or all.
  default = {s: c[f'num_{s}'] or cuts[s] for s in cuts}
  splits, start = {}, 0
  for split in ('validation', 'test', 'train'):
    if default[split] > cuts[split]:
      raise ValueError(
        f'data.num_{split}={default[split]} but the release has '
        f'{cuts[split]} {split} images ({len(files)} in all)'
      )
    chosen = order[start : start + default[split]]
    splits[split] = ReleaseExamples(
      f'pathfinder:{split}', [files[i] for i in chosen], c.image_size
    )
    start += cuts[split]
  return splits


def create(c, **options) -> classification.ClassificationDatasets:
  """Builds Pathfinder from the validated data config `c`.

  Generated images by default; the LRA release when c.path is set. Sizes
  from c.num_train, c.num_validation, c.num_test (0: 80/10/10 of 200,000
  generated images, or of the release). `seed` only shuffles training.

  Raises:
    ValueError: `c.seq_len` shorter than image_size**2, an unknown
      difficulty or a too small image.
    FileNotFoundError: c.path without the release's files.
  """
  num_pixels = c.image_size**2
  if c.seq_len < num_pixels:
    raise ValueError(
      f'data.seq_len={c.seq_len} is shorter than the {num_pixels} pixels of '
      f'a {c.image_size}x{c.image_size} pathfinder image; set '
      f'data.seq_len={num_pixels}'
    )
  if c.path:
    splits = load_release(c)
  else:
    splits = load_generated(
      c.data_dir, split_sizes(c, NUM_EXAMPLES), c.image_size, c.difficulty
    )
  return classification.ClassificationDatasets.from_config(
    c,
    splits=splits,
    vocab_size=VOCAB_SIZE,
    num_classes=NUM_CLASSES,
    first_token=0,  # Pixel levels; no padding.
    **options,
  )
