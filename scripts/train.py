r"""Trains a model: parses flags and calls `performer.train.train_and_evaluate`.

  python scripts/train.py  # the default job, configs/lm_shakespeare.py
  python scripts/train.py --config=configs/lm_shakespeare.py:attention=softmax \
    --config.num_train_steps=500 --workdir=workdirs/shakespeare_softmax

--workdir defaults to workdirs/<config file name>; a workdir holding a run
of the same config is resumed from its latest checkpoint.

Several processes (a multi-node GPU job, a Cloud TPU slice) join through
`jax.distributed.initialize()`: under SLURM, Open MPI or a GKE TPU slice
this happens by itself (--distributed=auto); elsewhere pass
--distributed=on (Cloud TPU VMs) or the coordinator, process count and id:

  python scripts/train.py --config=... --workdir=/shared/run \
    --coordinator_address=host0:1234 --num_processes=2 --process_id=0

A SIGTERM (preemption notice) saves a checkpoint of the current step and
exits with status 0; the same command resumes. See docs/scaling.md.
"""

import contextlib
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from performer import parallel, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def config_errors_exit():
  """Turns a bad --config or override into one clear line and exit 1.

  ml_collections loads the config file and applies --config.a.b=v
  overrides while the flag is defined and parsed: a misspelt field, a
  missing file or a bad value would otherwise end in a raw traceback.
  """
  try:
    yield
  except flags.Error as error:
    # An error inside the config file arrives with its traceback as text:
    # its last line is the message.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    sys.exit(f'error: {lines[-1]}\nPass --helpshort or --helpfull for help.')
  except KeyError as error:  # A misspelt field of an override.
    message = str(error.args[0]) if error.args else str(error)
    sys.exit('error: unknown config field ' + ' '.join(message.split('\n')))
  except OSError as error:  # No such config file, or it failed to import.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    sys.exit(f'error: cannot load --config: {lines[-1] if lines else error}')
  except (ValueError, TypeError, AttributeError) as error:
    sys.exit(f'error: bad --config: {error}')


with config_errors_exit():
  _CONFIG = config_flags.DEFINE_config_file(
    'config',
    os.path.join(REPO, 'configs', 'lm_shakespeare.py'),
    'Experiment config file, optionally with an argument: '
    'configs/X.py:key=value,...; fields can be overridden with '
    '--config.a.b=value.',
  )
_DISTRIBUTED = flags.DEFINE_enum(
  'distributed',
  'auto',
  list(parallel.DISTRIBUTED),
  'Join a multi-process run with jax.distributed.initialize(): auto (when '
  '--coordinator_address is given or SLURM, Open MPI or a GKE TPU slice is '
  'detected), on (always; JAX detects what is not given), off.',
)
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address',
  '',
  "host:port of process 0's coordinator, for a manual multi-process launch.",
)
_NUM_PROCESSES = flags.DEFINE_integer(
  'num_processes', 0, 'Number of processes of a manual launch.'
)
_PROCESS_ID = flags.DEFINE_integer(
  'process_id', -1, 'This process, in [0, num_processes), of a manual launch.'
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
  # Before anything runs on a device.
  parallel.initialize_distributed(
    _DISTRIBUTED.value,
    coordinator_address=_COORDINATOR.value,
    num_processes=_NUM_PROCESSES.value,
    process_id=_PROCESS_ID.value,
  )
  config_path = config_flags.get_config_filename(flags.FLAGS['config'])
  workdir = _WORKDIR.value or default_workdir(config_path)
  with config_errors_exit():
    config = _CONFIG.value
    config.to_dict()  # A config that failed to load raises on first use.
  try:
    train.train_and_evaluate(config, workdir)
  except (ValueError, FileNotFoundError, FloatingPointError) as error:
    sys.exit(f'error: {error}')


def parse_flags_or_exit(argv: list[str]) -> list[str]:
  """absl's flag parsing, with one clear line for a bad flag or config."""
  with config_errors_exit():
    return flags.FLAGS(argv)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags_or_exit)
