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
  (10%, uniform over the 25) or kept (10%) (`masking.corrupt`). Targets
  are the original tokens; weights are 1 at the selected positions only;
  'mask' is True at the real tokens (the model's padding mask). Training masks
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

import dataclasses
import fcntl
import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator

import grain
import numpy as np
import tensorflow_datasets as tfds

from performer import tasks
from performer.data import OBJECTIVES, lm, loader, masking, tfds_source
from performer.data.loader import SPLITS

TFDS_NAME = 'protein_fasta'

PAD, MASK, BOS, EOS = 0, 1, 2, 3
SPECIAL_TOKENS = ('<pad>', '<mask>', '<bos>', '<eos>')
STANDARD = 'ACDEFGHIKLMNPQRSTVWY'
AMINO_ACIDS = STANDARD + 'UOBZX'
FIRST_LETTER = len(SPECIAL_TOKENS)
VOCAB_SIZE = FIRST_LETTER + len(AMINO_ACIDS)

# Split buckets of the id hash, out of 100.
TRAIN_BUCKETS, VALIDATION_BUCKETS = 90, 5
# Seeds evaluation masks (with the example index), as for every masked task.
EVAL_MASK_SEED = masking.EVAL_MASK_SEED

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


class AminoAcidTokenizer:
  """Text <-> token ids of a protein model: letters, bos first.

  What a trained protein LM reads and writes: `encode` gives bos and the
  ids of the letters (whitespace ignored), `decode` the letters back.
  """

  vocab_size = VOCAB_SIZE

  def encode(self, text: str) -> np.ndarray:
    letters = ''.join(text.split())
    return np.concatenate([[BOS], encode_sequence(letters)]).astype(np.int32)

  def decode(self, ids) -> str:
    return decode_tokens(ids)


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


_TOKENIZER = AminoAcidTokenizer()


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


def _prepare(builder: ProteinFasta, data_dir: str) -> None:
  """Builds the dataset; a failed build leaves nothing new under data_dir.

  TFDS makes the dataset's directories (and its download directory)
  before our generator parses the file, and on an error removes only its
  temporary files: the empty directories that this build made are removed
  here, so that an unchanged bad file gives the same error each time and
  no empty cache is left. Only empty directories are removed, never a file:
  an existing dataset is never touched.
  """
  dataset_dir = os.path.join(data_dir, TFDS_NAME)
  before = {
    data_dir: set(os.listdir(data_dir)),
    dataset_dir: set(os.listdir(dataset_dir))
    if os.path.isdir(dataset_dir)
    else set(),
  }
  try:
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
  except BaseException:
    builder.remove_spill()
    # The dataset's own directory first: it is inside data_dir.
    for parent in (dataset_dir, data_dir):
      if os.path.isdir(parent):
        for name in set(os.listdir(parent)) - before[parent]:
          _remove_empty_dirs(os.path.join(parent, name))
    raise
  builder.remove_spill()


def _remove_empty_dirs(path: str) -> None:
  """Removes `path` and the directories below it that hold no file."""
  if not os.path.isdir(path) or os.path.islink(path):
    return
  for root, _, _ in os.walk(path, topdown=False):
    try:
      os.rmdir(root)  # Fails, and keeps it, unless it is empty.
    except OSError:
      pass


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
  # Processes that start together would all build it; one builds. The
  # lock is data_dir itself, so that a failed build leaves no lock file.
  lock = os.open(data_dir, os.O_RDONLY)
  try:
    fcntl.flock(lock, fcntl.LOCK_EX)
    _prepare(builder, data_dir)
  finally:
    os.close(lock)
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
  padded = np.zeros(seq_len, np.int32)
  padded[:n] = tokens
  real = np.arange(seq_len) < n
  example = masking.corrupt(
    padded,
    padded >= FIRST_LETTER,  # Amino acids only, never a special token.
    mask_rate=mask_rate,
    mask_id=MASK,
    random_low=FIRST_LETTER,
    random_high=VOCAB_SIZE,
    rng=rng,
  )
  return {**example, 'mask': real}


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


class MaskedWindows(lm.StreamWindows):
  """Grain data source: the windows of `seq_len` tokens of a stream."""

  extra = 0


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


@dataclasses.dataclass(kw_only=True, eq=False, repr=False)
class ProteinDatasets(loader.Datasets):
  """Protein sequences ready for the trainer (see the module docstring).

  `task` is 'lm' for the causal objective, 'mlm' for the masked one;
  `vocab_size` is 29 (4 special tokens and 25 letters).

  Attributes:
    splits: split -> random-access records {'id', 'sequence'} (the TFDS
      data sources of `data_sources`, or any sequence of such dicts).
    objective: 'causal' or 'masked'.
    mask_rate: fraction of amino acids selected (masked objective).
    concatenate: one stream of proteins cut into windows, instead of one
      protein per example.
    (The rest: see `loader.Datasets`; the seed also draws training masks.)
  """

  name: str = 'protein'
  objective: str
  mask_rate: float
  concatenate: bool

  def _setup(self) -> None:
    if self.objective not in OBJECTIVES:
      raise ValueError(
        f'objective must be one of {OBJECTIVES}, got {self.objective!r}'
      )
    self._require_train('the FASTA file has no record in the train split')
    if not 0 < self.mask_rate < 1:
      raise ValueError(f'mask_rate must be in (0, 1), got {self.mask_rate}')
    self.task = tasks.task_of({'name': 'protein', 'objective': self.objective})
    self.vocab_size = VOCAB_SIZE
    self._streams: dict[str, lm.StreamSplit] = {}

  def _open_train_loader(self) -> grain.DataLoader:
    options = self.loader_options
    if self.concatenate and self.objective == 'causal':
      return lm.train_loader(
        self.stream('train'), tokenizer=None, seq_len=self.seq_len, **options
      )
    if self.concatenate:
      source = MaskedWindows(self.stream('train'), self.seq_len)
    else:
      source = Proteins(self.splits['train'], 'protein:train')
    if len(source) < self.shard_count:
      raise ValueError(
        f'{source!r} has {len(source)} training records, fewer than '
        f'shard_count = {self.shard_count}'
      )
    if self.objective == 'masked':
      operation = MaskTokens(
        self.seq_len, self.mask_rate, with_ends=not self.concatenate
      )
    else:
      operation = CausalProtein(self.seq_len)
    return loader.shuffled_loader(source, [operation], **options)

  def stream(self, split: str) -> lm.StreamSplit:
    """The split's proteins as one uint8 stream, each followed by eos."""
    if split not in self._streams:
      source = self.splits[split]
      # uint8 parts, so the peak is two bytes per token, not five.
      eos = np.array([EOS], np.uint8)
      parts = []
      for i in range(len(source)):
        parts += [protein_tokens(source[i]).astype(np.uint8), eos]
      tokens = np.concatenate(parts)
      self._streams[split] = lm.StreamSplit(f'protein:{split}', tokens)
    return self._streams[split]

  def _eval_batches(
    self, split: str, max_batches: int
  ) -> Iterator[dict[str, np.ndarray]]:
    """One protein (or, concatenated, one non-overlapping window) per row.

    Example j goes to shard j % shard_count. Masks are seeded by the
    example index: every pass is identical.
    """
    seq_len = self.seq_len
    if self.concatenate and self.objective == 'causal':
      return lm.eval_batches(
        self.stream(split).tokens(),
        name=f'protein:{split}',
        seq_len=seq_len,
        batch_size=self.batch_size,
        shard_index=self.shard_index,
        shard_count=self.shard_count,
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

    else:
      source = self.splits[split]
      num = len(source)

      def example(j):
        ids = protein_tokens(source[j])
        if self.objective == 'causal':
          return causal_example(ids, seq_len)
        return masker.random_map(ids, eval_rng(j))

    padding = {
      'inputs': np.zeros(seq_len, np.int32),
      'targets': np.zeros(seq_len, np.int32),
      'weights': np.zeros(seq_len, np.float32),
    }
    if self.objective == 'masked':
      padding['mask'] = np.zeros(seq_len, bool)
    return self._sharded_batches(num, example, padding, max_batches)

  def encode(self, text: str) -> np.ndarray:
    """bos and the ids of the letters of `text` (whitespace ignored)."""
    return _TOKENIZER.encode(text)

  def decode(self, ids) -> str:
    """The letters of `ids` (see `decode_tokens`)."""
    return _TOKENIZER.decode(ids)

  def _describe(self) -> dict:
    return {
      'objective': self.objective,
      'concatenate': self.concatenate,
      'seq_len': self.seq_len,
    }


def create(c, **options) -> ProteinDatasets:
  """Builds the protein data of the validated data config `c`.

  Called by `performer.data.build.create` for c.name == 'protein'; reads
  c.path (the FASTA file), c.data_dir, c.seq_len, c.objective,
  c.mask_rate, c.concatenate and the grain options; `options` are the
  loader settings (batch_size, seed, shard_index, shard_count).

  Raises:
    ValueError: data.path empty, a malformed FASTA file, no train record.
    FileNotFoundError: data.path does not exist.
  """
  return ProteinDatasets.from_config(
    c,
    splits=data_sources(c.path, c.data_dir),
    objective=c.objective,
    mask_rate=c.mask_rate,
    concatenate=c.concatenate,
    **options,
  )
