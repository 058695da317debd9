r"""Trains a model: parses flags and calls `performer.train.train_and_evaluate`.

  python scripts/train.py  # the default job, configs/lm_shakespeare.py
  python scripts/train.py --config=configs/lm_shakespeare.py:attention=softmax \
    --config.num_train_steps=500 --workdir=workdirs/shakespeare_softmax

--workdir defaults to workdirs/<config file name>; a workdir holding a run
of the same config is resumed from its latest checkpoint.
"""

import os
import sys

# Config files import `configs.common`; make the repository root importable
# however this script is started.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from performer import train  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  os.path.join(REPO, 'configs', 'lm_shakespeare.py'),
  'Experiment config file, optionally with an argument: '
  'configs/X.py:key=value,...; fields can be overridden with '
  '--config.a.b=value.',
)
_WORKDIR = flags.DEFINE_string(
  'workdir',
  None,
  'Directory for checkpoints, metrics and config.json '
  '(default: workdirs/<config name>).',
)


def default_workdir(config_path: str) -> str:
  """workdirs/<config file name without .py and argument>."""
  name = os.path.basename(config_path.split(':', 1)[0])
  return os.path.join('workdirs', name.removesuffix('.py'))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    # Orbax logs every checkpoint step at INFO; the trainer prints its own
    # concise lines. -v 0 (or --verbosity=0) brings the INFO logs back.
    logging.set_verbosity(logging.WARNING)
  config_path = config_flags.get_config_filename(flags.FLAGS['config'])
  workdir = _WORKDIR.value or default_workdir(config_path)
  train.train_and_evaluate(_CONFIG.value, workdir)


if __name__ == '__main__':
  app.run(main)
