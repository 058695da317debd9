"""Self-pretraining, then the task: the two stages of `config.pretrain_steps`.

With `config.pretrain_steps` = N > 0, `train.train_and_evaluate` runs, in
one command, the recipe of Amos, Berant and Gupta ("Never Train from
Scratch", ICLR 2024):

1. Pretraining, in <workdir>/pretrain: the same encoder with a language-
   model head, trained for N steps on the task's own training inputs as a
   masked-token task (data.objective='masked': data.mask_rate of the real
   tokens selected, BERT's 80/10/10 corruption; Retrieval's two documents
   both; see performer/data/masking.py), with the run's optimizer and
   schedule, its warmup the same fraction of N as of the run; the best
   checkpoint is picked by validation loss (masked tokens of the
   validation inputs).
2. Fine-tuning, in <workdir>: the task itself, from the pretraining
   stage's best checkpoint (config.init_from): the encoder's parameters
   move; the classifier's head, and its CLS vector (an LM's encoder has
   none), start fresh. The vocabulary keeps the mask token's id, unused
   in fine-tuning.

Every attention variant runs bidirectionally in the LRA encoders, so every
one pretrains with the masked objective (a causal next-token objective, the
paper's choice for causal models, does not apply to them).

Rerunning the command resumes where it stopped: a finished pretraining
stage is not rerun, an interrupted one resumes, then fine-tuning resumes.
The fine-tuning stage's results.json holds the pretraining stage's final
metrics too, under 'pretrain/'; its config.json records it as what it is,
a run with init_from=<workdir>/pretrain (and pretrain_steps=0).
"""

import os
from typing import Any

import ml_collections

STAGE_DIR = 'pretrain'


def stage_workdir(workdir: str) -> str:
  """Where the pretraining stage of the run in `workdir` trains."""
  return os.path.join(os.path.abspath(workdir), STAGE_DIR)


def pretraining_config(
  config: ml_collections.ConfigDict,
) -> ml_collections.ConfigDict:
  """The config of stage 1 (module docstring) of a validated `config`."""
  steps = config.pretrain_steps
  c = config.copy_and_resolve_references()
  c.unlock()
  c.data.objective = 'masked'
  c.model.head = 'lm'
  c.model.causal = False
  c.num_train_steps = steps
  # The same fraction of the stage as of the run.
  c.warmup_steps = min(
    steps, round(config.warmup_steps * steps / config.num_train_steps)
  )
  c.eval_every_steps = min(config.eval_every_steps, steps)
  c.log_every_steps = min(config.log_every_steps, steps)
  c.best_metric = 'loss'
  c.best_mode = 'min'
  c.sample_num_tokens = 0
  c.pretrain_steps = 0
  c.init_from = ''
  c.lock()
  return c


def finetuning_config(
  config: ml_collections.ConfigDict,
  workdir: str,
  pretrained: dict[str, Any] | None,
) -> ml_collections.ConfigDict:
  """The config of stage 2 (module docstring).

  Args:
    config: the validated run config.
    workdir: the run's workdir.
    pretrained: the saved config of the pretraining stage, which gives the
      vocabulary size (the task's plus the mask token); None before it has
      run (the size then follows the data, for checking only).
  """
  c = config.copy_and_resolve_references()
  c.init_from = stage_workdir(workdir)
  c.pretrain_steps = 0  # This is the second stage.
  if pretrained is not None and not c.model.vocab_size:
    c.model.vocab_size = int(pretrained['model']['vocab_size'])
  return c


def finished(results: dict[str, Any] | None, steps: int) -> bool:
  """Whether a stage's results.json says it ran all of its `steps`."""
  return bool(results) and results.get('step') == steps


def prefixed(results: dict[str, Any]) -> dict[str, Any]:
  """The pretraining stage's metrics, as the run's results record them."""
  keep = ('step', 'best_step', 'wall_time_sec', 'peak_memory_bytes')
  return {
    f'pretrain/{k}': v
    for k, v in results.items()
    if k in keep or k.startswith(('train/', 'validation/', 'test/'))
  }
