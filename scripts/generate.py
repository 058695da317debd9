r"""Generates text with a trained language model from a workdir.

  python scripts/generate.py --workdir=workdirs/lm_shakespeare \
    --prompt='ROMEO:' --num_tokens=500 --temperature=0.8 --top_k=40 \
    --top_p=0.95 --seed=0

Loads the run's config.json and its best checkpoint (or --step), prefills
the prompt in one parallel pass and decodes token by token with the cached
state (constant time per token with FAVOR+), then prints the prompt and its
continuation. Byte-level models' bytes are decoded as UTF-8, invalid
sequences replaced by U+FFFD.
"""

import sys

from absl import app, flags, logging

from performer import generate as generate_lib

_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Workdir of a training run (config.json, checkpoints/).'
)
_PROMPT = flags.DEFINE_string('prompt', '\n', 'Text to continue.')
_NUM_TOKENS = flags.DEFINE_integer('num_tokens', 200, 'Tokens to generate.')
_TEMPERATURE = flags.DEFINE_float(
  'temperature', 1.0, 'Sampling temperature (> 0); 0 = greedy.'
)
_TOP_K = flags.DEFINE_integer(
  'top_k', 0, 'Sample among the k most likely tokens; 0 = all.'
)
_TOP_P = flags.DEFINE_float(
  'top_p', 1.0, 'Nucleus sampling: smallest set of probability top_p.'
)
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
_STEP = flags.DEFINE_integer(
  'step', None, 'Checkpoint step (default: the best by validation).'
)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax is chatty at INFO.
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required')
  try:
    text = generate_lib.generate_text(
      _WORKDIR.value,
      _PROMPT.value,
      num_tokens=_NUM_TOKENS.value,
      temperature=_TEMPERATURE.value,
      top_k=_TOP_K.value,
      top_p=_TOP_P.value,
      seed=_SEED.value,
      step=_STEP.value,
    )
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')
  print(text)


if __name__ == '__main__':
  app.run(main)
