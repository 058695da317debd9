"""Protein sequences from a FASTA file (paper Table 2, TrEMBL).

The user's FASTA file (`data.path`: TrEMBL, Swiss-Prot or any UniProt
download) is parsed, checked and written once as a TFDS dataset
(array_record) under `data.data_dir`, then read through `tfds` data sources
and fed by grain, like every other corpus of this package.

FASTA format accepted:

* a record is a header line starting with '>' and one or more sequence
  lines; the record id is the header's first word ('>sp|P69905|HBA_HUMAN
  Hemoglobin ...' has id 'sp|P69905|HBA_HUMAN');
* blank lines anywhere, Windows (CRLF) line endings and spaces inside
  sequence lines are ignored;
* letters: the 20 standard amino acids ACDEFGHIKLMNPQRSTVWY, U
  (selenocysteine), O (pyrrolysine), B (D or N), Z (E or Q) and X (unknown),
  the IUPAC letters UniProt uses. Lower case is accepted and read as upper
  case (some tools write soft-masked regions in lower case; the letter means
  the same residue). Anything else ('*', '-', digits, J, ...) is an error.
* errors (ValueError) name the file, the line number and the record's
  header: an invalid letter, a record without sequence, sequence lines
  before the first header, an empty file. Nothing is silently skipped.

Vocabulary (29 ids): 0 pad, 1 mask, 2 bos (start of a protein), 3 eos (end
of a protein; the separator between proteins in concatenated streams), then
the 25 letters in the order above: A=4, C=5, ..., Y=23, U=24, O=25, B=26,
Z=27, X=28.

Split: each record goes to train, validation or test by a hash of its id
(SHA-1, first 8 bytes, modulo 100: < 90 train, < 95 validation, else test),
so the split is fixed and does not depend on the order of the file or on
the other records; a record keeps its split when the file grows. Duplicate
ids land in the same split. Within a split, records keep the file's order.

A split without any record (a file of a few dozen records) is an error
(ValueError naming the split, the number of records and the file): the
trainer evaluates 'validation' and 'test'.

Building (once per file): one streaming pass parses and checks the FASTA
file and spills each record as 'id TAB sequence' to a temporary file of its
split (next to the dataset, deleted when done); TFDS then writes each split
from its spill file. Memory: one record at a time while parsing, and TFDS's
writer, which buffers up to 1 GB of examples and past that sorts its 1000
disk buckets one at a time (about 1/1000 of a split each: ~100 MB for
TrEMBL; the keys are chosen for that). TFDS's disk buckets use
`tf.io.gfile`: a split over 1 GB needs TensorFlow installed
(tensorflow-cpu), which requirements.txt does not list. Disk, while
building: the spill files (about the size of the sequences) besides the
dataset itself. Nothing holds the whole file.

Cache: the dataset is stored under data_dir/protein_fasta/<key>/1.0.0 where
the key hashes the file's absolute path, size and modification time, so an
edited or replaced file is parsed again and an unchanged one is not.

Examples (`ProteinDatasets`):

* objective 'causal' (task 'lm'): inputs [bos, a1, ..., an], targets [a1,
  ..., an, eos]; a protein longer than seq_len keeps its first seq_len
  positions (as the paper cuts TrEMBL to L = 1024), in training and
  evaluation alike; shorter ones are padded with weight 0.
* objective 'masked' (task 'mlm', BERT-style, for a bidirectional model):
  the tokens [bos, a1, ..., an, eos] (first seq_len of them); each amino
  acid (never a special token) is selected with probability mask_rate;
  a selected one is replaced by the mask token (80%), a random letter
  (10%, uniform over the 25) or kept (10%). Targets are the original
  tokens; weights are 1 at the selected positions only. Training masks
  come from grain's per-record generator (seeded by the loader seed and
  the record's position in the shuffled stream: new masks every epoch,
  replayed exactly after a restore); evaluation masks are seeded by the
  example's index, the same in every evaluation.
* concatenate=True: a split's proteins joined into one stream, each
  followed by eos, and cut into windows (the L = 8192 experiment). Causal:
  the windows of performer.data.lm (targets shifted by one, every offset in
  training); masked: windows of seq_len tokens masked as above. The stream
  is held in memory at one byte per token.
"""

import fcntl
import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import grain
import numpy as np
import tensorflow_datasets as tfds

from performer.data import lm, tfds_source

TFDS_NAME = 'protein_fasta'
SPLITS = ('train', 'validation', 'test')
OBJECTIVES = ('causal', 'masked')

PAD, MASK, BOS, EOS = 0, 1, 2, 3
SPECIAL_TOKENS = ('<pad>', '<mask>', '<bos>', '<eos>')
STANDARD = 'ACDEFGHIKLMNPQRSTVWY'
AMINO_ACIDS = STANDARD + 'UOBZX'
FIRST_LETTER = len(SPECIAL_TOKENS)
VOCAB_SIZE = FIRST_LETTER + len(AMINO_ACIDS)

# Split buckets of the id hash, out of 100.
TRAIN_BUCKETS, VALIDATION_BUCKETS = 90, 5
# Replacement of selected tokens in masked examples: mask, random, keep.
MASK_PROB, RANDOM_PROB = 0.8, 0.1
# Seeds evaluation masks (with the example index), apart from training's.
EVAL_MASK_SEED = 20210301

# Byte -> token id; -1 for bytes that are no amino-acid letter.
_LUT = np.full(256, -1, np.int16)
for _i, _letter in enumerate(AMINO_ACIDS):
  _LUT[ord(_letter)] = FIRST_LETTER + _i
  _LUT[ord(_letter.lower())] = FIRST_LETTER + _i


# ---------------------------------------------------------------------------
# FASTA parsing.


def _check_letters(line: str, header: str, number: int, path: str) -> str:
  """Returns `line` upper-cased, or raises naming the first bad letter."""
  raw = line.encode('utf-8', errors='replace')
  bad = np.flatnonzero(_LUT[np.frombuffer(raw, np.uint8)] < 0)
  if bad.size:
    char = raw[bad[0] : bad[0] + 1].decode('utf-8', errors='replace')
    raise ValueError(
      f'{path}:{number}: invalid amino-acid letter {char!r} (position '
      f'{bad[0] + 1}) in record {header!r}; valid letters: {AMINO_ACIDS} '
      '(lower case accepted)'
    )
  return line.upper()


def parse_fasta(path: str) -> Iterator[tuple[str, str, int]]:
  """Yields (header, sequence, header line number) for each record.

  The header is the text after '>' (stripped); the sequence is upper case,
  its lines joined. See the module docstring for the format.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: a malformed record or an empty file, naming the line and
      the record's header.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'FASTA file {path} does not exist')
  header, header_line, parts, records = None, 0, [], 0
  with open(path, encoding='utf-8', errors='replace', newline=None) as f:
    for number, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      if line.startswith('>'):
        if header is not None:
          yield _record(header, parts, header_line, path)
          records += 1
        header, header_line, parts = line[1:].strip(), number, []
        if not header:
          raise ValueError(f'{path}:{number}: empty header (a lone ">")')
        continue
      if header is None:
        raise ValueError(
          f'{path}:{number}: sequence data before the first header (a record '
          f"needs a '>' line): {line[:40]!r}"
        )
      parts.append(_check_letters(line.replace(' ', ''), header, number, path))
  if header is not None:
    yield _record(header, parts, header_line, path)
    records += 1
  if not records:
    raise ValueError(f'{path} holds no FASTA record: the file is empty')


def _record(header, parts, header_line, path) -> tuple[str, str, int]:
  sequence = ''.join(parts)
  if not sequence:
    raise ValueError(
      f'{path}:{header_line}: record {header!r} has an empty sequence'
    )
  return header, sequence, header_line


def record_id(header: str) -> str:
  """The record's id: the header's first word."""
  return header.split()[0]


def split_of(rid: str) -> str:
  """The split of a record id: a fixed hash of the id (module docstring)."""
  digest = hashlib.sha1(rid.encode('utf-8')).digest()
  bucket = int.from_bytes(digest[:8], 'big') % 100
  if bucket < TRAIN_BUCKETS:
    return 'train'
  if bucket < TRAIN_BUCKETS + VALIDATION_BUCKETS:
    return 'validation'
  return 'test'


def encode_sequence(sequence: str | bytes) -> np.ndarray:
  """Token ids (int32) of an amino-acid string (no bos or eos).

  Raises:
    ValueError: a character that is no amino-acid letter.
  """
  if isinstance(sequence, str):
    sequence = sequence.encode('utf-8', errors='replace')
  ids = _LUT[np.frombuffer(sequence, np.uint8)]
  if ids.size and ids.min() < 0:
    bad = sequence[int(np.argmin(ids)) : int(np.argmin(ids)) + 1]
    raise ValueError(
      f'invalid amino-acid letter {bad!r}; valid letters: {AMINO_ACIDS}'
    )
  return ids.astype(np.int32)


def decode_tokens(ids) -> str:
  """Letters of token ids; eos as a newline, pad and bos dropped, mask '#'."""
  out = []
  for i in np.asarray(ids).reshape(-1).tolist():
    if i >= FIRST_LETTER and i < VOCAB_SIZE:
      out.append(AMINO_ACIDS[i - FIRST_LETTER])
    elif i == EOS:
      out.append('\n')
    elif i == MASK:
      out.append('#')
  return ''.join(out)


# ---------------------------------------------------------------------------
# The TFDS dataset.


def _file_key(path: str) -> str:
  """Names the cached copy of `path`: its absolute path, size and mtime."""
  stat = os.stat(path)
  text = f'{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}'
  return 'f' + hashlib.sha1(text.encode('utf-8')).hexdigest()[:16]


class ProteinFastaConfig(tfds.core.BuilderConfig):
  """One FASTA file; the config name is its `_file_key`."""

  def __init__(self, *, path: str, **kwargs):
    super().__init__(**kwargs)
    self.path = path


class ProteinFasta(tfds_source.LocalBuilder):
  """The records of the user's FASTA file, split by a hash of their ids."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'FASTA records split 90/5/5 by id hash.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__,
      features=tfds.features.FeaturesDict(
        {'id': tfds.features.Text(), 'sequence': tfds.features.Text()}
      ),
      homepage='https://www.uniprot.org/help/downloads',
      disable_shuffling=True,  # Keep the file's order within a split.
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The file is local.
    # One pass over the FASTA file: parse, check and spill each record to
    # its split's file, so a malformed file or an empty split fails before
    # TFDS writes anything, and the (up to 100 GB) FASTA file is read once.
    self._spill_dir = tempfile.mkdtemp(
      prefix=f'.{TFDS_NAME}_spill_', dir=os.fspath(self.data_dir_root)
    )
    counts = spill_splits(self.builder_config.path, self._spill_dir)
    return {
      split: self._generate_examples(
        os.path.join(self._spill_dir, split), counts[split]
      )
      for split in SPLITS
    }

  def _generate_examples(self, spill_path, count):
    with open(spill_path, encoding='utf-8') as f:
      for i, line in enumerate(f):
        rid, _, sequence = line.rstrip('\n').partition('\t')
        # Integer keys spread evenly over [0, 2**128), in file order: TFDS
        # writes a split in key order (disable_shuffling) and, past 1 GB,
        # sorts its 1000 disk buckets (by key range) one at a time. With
        # other keys it numbers the examples 0, 1, ..., which all land in
        # the first bucket: the whole split would be sorted in memory.
        yield (i << 128) // count, {'id': rid, 'sequence': sequence}
    os.remove(spill_path)

  def remove_spill(self) -> None:
    """Deletes the spill files of `_split_generators`, if any are left."""
    spill_dir = getattr(self, '_spill_dir', None)
    if spill_dir:
      shutil.rmtree(spill_dir, ignore_errors=True)
      self._spill_dir = None


def spill_splits(path: str, spill_dir: str) -> dict[str, int]:
  """Parses `path` once into one 'id TAB sequence' file per split.

  Memory: one record at a time (plus file buffers). Disk: about the size
  of the file's sequences, under `spill_dir`, until the splits are written.

  Returns:
    split -> number of records.

  Raises:
    ValueError: a malformed file (see `parse_fasta`), or a split without
      any record (the trainer evaluates 'validation' and 'test'), naming the
      split, the number of records and the file.
  """
  counts = dict.fromkeys(SPLITS, 0)
  files = {
    split: open(os.path.join(spill_dir, split), 'w', encoding='utf-8')
    for split in SPLITS
  }
  try:
    for header, sequence, _ in parse_fasta(path):
      rid = record_id(header)
      split = split_of(rid)
      files[split].write(f'{rid}\t{sequence}\n')
      counts[split] += 1
  finally:
    for f in files.values():
      f.close()
  total = sum(counts.values())
  for split, count in counts.items():
    if not count:
      raise ValueError(
        f"{path}: the {split!r} split is empty: none of the file's {total} "
        f'records falls in it (records are split 90/5/5 by a hash of their '
        f'id: {counts}); use a file of a few hundred records or more'
      )
  return counts


def data_sources(path: str, data_dir: str = '') -> dict:
  """The TFDS data source of each split of FASTA file `path`.

  Builds the dataset on first use (and again when the file changed).

  Raises:
    ValueError: `path` is empty, the file is malformed, or a split has no
      record.
    FileNotFoundError: the file does not exist.
  """
  if not path:
    raise ValueError(
      'data.path is empty: set it to the FASTA file of protein sequences '
      '(e.g. --config.data.path=/data/uniprot_trembl.fasta)'
    )
  if not os.path.isfile(path):
    raise FileNotFoundError(f'data.path={path}: no such FASTA file')
  data_dir = data_dir or tfds.core.constants.get_default_data_dir()
  os.makedirs(data_dir, exist_ok=True)
  config = ProteinFastaConfig(
    name=_file_key(path), path=os.path.abspath(path), version='1.0.0'
  )
  builder = ProteinFasta(
    config=config, data_dir=data_dir, file_format='array_record'
  )
  # Processes that start together would all build it; one builds.
  with open(os.path.join(data_dir, f'.{TFDS_NAME}.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
      )
    finally:
      builder.remove_spill()
  sources = {}
  for split in SPLITS:
    # A dataset built before empty splits were an error may lack one.
    splits = builder.info.splits
    if split not in splits or not splits[split].num_examples:
      raise ValueError(
        f'{path}: the {split!r} split of the dataset under {data_dir} is '
        'empty; delete that directory to rebuild it'
      )
    sources[split] = builder.as_data_source(split=split)
  return sources


# ---------------------------------------------------------------------------
# Examples.


def causal_example(sequence_ids: np.ndarray, seq_len: int) -> dict:
  """Next-token example of one protein (module docstring)."""
  tokens = np.concatenate([[BOS], sequence_ids, [EOS]]).astype(np.int32)
  n = min(len(tokens) - 1, seq_len)
  example = {
    'inputs': np.zeros(seq_len, np.int32),
    'targets': np.zeros(seq_len, np.int32),
    'weights': np.zeros(seq_len, np.float32),
  }
  example['inputs'][:n] = tokens[:n]
  example['targets'][:n] = tokens[1 : n + 1]
  example['weights'][:n] = 1.0
  return example


def masked_example(
  tokens: np.ndarray, seq_len: int, mask_rate: float, rng: np.random.Generator
) -> dict:
  """BERT-style masked example of `tokens` (cut or padded to `seq_len`)."""
  tokens = np.asarray(tokens, np.int32)[:seq_len]
  n = len(tokens)
  targets = np.zeros(seq_len, np.int32)
  targets[:n] = tokens
  # Draw all randomness at full length, so a position's fate does not
  # depend on the sequence's length.
  select_u = rng.random(seq_len)
  action_u = rng.random(seq_len)
  random_letters = rng.integers(FIRST_LETTER, VOCAB_SIZE, seq_len)
  selected = (select_u < mask_rate) & (targets >= FIRST_LETTER)
  inputs = targets.copy()
  to_mask = selected & (action_u < MASK_PROB)
  to_random = selected & (action_u >= MASK_PROB)
  to_random &= action_u < MASK_PROB + RANDOM_PROB
  inputs[to_mask] = MASK
  inputs[to_random] = random_letters[to_random]
  return {
    'inputs': inputs,
    'targets': targets,
    'weights': selected.astype(np.float32),
  }


def protein_tokens(record: dict) -> np.ndarray:
  """Token ids of a stored record's sequence (no bos or eos)."""
  return encode_sequence(record['sequence'])


class Proteins:
  """Grain data source: the token ids of a split's proteins."""

  def __init__(self, source, name: str):
    self._source = source
    self._name = name

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> np.ndarray:
    return protein_tokens(self._source[int(index)])

  def __repr__(self) -> str:
    # Grain compares this in a restored state: keep it free of addresses.
    return f'Proteins({self._name!r}, records={len(self)})'


class MaskedWindows:
  """Grain data source: the windows of `seq_len` tokens of a stream."""

  def __init__(self, split: lm.StreamSplit, seq_len: int):
    if len(split) < seq_len:
      raise ValueError(
        f'{split.name} has {len(split)} tokens, fewer than seq_len = '
        f'{seq_len}: too short to train on'
      )
    self._tokens = split.tokens()
    self._name = split.name
    self._seq_len = seq_len

  def __len__(self) -> int:
    return len(self._tokens) - self._seq_len + 1

  def __getitem__(self, key: int) -> np.ndarray:
    return np.asarray(self._tokens[key : key + self._seq_len], np.int32)

  def __repr__(self) -> str:
    return (
      f'MaskedWindows({self._name!r}, tokens={len(self._tokens)}, '
      f'seq_len={self._seq_len})'
    )


class CausalProtein(grain.transforms.Map):
  """A protein's token ids -> a next-token example."""

  def __init__(self, seq_len: int):
    self.seq_len = seq_len

  def map(self, element: np.ndarray) -> dict:
    return causal_example(element, self.seq_len)


class MaskTokens(grain.transforms.RandomMap):
  """Token ids -> a masked example, with grain's per-record generator.

  Args:
    seq_len: example length.
    mask_rate: fraction of amino acids selected.
    with_ends: add bos and eos around the tokens (one protein per example);
      False for windows of a concatenated stream.
  """

  def __init__(self, seq_len: int, mask_rate: float, with_ends: bool):
    self.seq_len = seq_len
    self.mask_rate = mask_rate
    self.with_ends = with_ends

  def tokens(self, element: np.ndarray) -> np.ndarray:
    if self.with_ends:
      return np.concatenate([[BOS], element, [EOS]]).astype(np.int32)
    return element

  def random_map(self, element: np.ndarray, rng: np.random.Generator) -> dict:
    return masked_example(
      self.tokens(element), self.seq_len, self.mask_rate, rng
    )


# ---------------------------------------------------------------------------
# Datasets.


def _train_loader(source, operations: list, **options) -> grain.DataLoader:
  """`lm.shuffled_loader`, with a clear error for a split too small."""
  if len(source) < options['shard_count']:
    raise ValueError(
      f'{source!r} has {len(source)} training records, fewer than '
      f'shard_count = {options["shard_count"]}'
    )
  return lm.shuffled_loader(source, operations, **options)


def _eval_batches(
  num_examples: int,
  example: Callable[[int], dict],
  *,
  seq_len: int,
  batch_size: int,
  shard_index: int,
  shard_count: int,
  max_batches: int,
) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-shape batches of examples j = shard_index, + shard_count, ...

  Every shard yields the same number of batches (what the largest needs,
  at most `max_batches` when > 0), padded with weight-0 rows.
  """
  mine = np.arange(shard_index, num_examples, shard_count)
  num_batches = math.ceil(math.ceil(num_examples / shard_count) / batch_size)
  if max_batches:
    num_batches = min(num_batches, max_batches)
  for b in range(num_batches):
    rows = [example(int(j)) for j in mine[b * batch_size :][:batch_size]]
    while len(rows) < batch_size:
      rows.append(
        {
          'inputs': np.zeros(seq_len, np.int32),
          'targets': np.zeros(seq_len, np.int32),
          'weights': np.zeros(seq_len, np.float32),
        }
      )
    yield {k: np.stack([row[k] for row in rows]) for k in rows[0]}


class ProteinDatasets:
  """Protein sequences ready for the trainer (see the module docstring).

  Same interface as `performer.data.lm.Datasets`.

  Attributes:
    task: 'lm' (causal objective) or 'mlm' (masked objective).
    name: 'protein'.
    vocab_size: 29 (4 special tokens and 25 letters).
    seq_len: tokens per example.
    eval_splits: the splits `eval_batches` accepts (those with records).
  """

  name = 'protein'
  vocab_size = VOCAB_SIZE

  def __init__(
    self,
    sources: dict,
    *,
    seq_len: int,
    objective: str,
    mask_rate: float,
    concatenate: bool,
    batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    worker_count: int = 0,
    worker_buffer_size: int = 1,
    read_threads: int = 4,
  ):
    """Opens the train loader at once, so a split too small fails here.

    Args:
      sources: split -> random-access records {'id', 'sequence'} (the TFDS
        data sources of `data_sources`, or any sequence of such dicts);
        'train' is required.
      seq_len: tokens per example.
      objective: 'causal' or 'masked'.
      mask_rate: fraction of amino acids selected (masked objective).
      concatenate: one stream of proteins cut into windows, instead of one
        protein per example.
      batch_size: examples per batch in this process.
      seed: shuffles training and draws training masks (modulo 2**32).
      shard_index: this process's shard.
      shard_count: number of shards (processes).
      worker_count: grain worker processes (0: load in this process).
      worker_buffer_size: batches each worker prepares ahead.
      read_threads: grain's reader threads.
    """
    if objective not in OBJECTIVES:
      raise ValueError(
        f'objective must be one of {OBJECTIVES}, got {objective!r}'
      )
    if 'train' not in sources:
      raise ValueError('the FASTA file has no record in the train split')
    if not 0 < mask_rate < 1:
      raise ValueError(f'mask_rate must be in (0, 1), got {mask_rate}')
    self.task = 'lm' if objective == 'causal' else 'mlm'
    self.seq_len = seq_len
    self.eval_splits = tuple(s for s in SPLITS if s in sources)
    self.objective = objective
    self.mask_rate = mask_rate
    self.concatenate = concatenate
    self._sources = sources
    self._batch_size = batch_size
    self._shard_index = shard_index
    self._shard_count = shard_count
    self._streams: dict[str, lm.StreamSplit] = {}
    loader_options = dict(
      batch_size=batch_size,
      seed=seed % 2**32,
      shard_index=shard_index,
      shard_count=shard_count,
      worker_count=worker_count,
      worker_buffer_size=worker_buffer_size,
      read_threads=read_threads,
    )
    masker = MaskTokens(seq_len, mask_rate, with_ends=not concatenate)
    if not concatenate:
      source = Proteins(sources['train'], 'protein:train')
      operation = masker if objective == 'masked' else CausalProtein(seq_len)
      self._train_loader = _train_loader(source, [operation], **loader_options)
    elif objective == 'causal':
      self._train_loader = lm.train_loader(
        self.stream('train'), tokenizer=None, seq_len=seq_len, **loader_options
      )
    else:
      source = MaskedWindows(self.stream('train'), seq_len)
      self._train_loader = _train_loader(source, [masker], **loader_options)

  def stream(self, split: str) -> lm.StreamSplit:
    """The split's proteins as one uint8 stream, each followed by eos."""
    if split not in self._streams:
      source = self._sources[split]
      # uint8 parts, so the peak is two bytes per token, not five.
      eos = np.array([EOS], np.uint8)
      parts = []
      for i in range(len(source)):
        parts += [protein_tokens(source[i]).astype(np.uint8), eos]
      tokens = np.concatenate(parts)
      self._streams[split] = lm.StreamSplit(f'protein:{split}', tokens)
    return self._streams[split]

  def train_loader(self) -> grain.DataLoader:
    """The infinite loader of shuffled, sharded train batches.

    `iter(loader)` is a checkpointable `grain.DataLoaderIterator`.
    """
    return self._train_loader

  def eval_batches(
    self, split: str, max_batches: int = 0
  ) -> Iterator[dict[str, np.ndarray]]:
    """Yields one deterministic pass over `split` in fixed-shape batches.

    One protein (or, concatenated, one non-overlapping window) per row;
    example j goes to shard j % shard_count; weight-0 rows pad the last
    batch, and every shard yields the same number of batches. Masks are
    seeded by the example index: every pass is identical.

    Args:
      split: 'validation', 'test' or 'train'.
      max_batches: stop after this many batches (0: the whole split).
    """
    if split not in self._sources:
      raise ValueError(
        f'protein has no {split!r} split; it has {self.eval_splits}'
      )
    options = dict(
      seq_len=self.seq_len,
      batch_size=self._batch_size,
      shard_index=self._shard_index,
      shard_count=self._shard_count,
      max_batches=max_batches,
    )
    seq_len = self.seq_len
    if self.concatenate and self.objective == 'causal':
      tokens = self.stream(split).tokens()
      return lm.eval_batches(
        tokens,
        name=f'protein:{split}',
        seq_len=seq_len,
        batch_size=self._batch_size,
        shard_index=self._shard_index,
        shard_count=self._shard_count,
        max_batches=max_batches,
      )
    masker = MaskTokens(seq_len, self.mask_rate, not self.concatenate)

    def eval_rng(j: int) -> np.random.Generator:
      return np.random.default_rng([EVAL_MASK_SEED, j])

    if self.concatenate:
      tokens = self.stream(split).tokens()
      num = math.ceil(len(tokens) / seq_len)

      def example(j):
        window = tokens[j * seq_len : (j + 1) * seq_len]
        return masked_example(window, seq_len, self.mask_rate, eval_rng(j))

      return _eval_batches(num, example, **options)
    source = self._sources[split]

    def example(j):
      ids = protein_tokens(source[j])
      if self.objective == 'causal':
        return causal_example(ids, seq_len)
      return masker.random_map(ids, eval_rng(j))

    return _eval_batches(len(source), example, **options)

  def encode(self, text: str) -> np.ndarray:
    """bos and the ids of the letters of `text` (whitespace ignored)."""
    letters = ''.join(text.split())
    return np.concatenate([[BOS], encode_sequence(letters)]).astype(np.int32)

  def decode(self, ids) -> str:
    """The letters of `ids` (see `decode_tokens`)."""
    return decode_tokens(ids)

  def __repr__(self) -> str:
    return (
      f'ProteinDatasets(objective={self.objective!r}, '
      f'concatenate={self.concatenate}, seq_len={self.seq_len}, '
      f'splits={self.eval_splits})'
    )


def create(
  c, *, batch_size: int, seed: int, shard_index: int, shard_count: int
) -> ProteinDatasets:
  """Builds the protein data of the validated data config `c`.

  Called by `performer.data.create` for c.name == 'protein'; reads c.path
  (the FASTA file), c.data_dir, c.seq_len, c.objective, c.mask_rate,
  c.concatenate and the grain options.

  Raises:
    ValueError: data.path empty, a malformed FASTA file, no train record.
    FileNotFoundError: data.path does not exist.
  """
  return ProteinDatasets(
    data_sources(c.path, c.data_dir),
    seq_len=c.seq_len,
    objective=c.objective,
    mask_rate=c.mask_rate,
    concatenate=c.concatenate,
    batch_size=batch_size,
    seed=seed,
    shard_index=shard_index,
    shard_count=shard_count,
    worker_count=c.worker_count,
    worker_buffer_size=c.worker_buffer_size,
    read_threads=c.read_threads,
  )
