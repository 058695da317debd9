"""What every dataset shares: loader settings, grain training, eval batches.

`Datasets` is the base of the three dataset families (`lm.Datasets`,
`classification.ClassificationDatasets`, `protein.ProteinDatasets`): it
holds the loader settings (batch size, seed, shard, grain's workers), opens
the train loader when the dataset is made, and checks the split that
`eval_batches` is asked for. `shuffled_loader` is the grain loader every
task trains from; `sharded_batches` the evaluation pass of tasks whose
examples are one row each.
"""

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

SPLITS = ('train', 'validation', 'test')
# Grain's seeds are uint32.
_SEED_RANGE = 2**32


def shuffled_loader(
  source: Sequence[Any],
  operations: list,
  *,
  batch_size: int,
  seed: int,
  shard_index: int,
  shard_count: int,
  worker_count: int = 0,
  worker_buffer_size: int = 1,
  read_threads: int = 4,
) -> grain.DataLoader:
  """The infinite, shuffled, sharded grain loader every task trains from.

  Each shard gets its own contiguous range of `source`'s records, shuffled
  with `seed` and reshuffled every epoch; `operations` map each record and
  then batches of `batch_size` are formed (the last partial one dropped).
  The iterator's state (`get_state` / `set_state`) replays exactly.
  """
  if worker_count and not flags.FLAGS.is_parsed():
    # Grain's worker processes read absl flags, which only a program run by
    # absl.app has parsed; an unparsed set fails in the workers.
    flags.FLAGS.mark_as_parsed()
  shard_options = grain.sharding.ShardOptions(
    shard_index=shard_index, shard_count=shard_count, drop_remainder=True
  )
  sampler = grain.samplers.IndexSampler(
    num_records=len(source),
    shard_options=shard_options,
    shuffle=True,
    num_epochs=None,
    seed=seed,
  )
  return grain.DataLoader(
    data_source=source,
    sampler=sampler,
    operations=[
      *operations,
      grain.transforms.Batch(batch_size=batch_size, drop_remainder=True),
    ],
    worker_count=worker_count,
    worker_buffer_size=worker_buffer_size,
    shard_options=shard_options,
    read_options=grain.ReadOptions(
      num_threads=read_threads, prefetch_buffer_size=2 * batch_size
    ),
  )


def sharded_batches(
  num_examples: int,
  example: Callable[[int], dict[str, np.ndarray]],
  padding: dict[str, np.ndarray],
  *,
  batch_size: int,
  shard_index: int,
  shard_count: int,
  max_batches: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-shape batches of examples j = shard_index, + shard_count, ...

  Every shard yields the same number of batches (what the largest shard
  needs, at most `max_batches` when > 0), the last ones filled with
  `padding` rows (weight 0), so that processes evaluating in lockstep stay
  in step.

  Args:
    num_examples: examples in the split.
    example: example j of the split.
    padding: the row that fills a batch.
    batch_size, shard_index, shard_count: as for `shuffled_loader`.
    max_batches: stop after this many batches (0: the whole split).
  """
  mine = np.arange(shard_index, num_examples, shard_count)
  num_batches = math.ceil(math.ceil(num_examples / shard_count) / batch_size)
  if max_batches:
    num_batches = min(num_batches, max_batches)
  for b in range(num_batches):
    rows = [example(int(j)) for j in mine[b * batch_size :][:batch_size]]
    rows += [padding] * (batch_size - len(rows))
    yield {k: np.stack([row[k] for row in rows]) for k in rows[0]}


@dataclasses.dataclass(kw_only=True, eq=False, repr=False)
class Datasets:
  """A dataset ready for the trainer: the part every family shares.

  A family adds its own fields and implements `_open_train_loader` and
  `_eval_batches`; `__post_init__` sets `eval_splits`, `task` and
  `vocab_size` through `_setup` and opens the train loader at once, so
  that a split too small fails when the dataset is made.

  Attributes:
    name: the dataset, for messages.
    splits: split name -> the split's data; 'train' is required.
    seq_len: tokens per example (per sequence of a pair).
    batch_size: examples per batch in this process.
    seed: shuffles training (and draws its random crops or masks); taken
      modulo 2**32 (grain's seed range).
    shard_index: this process's shard of the data, in [0, shard_count).
    shard_count: number of shards (processes).
    worker_count: grain worker processes (0: load in this process).
    worker_buffer_size: batches each worker prepares ahead.
    read_threads: grain's reader threads.
    task: what the trainer optimizes: 'lm', 'mlm', 'classification' or
      'retrieval' (`performer.tasks`).
    vocab_size: number of token ids.
    eval_splits: the splits `eval_batches` accepts.
  """

  name: str
  splits: Mapping[str, Any]
  seq_len: int
  batch_size: int
  seed: int
  shard_index: int = 0
  shard_count: int = 1
  worker_count: int = 0
  worker_buffer_size: int = 1
  read_threads: int = 4

  @classmethod
  def from_config(cls, c, **fields) -> 'Datasets':
    """Makes the dataset with the name, seq_len and grain settings of `c`.

    Args:
      c: the validated data config.
      **fields: the other fields (splits, batch_size, seed, ... and the
        family's own).
    """
    return cls(
      name=c.name,
      seq_len=c.seq_len,
      worker_count=c.worker_count,
      worker_buffer_size=c.worker_buffer_size,
      read_threads=c.read_threads,
      **fields,
    )

  def __post_init__(self):
    self.eval_splits = tuple(s for s in SPLITS if s in self.splits)
    self._setup()
    self._train_loader = self._open_train_loader()

  def _setup(self) -> None:
    """Checks the family's fields and sets `task` and `vocab_size`."""
    raise NotImplementedError

  def _open_train_loader(self) -> grain.DataLoader:
    raise NotImplementedError

  def _eval_batches(
    self, split: str, max_batches: int
  ) -> Iterator[dict[str, np.ndarray]]:
    raise NotImplementedError

  def _batch_loader(
    self, source: Sequence[Any], operations: list, unit: str
  ) -> grain.DataLoader:
    """`shuffled_loader` of `source`, which must fill one batch per shard.

    Args:
      source: the training records.
      operations: grain transforms of each record.
      unit: what a record is, for the error ('training examples').
    """
    if len(source) < self.shard_count * self.batch_size:
      raise ValueError(
        f'{self.name} has {len(source)} {unit}, fewer than one batch per '
        f'process ({self.batch_size} x {self.shard_count} processes)'
      )
    return shuffled_loader(source, operations, **self.loader_options)

  def _require_train(self, message: str = '') -> None:
    if 'train' not in self.splits:
      raise ValueError(message or f'{self.name} has no train split')

  @property
  def loader_options(self) -> dict[str, int]:
    """The keyword arguments of `shuffled_loader` for this dataset."""
    return {
      'batch_size': self.batch_size,
      'seed': self.seed % _SEED_RANGE,
      'shard_index': self.shard_index,
      'shard_count': self.shard_count,
      'worker_count': self.worker_count,
      'worker_buffer_size': self.worker_buffer_size,
      'read_threads': self.read_threads,
    }

  def train_loader(self) -> grain.DataLoader:
    """Returns the infinite loader of shuffled, sharded train batches.

    `iter(loader)` is a `grain.DataLoaderIterator`: `get_state()` and
    `set_state(state)` save and restore its position exactly (the trainer
    saves it with Orbax through `grain.checkpoint.CheckpointSave`).
    """
    return self._train_loader

  def eval_batches(
    self, split: str, max_batches: int = 0
  ) -> Iterator[dict[str, np.ndarray]]:
    """Yields one deterministic pass over `split` in fixed-shape batches.

    Every process yields the same number of batches over its own share of
    the split; weight-0 rows pad the last ones.

    Args:
      split: 'validation', 'test' or 'train'.
      max_batches: stop after this many batches (0: the whole split).
    """
    if split not in self.eval_splits:
      raise ValueError(
        f'{self.name} has no {split!r} split; it has {self.eval_splits}'
      )
    return self._eval_batches(split, max_batches)

  def _sharded_batches(
    self,
    num_examples: int,
    example: Callable[[int], dict[str, np.ndarray]],
    padding: dict[str, np.ndarray],
    max_batches: int,
  ) -> Iterator[dict[str, np.ndarray]]:
    """`sharded_batches` with this dataset's batch size and shard."""
    return sharded_batches(
      num_examples,
      example,
      padding,
      batch_size=self.batch_size,
      shard_index=self.shard_index,
      shard_count=self.shard_count,
      max_batches=max_batches,
    )

  def _describe(self) -> dict[str, Any]:
    """The fields `__repr__` shows besides the name and task."""
    return {'vocab_size': self.vocab_size, 'seq_len': self.seq_len}

  def __repr__(self) -> str:
    fields = {'name': self.name, 'task': self.task, **self._describe()}
    fields['splits'] = self.eval_splits
    shown = ', '.join(f'{k}={v!r}' for k, v in fields.items())
    return f'{type(self).__name__}({shown})'
