"""Sequence classification data: one example format, grain training, eval.

Every classification task (the Long Range Arena's ListOps, Text, Image,
Pathfinder and the two-document Retrieval) gives, per split, a random-access
sequence of examples: dicts of numpy values

  single sequence: {'inputs': int [n], 'targets': int}
  pair (retrieval): {'inputs1': int [n1], 'inputs2': int [n2], 'targets': int}

with unpadded token ids (0 is the padding id: tasks start their tokens at
1, except pixel values, which fill the whole length and need no padding).
`ClassificationDatasets` pads (or cuts, for the tasks whose documented
policy is to truncate) every sequence to `seq_len` and batches them:

  {'inputs': int32 [B, L], 'mask': bool [B, L], 'targets': int32 [B],
   'weights': float32 [B]}

(pairs: 'inputs1', 'mask1', 'inputs2', 'mask2'), where `mask` is True for
real tokens and weight 0 marks padding rows of the last evaluation batch.
"""

import dataclasses
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np

from performer import tasks
from performer.data import loader


def pad_tokens(
  tokens: np.ndarray, seq_len: int, *, truncate: bool, where: str
) -> tuple[np.ndarray, np.ndarray]:
  """Pads `tokens` with 0 to `seq_len`; returns (int32 tokens, bool mask).

  Args:
    tokens: int token ids of one sequence.
    seq_len: the padded length.
    truncate: whether a longer sequence keeps its first `seq_len` tokens
      (otherwise it is an error).
    where: names the example in the error message.

  Raises:
    ValueError: a sequence longer than `seq_len` when not truncating.
  """
  tokens = np.asarray(tokens)
  n = len(tokens)
  if n > seq_len:
    if not truncate:
      raise ValueError(
        f'{where} has {n} tokens, more than data.seq_len={seq_len}; '
        'raise data.seq_len'
      )
    tokens, n = tokens[:seq_len], seq_len
  padded = np.zeros(seq_len, np.int32)
  padded[:n] = tokens
  mask = np.zeros(seq_len, bool)
  mask[:n] = True
  return padded, mask


class ToPadded(grain.transforms.Map):
  """Pads an example's sequences to `seq_len` and adds their masks."""

  def __init__(self, seq_len: int, truncate: bool, keys: tuple[str, ...]):
    self.seq_len = seq_len
    self.truncate = truncate
    self.keys = keys

  def map(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for key in self.keys:
      tokens, mask = pad_tokens(
        example[key], self.seq_len, truncate=self.truncate, where='an example'
      )
      out[key] = tokens
      out['mask' + key[len('inputs') :]] = mask
    out['targets'] = np.int32(example['targets'])
    out['weights'] = np.float32(1.0)
    return out


@dataclasses.dataclass(kw_only=True, eq=False, repr=False)
class ClassificationDatasets(loader.Datasets):
  """A classification task ready for the trainer.

  `task` is 'classification' (one sequence) or 'retrieval' (a pair); the
  sequences of an example are the task's inputs (`performer.tasks`).

  Attributes:
    splits: split name -> random-access examples (module docstring).
    vocab_size: number of token ids (0 is padding).
    num_classes: number of labels.
    pair: whether examples are pairs ('inputs1', 'inputs2').
    truncate: whether sequences longer than `seq_len` are cut (else an
      error when they are read).
    first_token: the smallest id of a real token: 1 when 0 is padding, 0
      for pixel levels (masked-token pretraining draws its random
      replacements from [first_token, vocab_size)).
    (The rest: see `loader.Datasets`.)
  """

  vocab_size: int
  num_classes: int
  pair: bool = False
  truncate: bool = False
  first_token: int = 1

  def _setup(self) -> None:
    self._require_train()
    self.task = 'retrieval' if self.pair else 'classification'
    self.vocab_size = int(self.vocab_size)
    self.num_classes = int(self.num_classes)
    # The task's sequences are its inputs besides their masks.
    inputs = tasks.get(self.task).inputs
    keys = tuple(k for k in inputs if k.startswith('inputs'))
    self._pad = ToPadded(self.seq_len, self.truncate, keys)
    empty = {k: np.zeros(0, np.int32) for k in keys}
    # An all-padding example, weight 0 once zeroed.
    padding = self._pad.map({**empty, 'targets': 0})
    self._padding = {k: np.zeros_like(v) for k, v in padding.items()}

  def _open_train_loader(self) -> grain.DataLoader:
    return self._batch_loader(
      self.splits['train'], [self._pad], 'training examples'
    )

  def _eval_batches(
    self, split: str, max_batches: int
  ) -> Iterator[dict[str, np.ndarray]]:
    """One padded example per row; example j goes to shard j % shard_count."""
    examples = self.splits[split]
    return self._sharded_batches(
      len(examples),
      lambda j: self._pad.map(examples[j]),
      self._padding,
      max_batches,
    )

  def _describe(self) -> dict[str, Any]:
    return {**super()._describe(), 'num_classes': self.num_classes}
