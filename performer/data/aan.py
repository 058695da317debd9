"""LRA Retrieval: ACL Anthology Network document pairs, at byte level.

The LRA release (lra_release.gz, in lra_release/tsv_data/) ships the pairs
as three tab-separated files without a header, one pair per line:

  label <TAB> id1 <TAB> id2 <TAB> text1 <TAB> text2

with label 1 when one paper cites the other, else 0 (written 0 or 1, or as
the floats 0.0 or 1.0, which the LRA code reads them as). Point
`data.path` at the directory holding them:

  train:      new_aan_pairs.train.tsv
  validation: new_aan_pairs.eval.tsv
  test:       new_aan_pairs.test.tsv

The LRA code reads them with quoting off (`use_quote_delim=False`): a
field is exactly the bytes between tabs, quote characters included, and a
'\\r' before a line's '\\n' is dropped. The texts are used exactly as they
stand in the file (any escape sequences in them included), as the LRA code
used them; so are they here.

Each document is its bytes, token = byte + 1 (0 is padding; vocabulary
257), cut to its first `data.seq_len` bytes (4000 in LRA) and padded; the
two documents of a pair are 'inputs1' and 'inputs2' for a two-tower model.
2 classes. The eval file is the validation split.

The files are large (the train file holds about 147,000 pairs of papers),
so they are not loaded into memory: loading scans each file once for the
offsets of its texts and labels, and an example reads just the bytes it
keeps from the file (each grain worker opens the file itself).
"""

import os
from typing import Any

import numpy as np

from performer.data import classification, tfds_source

FILES = {
  'train': 'new_aan_pairs.train.tsv',
  'validation': 'new_aan_pairs.eval.tsv',
  'test': 'new_aan_pairs.test.tsv',
}
NUM_COLUMNS = 5
NUM_CLASSES = 2
LABELS = {0.0: 0, 1.0: 1}


class Pairs:
  """The pairs of one release TSV file, read from the file on demand.

  Example i is {'inputs1': tokens of text1, 'inputs2': tokens of text2,
  'targets': label}, each document cut to `seq_len` bytes.
  """

  def __init__(self, name: str, path: str, seq_len: int):
    """Scans `path` for the byte offsets of each line's texts.

    Raises:
      ValueError: a line without 5 tab-separated fields, or with a label
        other than 0 or 1, naming the file and the line number.
    """
    self.name = name
    self.path = path
    self.seq_len = seq_len
    # [pairs, 4]: start and end of text1, start and end of text2.
    self.spans, self.labels = _scan(path)
    # Opened here, once: a lazy open from grain's reader threads could race
    # (two threads each open it, and the one replaced is closed under the
    # other's read).
    self._file = open(path, 'rb', buffering=0)

  def _read(self, start: int, end: int) -> bytes:
    # Positional reads: safe from grain's reader threads sharing the file.
    return os.pread(self._file.fileno(), end - start, start)

  def __getstate__(self):
    # Workers get the offsets and open the file themselves.
    return {**self.__dict__, '_file': None}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._file = open(self.path, 'rb', buffering=0)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    start1, end1, start2, end2 = (int(x) for x in self.spans[index])
    # Read no more of a document than is kept.
    text1 = self._read(start1, min(end1, start1 + self.seq_len))
    text2 = self._read(start2, min(end2, start2 + self.seq_len))
    return {
      'inputs1': tfds_source.byte_tokens(text1, self.seq_len),
      'inputs2': tfds_source.byte_tokens(text2, self.seq_len),
      'targets': int(self.labels[index]),
    }

  def __repr__(self) -> str:
    # Grain compares this in a restored state: keep it free of addresses.
    return f'Pairs({self.name!r}, pairs={len(self)})'


def _scan(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns the text spans [pairs, 4] (int64) and labels (int8) of a file.

  Lines end at '\\n' (a '\\r' before it is dropped); blank lines are
  skipped. Only the label is decoded; the texts stay in the file.
  """
  spans, labels = [], []
  offset = 0
  with open(path, 'rb') as f:
    for line_number, line in enumerate(f, start=1):
      start = offset
      offset += len(line)
      # No copies of the (long) line: search it within [0, end).
      end = len(line)
      if line.endswith(b'\n'):
        end -= 2 if line.endswith(b'\r\n') else 1
      if not end:
        continue
      fields = line.count(b'\t', 0, end) + 1
      if fields != NUM_COLUMNS:
        raise ValueError(
          f'{path} line {line_number}: {fields} tab-separated fields, '
          f'expected {NUM_COLUMNS} (label, id1, id2, text1, text2)'
        )
      tab1 = line.index(b'\t', 0, end)
      tab4 = line.rindex(b'\t', 0, end)
      tab3 = line.rindex(b'\t', 0, tab4)
      labels.append(_label(line[:tab1], path, line_number))
      spans.append(
        (start + tab3 + 1, start + tab4, start + tab4 + 1, start + end)
      )
  return np.array(spans, np.int64).reshape(-1, 4), np.array(labels, np.int8)


def _label(field: bytes, path: str, line_number: int) -> int:
  """Parses a label field: 0 or 1, as an int or a float ('1.0')."""
  try:
    value = float(field)
  except ValueError:
    value = None
  if value not in LABELS:
    shown = field[:20].decode(errors='replace')
    raise ValueError(
      f'{path} line {line_number}: label {shown!r} is not 0 or 1'
    )
  return LABELS[value]


def load(path: str, *, seq_len: int) -> dict[str, Pairs]:
  """Opens the train, validation (eval file) and test pairs in `path`.

  Args:
    path: the directory with the release's TSV files.
    seq_len: bytes kept per document.

  Raises:
    FileNotFoundError: `path` is unset or lacks one of the files.
    ValueError: a malformed line (names the file and line number).
  """
  expected = ', '.join(FILES.values())
  if not path:
    raise FileNotFoundError(
      'data.path is not set: point it at the directory with the LRA '
      f"release's AAN files ({expected}; lra_release/tsv_data/ in "
      'lra_release.gz)'
    )
  missing = [
    f for f in FILES.values() if not os.path.isfile(os.path.join(path, f))
  ]
  if missing:
    raise FileNotFoundError(
      f'{", ".join(missing)} not found in {os.path.abspath(path)}; data.path '
      f"must be the directory with the LRA release's AAN files ({expected}; "
      'lra_release/tsv_data/ in lra_release.gz)'
    )
  return {
    split: Pairs(f'aan:{split}', os.path.join(path, name), seq_len)
    for split, name in FILES.items()
  }


def create(c, **options) -> classification.ClassificationDatasets:
  """Builds the byte-level AAN pairs task from the validated data config `c`.

  `c.path` is the directory with the TSV files; `c.seq_len` is the length
  of each of the two documents.

  Raises:
    FileNotFoundError: missing directory or files.
    ValueError: a malformed line.
  """
  return classification.ClassificationDatasets.from_config(
    c,
    splits=load(c.path, seq_len=c.seq_len),
    vocab_size=tfds_source.BYTE_VOCAB_SIZE,
    num_classes=NUM_CLASSES,
    pair=True,
    truncate=True,
    **options,
  )
