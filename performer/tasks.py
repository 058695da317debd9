"""The one table of tasks: what each trains, on which inputs, with which loss.

A task is what the data asks the model to do. Each names the model head
that serves it, the attention direction, the batch keys the model is
called with (in call order) and the loss; the data config alone says which
task a run trains (`task_of`), so a config can be checked before any data
is opened.

  task = tasks.get(tasks.task_of(config.data))
  logits = model(*(batch[k] for k in task.inputs), train=True, rngs=rngs)
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from performer import data
from performer import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class Task:
  """What a task trains.

  Attributes:
    name: 'lm', 'mlm', 'classification' or 'retrieval'.
    head: the `model.head` that serves it.
    causal: the attention direction it needs (`model.causal`).
    inputs: batch keys passed to the model, in call order.
    sequences: token sequences per example (2 for pairs).
    why: why the direction is forced, for error messages.
  """

  name: str
  head: str
  causal: bool
  inputs: tuple[str, ...]
  sequences: int
  why: str

  @property
  def batch_keys(self) -> tuple[str, ...]:
    """Every key of a batch the steps read: the inputs, targets, weights."""
    return (*self.inputs, 'targets', 'weights')

  def loss_sums(
    self, logits_XV: jax.Array, batch: Mapping[str, jax.Array]
  ) -> dict[str, jax.Array]:
    """Weighted cross-entropy sums of the task's predictions (every task).

    Next-token and masked-token tasks predict one token per position (X =
    [B, L], masked positions only for 'mlm' through the weights); the
    classification tasks one label per example (X = [B]).
    """
    return metrics_lib.xent_sums(logits_XV, batch['targets'], batch['weights'])


TASKS = {
  task.name: task
  for task in (
    Task(
      'lm',
      head='lm',
      causal=True,
      inputs=('inputs',),
      sequences=1,
      why='a bidirectional LM sees the tokens it predicts',
    ),
    Task(
      'mlm',
      head='lm',
      causal=False,
      inputs=('inputs', 'mask'),
      sequences=1,
      why='masked tokens are predicted from both sides',
    ),
    Task(
      'classification',
      head='classifier',
      causal=False,
      inputs=('inputs', 'mask'),
      sequences=1,
      why='the task encodes whole sequences',
    ),
    Task(
      'retrieval',
      head='dual_encoder',
      causal=False,
      inputs=('inputs1', 'inputs2', 'mask1', 'mask2'),
      sequences=2,
      why='the task encodes whole sequences',
    ),
  )
}

# Dataset name -> task, from the data package's name lists; 'protein'
# depends on data.objective, and 'aan' (document pairs) is retrieval.
_DATA_TASKS = {
  **{name: 'lm' for name in data.LM_NAMES},
  **{name: 'classification' for name in data.CLASSIFICATION_NAMES},
  'aan': 'retrieval',
}


def get(name: str) -> Task:
  """The task called `name`; ValueError listing the valid ones otherwise."""
  if name not in TASKS:
    raise ValueError(f'unknown task {name!r}; valid tasks: {sorted(TASKS)}')
  return TASKS[name]


def task_of(data_config: Mapping[str, Any]) -> str:
  """The task the dataset of `data_config` trains.

  Raises:
    ValueError: an unknown dataset name.
  """
  name = data_config['name']
  masked = data_config.get('objective', 'causal') == 'masked'
  if name in data.PROTEIN_NAMES:
    return 'mlm' if masked else 'lm'
  if name in data.CLASSIFICATION_NAMES and masked:
    return 'mlm'  # Self-pretraining on the task's inputs.
  if name not in _DATA_TASKS:
    valid = sorted([*_DATA_TASKS, *data.PROTEIN_NAMES])
    raise ValueError(f'unknown dataset {name!r}; valid names: {valid}')
  return _DATA_TASKS[name]


def reported_metric(config: Mapping[str, Any]) -> str | None:
  """The metric derived from the loss that a run of `config` reports.

  Bits per byte for byte-level text corpora, perplexity for other
  token-level tasks (SentencePiece corpora, proteins), none for classifiers.
  """
  if config['model']['head'] != 'lm':
    return None
  data_config = config['data']
  if (
    data_config['name'] in data.LM_NAMES and data_config['tokenizer'] == 'byte'
  ):
    return 'bits_per_byte'
  return 'perplexity'


def forward(
  model: Any,
  task: Task,
  batch: Mapping[str, jax.Array],
  *,
  train: bool,
  rngs: Any = None,
) -> jax.Array:
  """The model's logits for a batch of `task`.

  - 'lm': 'inputs' [B, L] -> [B, L, V];
  - 'mlm': 'inputs', 'mask' [B, L] -> [B, L, V];
  - 'classification': 'inputs', 'mask' [B, L] -> [B, C];
  - 'retrieval': 'inputs1', 'inputs2', 'mask1', 'mask2' -> [B, C].
  """
  return model(*(batch[k] for k in task.inputs), train=train, rngs=rngs)
