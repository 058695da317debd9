"""Language-model examples: windows of tokens, grain training, eval batches.

Every corpus split is one of two kinds:

* a token stream (`StreamSplit`): one array of tokens (Shakespeare, the
  user's text files). Training draws windows that start at every offset of
  the stream, in a seeded random order that grain reshuffles each epoch.
* documents (`DocumentSplit`): a random-access sequence of texts from TFDS
  (LM1B sentences, PG-19 books), tokenized on the fly. Training draws a
  document in seeded random order and a seeded random start inside it, and
  reads on into the following documents (joined by the tokenizer's
  separator) until the window is full.

Evaluation reads either kind as one stream (documents joined by the
separator, each followed by it) in non-overlapping windows, so every token
after the first is a target exactly once.

An example is a window of `seq_len + 1` tokens: inputs are its first
`seq_len`, targets its last `seq_len`.
"""

import dataclasses
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from performer.data import loader, tokenizers

Tokenizer = tokenizers.ByteTokenizer | tokenizers.SentencePieceTokenizer


class FileBytes:
  """Bytes [start, stop) of a file, memory-mapped on first use.

  Pickles as its path and range, so grain worker processes map the file
  themselves instead of receiving a copy of its contents.
  """

  def __init__(self, path: str, start: int = 0, stop: int | None = None):
    self.path = path
    self.start = start
    self.stop = os.path.getsize(path) if stop is None else stop
    self._array = None

  @property
  def array(self) -> np.ndarray:
    if self._array is None:
      self._array = np.memmap(
        self.path, np.uint8, 'r', offset=self.start, shape=(len(self),)
      )
    return self._array

  def __len__(self) -> int:
    return self.stop - self.start

  def __getitem__(self, key):
    return self.array[key]

  def __getstate__(self):
    return {'path': self.path, 'start': self.start, 'stop': self.stop}

  def __setstate__(self, state):
    self.__init__(**state)

  def __repr__(self) -> str:
    return f'FileBytes({self.path!r}, {self.start}, {self.stop})'


class StreamSplit:
  """A split that is one token stream (numpy array or `FileBytes`)."""

  def __init__(self, name: str, tokens: np.ndarray | FileBytes):
    self.name = name
    self._tokens = tokens

  def __len__(self) -> int:
    return len(self._tokens)

  def tokens(self) -> np.ndarray | FileBytes:
    """Returns the stream."""
    return self._tokens


class DocumentSplit:
  """A split that is a random-access sequence of documents.

  Attributes:
    name: corpus and split, for messages and grain's state check.
    docs: `docs[i][feature]` is document i's text (str or UTF-8 bytes).
    feature: the text feature's key.
  """

  def __init__(self, name: str, docs: Sequence[Any], feature: str):
    self.name = name
    self.docs = docs
    self.feature = feature
    self._cache: dict[str, tuple[np.ndarray, bool]] = {}

  def __len__(self) -> int:
    return len(self.docs)

  def text(self, index: int) -> str | bytes:
    return self.docs[index][self.feature]

  def tokens(self, tokenizer: Tokenizer, limit: int = 0) -> np.ndarray:
    """Returns the documents as one stream, each followed by the separator.

    Args:
      tokenizer: tokenizes each document.
      limit: stop once at least this many tokens are read (0: read all).
        The longest stream read so far is cached.
    """
    cached, complete = self._cache.get(repr(tokenizer), (None, False))
    if cached is not None and (complete or (limit and len(cached) >= limit)):
      return cached[:limit] if limit else cached
    parts, total, complete = [], 0, True
    for index in range(len(self.docs)):
      text = self.text(index)
      parts += [tokenizer.encode(text), tokenizer.separator]
      total += len(parts[-2]) + len(parts[-1])
      if limit and total >= limit:
        complete = False
        break
    stream = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    self._cache[repr(tokenizer)] = (stream, complete)
    return stream[:limit] if limit else stream


class StreamWindows:
  """Grain data source: the windows of `seq_len + extra` tokens of a stream.

  Record k is the window starting at token k, so there is one record per
  start offset and consecutive records overlap. `extra` is 1 here (the
  window holds the inputs and, shifted by one, the targets); a subclass
  sets 0 for windows that are their own targets (masked tokens).
  """

  extra = 1

  def __init__(self, split: StreamSplit, seq_len: int):
    length = seq_len + self.extra
    if len(split) < length:
      needed = f'seq_len + {self.extra}' if self.extra else 'seq_len'
      raise ValueError(
        f'{split.name} has {len(split)} tokens, fewer than {needed} = '
        f'{length}: too short to train on'
      )
    self._tokens = split.tokens()
    self._name = split.name
    self._seq_len = seq_len
    self._length = length

  def __len__(self) -> int:
    return len(self._tokens) - self._length + 1

  def __getitem__(self, key: int) -> np.ndarray:
    return np.asarray(self._tokens[key : key + self._length], np.int32)

  def __repr__(self) -> str:
    # Grain compares this in a restored state: keep it free of addresses.
    return (
      f'{type(self).__name__}({self._name!r}, tokens={len(self._tokens)}, '
      f'seq_len={self._seq_len})'
    )


class DocumentKeys:
  """Grain data source of document indices; `DocumentWindow` reads them."""

  def __init__(self, split: DocumentSplit):
    self._name = split.name
    self._len = len(split)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, key: int) -> int:
    return key

  def __repr__(self) -> str:
    return f'DocumentKeys({self._name!r}, documents={self._len})'


class DocumentWindow(grain.transforms.RandomMap):
  """Reads `seq_len + 1` tokens from a random start in a document.

  Tokenizes only what the window needs. A SentencePiece window starts at a
  whitespace and text is cut only before whitespace, where the models
  trained by `tokenizers.train_sentencepiece` tokenize exactly as they do the
  whole text.
  """

  def __init__(self, split: DocumentSplit, tokenizer: Tokenizer, seq_len: int):
    self._split = split
    self._tokenizer = tokenizer
    self._length = seq_len + 1
    self._bytes = isinstance(tokenizer, tokenizers.ByteTokenizer)

  def _text(self, index: int) -> str | bytes:
    text = self._split.text(index)
    if self._bytes:
      return text.encode('utf-8') if isinstance(text, str) else text
    return text.decode('utf-8', 'replace') if isinstance(text, bytes) else text

  def _cut(self, text, start: int, size: int) -> int:
    """End of a piece of about `size` characters from `start`."""
    end = start + size
    if self._bytes or end >= len(text):
      return min(end, len(text))
    space = max(
      text.rfind(' ', start + 1, end), text.rfind('\n', start + 1, end)
    )
    return space if space > start else end

  def random_map(self, element: int, rng: np.random.Generator) -> np.ndarray:
    index = element
    text = self._text(index)
    pos = int(rng.integers(0, max(len(text), 1)))
    if not self._bytes and pos:
      space = min(
        (i for i in (text.find(' ', pos), text.find('\n', pos)) if i >= 0),
        default=len(text),
      )
      pos = space
    parts, have, docs_read = [], 0, 1
    while have < self._length:
      if pos < len(text):
        # Over-read for subwords (a piece is rarely > 8 characters).
        size = self._length - have
        size = size if self._bytes else max(64, 8 * size)
        end = self._cut(text, pos, size)
        ids = self._tokenizer.encode(text[pos:end])
        pos = end
      else:
        ids = self._tokenizer.separator
        if docs_read > len(self._split):
          raise ValueError(
            f'{self._split.name} has fewer than {self._length} tokens: '
            'too short to train on'
          )
        index = (index + 1) % len(self._split)
        text, pos, docs_read = self._text(index), 0, docs_read + 1
      parts.append(ids)
      have += len(ids)
    return np.concatenate(parts)[: self._length].astype(np.int32)


class ToExample(grain.transforms.Map):
  """Splits a full window of `seq_len + 1` tokens into an example."""

  def map(self, element: np.ndarray) -> dict[str, np.ndarray]:
    return {
      'inputs': element[:-1],
      'targets': element[1:],
      'weights': np.ones(len(element) - 1, np.float32),
    }


def train_loader(
  split: StreamSplit | DocumentSplit,
  *,
  tokenizer: Tokenizer,
  seq_len: int,
  **options,
) -> grain.DataLoader:
  """Returns the infinite, shuffled, sharded grain loader of train batches.

  Each shard gets its own contiguous range of records (start offsets or
  documents), shuffled with `seed` and reshuffled every epoch. The random
  start inside a document comes from grain's per-record generator, seeded by
  (seed, record index), so a restored iterator replays exactly.

  Args:
    split: the train split.
    tokenizer: tokenizes documents (unused for a stream).
    seq_len: tokens per example.
    **options: batch_size, seed, shard_index, shard_count and grain's
      settings, as for `loader.shuffled_loader`.
  """
  if isinstance(split, StreamSplit):
    source = StreamWindows(split, seq_len)
    operations = []
  else:
    source = DocumentKeys(split)
    operations = [DocumentWindow(split, tokenizer, seq_len)]
  if len(source) < options['shard_count']:
    raise ValueError(
      f'{split.name} has {len(source)} training records, fewer than '
      f'shard_count = {options["shard_count"]}'
    )
  return loader.shuffled_loader(source, [*operations, ToExample()], **options)


def eval_batches(
  tokens: np.ndarray | FileBytes,
  *,
  name: str,
  seq_len: int,
  batch_size: int,
  shard_index: int,
  shard_count: int,
  max_batches: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields fixed-shape batches of the non-overlapping windows of `tokens`.

  Window j holds tokens j * seq_len ... (j + 1) * seq_len and predicts the
  last seq_len of them, so the windows predict every token but the first
  exactly once; the last window is padded with weight 0. Window j goes to
  shard j % shard_count. Every shard yields the same number of batches
  (what the largest shard needs, at most `max_batches` when > 0), padding
  with weight-0 rows, so that processes evaluating in lockstep stay in step.
  """
  n = len(tokens)
  if n < 2:
    raise ValueError(f'{name} has {n} tokens: nothing to evaluate')
  num_windows = math.ceil((n - 1) / seq_len)
  mine = np.arange(shard_index, num_windows, shard_count)
  num_batches = math.ceil(math.ceil(num_windows / shard_count) / batch_size)
  if max_batches:
    num_batches = min(num_batches, max_batches)
  offsets = np.arange(seq_len + 1)
  for b in range(num_batches):
    rows = mine[b * batch_size : (b + 1) * batch_size]
    positions = rows[:, None] * seq_len + offsets
    present = positions < n
    window = np.where(present, tokens[np.minimum(positions, n - 1)], 0)
    weights = present[:, 1:]
    batch = {
      'inputs': np.where(weights, window[:, :-1], 0).astype(np.int32),
      'targets': window[:, 1:].astype(np.int32),
      'weights': weights.astype(np.float32),
    }
    pad = ((0, batch_size - len(rows)), (0, 0))
    yield {key: np.pad(value, pad) for key, value in batch.items()}


@dataclasses.dataclass(kw_only=True, eq=False, repr=False)
class Datasets(loader.Datasets):
  """A language-model corpus ready for the trainer (task 'lm').

  Attributes:
    splits: split name -> `StreamSplit` or `DocumentSplit`.
    tokenizer: the tokenizer the splits use; `vocab_size` is its own (256
      for bytes).
    (The rest: see `loader.Datasets`.)
  """

  tokenizer: Tokenizer

  def _setup(self) -> None:
    self.task = 'lm'
    self.vocab_size = int(self.tokenizer.vocab_size)
    self._require_train()

  def _open_train_loader(self) -> grain.DataLoader:
    return train_loader(
      self.splits['train'],
      tokenizer=self.tokenizer,
      seq_len=self.seq_len,
      **self.loader_options,
    )

  def _eval_batches(
    self, split: str, max_batches: int
  ) -> Iterator[dict[str, np.ndarray]]:
    """The non-overlapping windows of the split (see `eval_batches`).

    Yields:
      {'inputs', 'targets': int32 [B, L], 'weights': float32 [B, L]}, where
      weight 0 marks padding.
    """
    data = self.splits[split]
    if isinstance(data, StreamSplit):
      tokens = data.tokens()
    else:
      limit = 0
      if max_batches:
        windows = max_batches * self.batch_size * self.shard_count
        limit = windows * self.seq_len + 1
      tokens = data.tokens(self.tokenizer, limit)
    return eval_batches(
      tokens,
      name=data.name,
      seq_len=self.seq_len,
      batch_size=self.batch_size,
      shard_index=self.shard_index,
      shard_count=self.shard_count,
      max_batches=max_batches,
    )

  def encode(self, text: str) -> np.ndarray:
    """Returns the int32 token ids of `text`."""
    return self.tokenizer.encode(text).astype(np.int32)

  def decode(self, tokens) -> str:
    """Returns the text of token ids (bytes decode with errors='replace')."""
    return self.tokenizer.decode(tokens)
