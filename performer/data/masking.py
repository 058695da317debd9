"""Masked-token examples: BERT's corruption, and a task's inputs to pretrain on.

`corrupt` is the one masking rule of the package (proteins' 'masked'
objective and the LRA tasks' self-pretraining): each selectable position
is selected with probability `mask_rate`; a selected one becomes the mask
token (80%), a uniformly drawn real token (10%) or stays (10%). Targets
are the original tokens, weights 1 at the selected positions only.

`MaskedInputDatasets` turns a classification task (`ClassificationDatasets`)
into a masked-token task on its own inputs, the self-pretraining of Amos,
Berant and Gupta ("Never Train from Scratch", ICLR 2024): the same
examples, padding and length, the labels dropped. A two-document task
(Retrieval) gives both of its documents, one after the other, so that its
one shared encoder is pretrained on both. The vocabulary gains one id, the
mask token (the task's vocabulary size), which fine-tuning keeps.

  {'inputs': int32 [B, L] (corrupted), 'mask': bool [B, L] (real tokens),
   'targets': int32 [B, L] (the original tokens), 'weights': float32 [B, L]}

Training masks come from grain's per-record generator (new masks every
epoch, replayed exactly after a restore); evaluation masks are seeded by
the example's index, the same in every evaluation.
"""

import dataclasses
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np

from performer.data import classification, loader

# Replacement of selected tokens: mask, random, keep.
MASK_PROB, RANDOM_PROB = 0.8, 0.1
# Seeds evaluation masks (with the example index), apart from training's.
EVAL_MASK_SEED = 20210301


def corrupt(
  tokens_L: np.ndarray,
  selectable_L: np.ndarray,
  *,
  mask_rate: float,
  mask_id: int,
  random_low: int,
  random_high: int,
  rng: np.random.Generator,
) -> dict[str, np.ndarray]:
  """BERT's masking of one padded sequence.

  All randomness is drawn at full length, in a fixed order (selection,
  action, random tokens), so a position's fate does not depend on the
  sequence's length.

  Args:
    tokens_L: int token ids, padded.
    selectable_L: bool, the positions that may be selected (real tokens;
      for proteins not the special ones).
    mask_rate: selection probability of each selectable position.
    mask_id: the mask token.
    random_low, random_high: random replacements are uniform in
      [random_low, random_high).
    rng: the generator.

  Returns:
    {'inputs', 'targets', 'weights'} of length L.
  """
  length = len(tokens_L)
  targets = np.asarray(tokens_L, np.int32)
  select_u = rng.random(length)
  action_u = rng.random(length)
  random_tokens = rng.integers(random_low, random_high, length)
  selected = (select_u < mask_rate) & selectable_L
  inputs = targets.copy()
  to_mask = selected & (action_u < MASK_PROB)
  to_random = selected & (action_u >= MASK_PROB)
  to_random &= action_u < MASK_PROB + RANDOM_PROB
  inputs[to_mask] = mask_id
  inputs[to_random] = random_tokens[to_random]
  return {
    'inputs': inputs,
    'targets': targets,
    'weights': selected.astype(np.float32),
  }


class Documents:
  """Grain data source: the token sequences of a split's examples.

  One sequence per example ('inputs'), or both of a pair, document 2i and
  2i + 1 being example i's 'inputs1' and 'inputs2'.
  """

  def __init__(self, examples, keys: tuple[str, ...], name: str):
    self._examples = examples
    self._keys = keys
    self._name = name

  def __len__(self) -> int:
    return len(self._examples) * len(self._keys)

  def __getitem__(self, index: int) -> np.ndarray:
    example, which = divmod(int(index), len(self._keys))
    return np.asarray(self._examples[example][self._keys[which]])

  def __repr__(self) -> str:
    # Grain compares this in a restored state: keep it free of addresses.
    return f'Documents({self._name!r}, sequences={len(self)})'


class MaskInputs(grain.transforms.RandomMap):
  """A sequence's token ids -> a padded masked example (module docstring).

  Args:
    seq_len: example length.
    truncate: cut longer sequences to `seq_len` (else an error).
    mask_rate: selection probability of each real token.
    mask_id: the mask token (the task's vocabulary size).
    first_token: the smallest id of a real token (0 for pixel levels,
      which fill the whole length; 1 for tasks with padding id 0).
  """

  def __init__(
    self,
    *,
    seq_len: int,
    truncate: bool,
    mask_rate: float,
    mask_id: int,
    first_token: int,
  ):
    self.seq_len = seq_len
    self.truncate = truncate
    self.mask_rate = mask_rate
    self.mask_id = mask_id
    self.first_token = first_token

  def random_map(
    self, element: np.ndarray, rng: np.random.Generator
  ) -> dict[str, np.ndarray]:
    tokens_L, real_L = classification.pad_tokens(
      element, self.seq_len, truncate=self.truncate, where='an example'
    )
    example = corrupt(
      tokens_L,
      real_L,
      mask_rate=self.mask_rate,
      mask_id=self.mask_id,
      random_low=self.first_token,
      random_high=self.mask_id,
      rng=rng,
    )
    return {**example, 'mask': real_L}


@dataclasses.dataclass(kw_only=True, eq=False, repr=False)
class MaskedInputDatasets(loader.Datasets):
  """A classification task's inputs as a masked-token task ('mlm').

  Attributes:
    splits: split -> `Documents`.
    task_vocab_size: the classification task's vocabulary (0 is padding
      unless `first_token` is 0); the mask token is this id.
    first_token: the smallest id of a real token.
    mask_rate: fraction of real tokens selected.
    truncate: whether sequences longer than `seq_len` are cut.
    (The rest: see `loader.Datasets`; the seed also draws training masks.)
  """

  task_vocab_size: int
  first_token: int
  mask_rate: float
  truncate: bool = False

  @classmethod
  def of_task(
    cls, task: classification.ClassificationDatasets, *, mask_rate: float
  ) -> 'MaskedInputDatasets':
    """The masked-token task on the inputs of `task`, same loader settings."""
    keys = ('inputs1', 'inputs2') if task.pair else ('inputs',)
    splits = {
      split: Documents(examples, keys, f'{task.name}:{split}')
      for split, examples in task.splits.items()
    }
    return cls(
      name=task.name,
      splits=splits,
      seq_len=task.seq_len,
      batch_size=task.batch_size,
      seed=task.seed,
      shard_index=task.shard_index,
      shard_count=task.shard_count,
      worker_count=task.worker_count,
      worker_buffer_size=task.worker_buffer_size,
      read_threads=task.read_threads,
      task_vocab_size=task.vocab_size,
      first_token=task.first_token,
      mask_rate=mask_rate,
      truncate=task.truncate,
    )

  def _setup(self) -> None:
    self._require_train()
    if not 0 < self.mask_rate < 1:
      raise ValueError(f'mask_rate must be in (0, 1), got {self.mask_rate}')
    self.task = 'mlm'
    self.vocab_size = int(self.task_vocab_size) + 1
    self._masker = MaskInputs(
      seq_len=self.seq_len,
      truncate=self.truncate,
      mask_rate=self.mask_rate,
      mask_id=int(self.task_vocab_size),
      first_token=int(self.first_token),
    )

  def _open_train_loader(self) -> grain.DataLoader:
    return self._batch_loader(
      self.splits['train'], [self._masker], 'training sequences'
    )

  def _eval_batches(
    self, split: str, max_batches: int
  ) -> Iterator[dict[str, np.ndarray]]:
    """One sequence per row, masks seeded by its index: every pass alike."""
    documents = self.splits[split]

    def example(j: int) -> dict[str, np.ndarray]:
      rng = np.random.default_rng([EVAL_MASK_SEED, j])
      return self._masker.random_map(documents[j], rng)

    length = self.seq_len
    padding = {
      'inputs': np.zeros(length, np.int32),
      'targets': np.zeros(length, np.int32),
      'weights': np.zeros(length, np.float32),
      'mask': np.zeros(length, bool),
    }
    return self._sharded_batches(len(documents), example, padding, max_batches)

  def _describe(self) -> dict[str, Any]:
    return {**super()._describe(), 'mask_rate': self.mask_rate}
