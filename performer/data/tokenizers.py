"""Tokenizers for the language-model pipelines: raw bytes or SentencePiece.

Both map `str` to a 1-D integer array and back. The byte tokenizer is the
identity on UTF-8 bytes (vocabulary 256). The SentencePiece tokenizer either
loads a user's model or trains one on a text sample; models trained here
round-trip any text exactly (identity normalization, byte fallback, no dummy
prefix), so the loss is over the same characters as with bytes.
"""

import io
import os
from collections.abc import Iterable

import numpy as np
import sentencepiece as spm


class ByteTokenizer:
  """UTF-8 bytes as tokens: token id = byte value."""

  vocab_size = 256
  # Documents are joined with a newline: no id is left over for an EOS.
  separator = np.array([ord('\n')], np.uint8)

  def encode(self, text: str | bytes) -> np.ndarray:
    """Returns the UTF-8 bytes of `text` as a uint8 array."""
    if isinstance(text, str):
      text = text.encode('utf-8')
    return np.frombuffer(text, np.uint8).copy()

  def decode(self, tokens) -> str:
    """Decodes byte values as UTF-8; invalid sequences become U+FFFD."""
    tokens = np.asarray(tokens).reshape(-1)
    if tokens.size and (tokens.min() < 0 or tokens.max() > 255):
      raise ValueError(
        f'byte tokens must lie in [0, 255], got [{tokens.min()}, '
        f'{tokens.max()}]'
      )
    return tokens.astype(np.uint8).tobytes().decode('utf-8', errors='replace')

  def encode_long(self, text: str | bytes) -> np.ndarray:
    """Same as `encode`; for symmetry with `SentencePieceTokenizer`."""
    return self.encode(text)

  def __repr__(self) -> str:
    return 'ByteTokenizer()'


class SentencePieceTokenizer:
  """A SentencePiece model; picklable, so grain workers can use it."""

  def __init__(self, model_path: str):
    """Loads the model at `model_path`.

    Raises:
      FileNotFoundError: when `model_path` does not exist.
    """
    if not os.path.isfile(model_path):
      raise FileNotFoundError(f'SentencePiece model not found: {model_path}')
    self.model_path = model_path
    with open(model_path, 'rb') as f:
      self._proto = f.read()
    self._load()

  def _load(self) -> None:
    self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
    self.vocab_size = int(self._sp.vocab_size())
    eos = self._sp.eos_id()
    self.separator = np.array([eos] if eos >= 0 else [], np.int32)

  def __getstate__(self):
    return {'model_path': self.model_path, 'proto': self._proto}

  def __setstate__(self, state):
    self.model_path = state['model_path']
    self._proto = state['proto']
    self._load()

  def encode(self, text: str | bytes) -> np.ndarray:
    """Returns the piece ids of `text` as an int32 array."""
    if isinstance(text, bytes):
      text = text.decode('utf-8', errors='replace')
    return np.asarray(self._sp.encode(text), np.int32)

  def encode_long(self, text: str | bytes, chunk: int = 1 << 20) -> np.ndarray:
    """Encodes a long text in parallel, in chunks that end at newlines.

    A newline is a piece of its own in models trained here, so the result
    equals `encode(text)` for them.
    """
    if isinstance(text, bytes):
      text = text.decode('utf-8', errors='replace')
    pieces, start = [], 0
    while start < len(text):
      end = text.find('\n', start + chunk) + 1 or len(text)
      pieces.append(text[start:end])
      start = end
    ids = self._sp.encode(pieces, num_threads=os.cpu_count() or 1)
    return np.concatenate(
      [np.zeros(0, np.int32)] + [np.asarray(i, np.int32) for i in ids]
    )

  def decode(self, tokens) -> str:
    """Returns the text of piece ids; control ids (EOS) decode to nothing."""
    return self._sp.decode(np.asarray(tokens).reshape(-1).tolist())

  def __repr__(self) -> str:
    return f'SentencePieceTokenizer({self.model_path!r})'


def train_sentencepiece(
  lines: Iterable[str], model_path: str, vocab_size: int
) -> None:
  """Trains a unigram SentencePiece model on `lines` into `model_path`.

  The model keeps text exactly: identity normalization, whitespace kept as
  is, byte fallback for unseen characters, newline as its own piece, and no
  dummy prefix (so encoding text piece by piece at whitespace gives the same
  ids as encoding it whole). EOS (id 1) separates documents.

  The file is written to a temporary name and renamed, so concurrent
  processes never read a half-written model.

  Args:
    lines: training text, one sentence or paragraph per item.
    model_path: where to write the model file.
    vocab_size: number of pieces; must exceed the 256 byte pieces plus the
      special ones. On a sample too small for that many pieces the model
      gets fewer.
  """
  if vocab_size <= 260:
    raise ValueError(
      f'spm_vocab_size must be > 260 (256 byte-fallback pieces + specials), '
      f'got {vocab_size}'
    )
  proto = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(lines),
    model_writer=proto,
    model_type='unigram',
    vocab_size=vocab_size,
    hard_vocab_limit=False,
    character_coverage=1.0,
    byte_fallback=True,
    normalization_rule_name='identity',
    remove_extra_whitespaces=False,
    add_dummy_prefix=False,
    allow_whitespace_only_pieces=True,
    split_digits=True,
    user_defined_symbols=['\n'],
    unk_id=0,
    eos_id=1,
    bos_id=-1,
    pad_id=-1,
    num_threads=os.cpu_count() or 1,
    minloglevel=2,
  )
  os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
  tmp_path = f'{model_path}.tmp{os.getpid()}'
  with open(tmp_path, 'wb') as f:
    f.write(proto.getvalue())
  os.replace(tmp_path, model_path)
