"""Config files and their command-line plumbing.

Every experiment config loads, is locked (a misspelled field fails), takes
`:attention=NAME`, and works with `--config.a.b=value` overrides the way
scripts/train.py parses them. Loading a config imports neither TensorFlow
nor TensorFlow Datasets.
"""

import glob
import json
import os
import subprocess
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from configs import common
from performer import attention

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(
  os.path.relpath(path, REPO)
  for path in glob.glob(os.path.join(REPO, 'configs', '*.py'))
  # Shared pieces (common.py, lra_common.py) define no experiment.
  if not os.path.basename(path).endswith('common.py')
  and os.path.basename(path) != '__init__.py'
)


def _parse_flags(*args: str) -> ml_collections.ConfigDict:
  """Parses `args` like scripts/train.py does, in a private FlagValues."""
  argv = ['train.py', *args]
  flag_values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
    'config', None, flag_values=flag_values, sys_argv=argv
  )
  cwd = os.getcwd()
  os.chdir(REPO)  # The config paths below are relative to the repository.
  try:
    flag_values(argv)
    return holder.value
  finally:
    os.chdir(cwd)


def test_parse_arg_types_and_defaults():
  args = common.parse_arg(
    'steps=500,lr=0.5,tiny,name=x', steps=10, lr=1.0, tiny=False, name='a'
  )
  assert args.to_dict() == {'steps': 500, 'lr': 0.5, 'tiny': True, 'name': 'x'}
  assert common.parse_arg(None, steps=10).steps == 10
  assert common.parse_arg('', steps=10).steps == 10
  assert common.parse_arg('tiny=false', tiny=True).tiny is False


def test_parse_arg_bare_value_sets_first_key():
  assert common.parse_arg('softmax', attention='favor').attention == 'softmax'


def test_parse_arg_bare_first_value_with_more_items():
  # The README's `lra_listops.py:favor,lite`: the variant, then a bool.
  defaults = dict(attention='favor', lite=False, steps=10)
  args = common.parse_arg('softmax,lite,steps=5', **defaults)
  assert args.to_dict() == {'attention': 'softmax', 'lite': True, 'steps': 5}
  # A bare first item that is a key stays a bool, as do later bare items.
  args = common.parse_arg('lite,steps=5', **defaults)
  assert args.to_dict() == {'attention': 'favor', 'lite': True, 'steps': 5}


def test_parse_arg_bare_later_value_is_an_unknown_key():
  defaults = dict(attention='favor', lite=False)
  with pytest.raises(
    ValueError, match=r"\['softmax'\]; valid keys: \['attention', 'lite'\]"
  ):
    common.parse_arg('lite,softmax', **defaults)
  with pytest.raises(ValueError, match=r"\['lte'\].*\['attention', 'lite'\]"):
    common.parse_arg('softmax,lte', **defaults)


def test_parse_arg_unknown_key_lists_valid_keys():
  with pytest.raises(ValueError, match=r"\['attenton'\].*\['attention'\]"):
    common.parse_arg('attenton=softmax', attention='favor')


def test_parse_arg_wrong_type():
  with pytest.raises(ValueError, match='steps'):
    common.parse_arg('steps=many', steps=10)
  with pytest.raises(ValueError, match='tiny'):
    common.parse_arg('tiny=maybe', tiny=False)


def test_base_config_max_len_follows_seq_len():
  config = common.base_config()
  config.data.seq_len = 123
  assert config.model.max_len == 123
  assert config.model.vocab_size == 0  # Taken from the data by the trainer.


@pytest.mark.parametrize('path', CONFIG_FILES)
def test_config_file_is_locked_and_documented(path):
  config = _parse_flags(f'--config={path}')
  assert config.is_locked
  assert 'python scripts/train.py' in _module_doc(path)
  with pytest.raises(AttributeError):
    config.num_train_step = 5  # Typo: locked configs refuse new fields.
  with pytest.raises(AttributeError):
    config.model.num_layer = 5
  assert config.num_train_steps > 0
  assert config.model.attention in attention.names()


@pytest.mark.parametrize('path', CONFIG_FILES)
def test_attention_argument(path):
  for name in attention.names():
    config = _parse_flags(f'--config={path}:attention={name}')
    assert config.model.attention == name


@pytest.mark.parametrize('path', CONFIG_FILES)
def test_unknown_attention_or_argument_fails(path):
  with pytest.raises(flags.IllegalFlagValueError, match='valid names'):
    _parse_flags(f'--config={path}:attention=fast')
  with pytest.raises(flags.IllegalFlagValueError, match='valid keys'):
    _parse_flags(f'--config={path}:atention=softmax')


def test_nested_overrides():
  config = _parse_flags(
    '--config=configs/lm_shakespeare.py:attention=softmax',
    '--config.model.num_layers=2',
    '--config.data.seq_len=128',
    '--config.model.attention_options.favor.num_features=32',
    '--config.learning_rate=0.01',
  )
  assert config.model.attention == 'softmax'
  assert config.model.num_layers == 2
  assert config.data.seq_len == 128
  assert config.model.max_len == 128  # Follows data.seq_len.
  assert config.model.attention_options.favor.num_features == 32
  assert config.learning_rate == 0.01


def test_override_typo_fails():
  with pytest.raises(AttributeError, match='num_layers'):
    _parse_flags(
      '--config=configs/lm_shakespeare.py', '--config.model.num_layer=2'
    )


def test_default_job_is_shakespeare_favor():
  config = _parse_flags('--config=configs/lm_shakespeare.py')
  assert config.data.name == 'shakespeare'
  assert config.data.tokenizer == 'byte'
  assert config.model.attention == 'favor'
  assert config.model.causal


def test_script_validates_before_writing(tmp_path):
  """scripts/train.py parses flags and fails on a bad value, writing nothing."""
  workdir = tmp_path / 'run'
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO, 'scripts', 'train.py'),
      '--config.schedule=bogus',
      f'--workdir={workdir}',
    ],
    capture_output=True,
    text=True,
    cwd=tmp_path,
    timeout=120,
  )
  assert result.returncode != 0
  assert "schedule must be one of ('cosine'" in result.stderr
  assert not workdir.exists()


CONFIG_MODULES = sorted(
  'configs'
  if os.path.basename(path) == '__init__.py'
  else f'configs.{os.path.basename(path)[:-3]}'
  for path in glob.glob(os.path.join(REPO, 'configs', '*.py'))
)
# A fresh interpreter imports the modules in turn, calls get_config() where
# there is one and prints which of these each pulled in.
_HEAVY = ('tensorflow', 'tensorflow_datasets')
_IMPORT_SCRIPT = """
import importlib, json, sys
pulled, seen = {{}}, set()
for name in sys.argv[1:]:
  module = importlib.import_module(name)
  if hasattr(module, 'get_config'):
    module.get_config()
  # Imports accumulate: a module is blamed for what appeared with it.
  pulled[name] = sorted(
    m for m in {heavy} if m in sys.modules and m not in seen
  )
  seen.update(pulled[name])
print(json.dumps(pulled))
"""


def test_config_modules_import_no_tensorflow():
  # One process for all: each module's import adds what it pulls in, so
  # the first module that pulls in TensorFlow is the one named.
  result = subprocess.run(
    [
      sys.executable,
      '-c',
      _IMPORT_SCRIPT.format(heavy=_HEAVY),
      *CONFIG_MODULES,
    ],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr
  pulled = json.loads(result.stdout.strip().splitlines()[-1])
  assert sorted(pulled) == sorted(CONFIG_MODULES)
  assert {m: p for m, p in pulled.items() if p} == {}


def _module_doc(path: str) -> str:
  with open(os.path.join(REPO, path)) as f:
    source = f.read()
  return source.split('"""')[1]


def test_redraw_sweep_run_length():
  """lm_redraw's steps=N: the run length, a 10% warmup and ~24 validation
  points; the default keeps 300 steps; a negative length names the value."""
  default = _parse_flags('--config=configs/lm_redraw.py')
  assert default.num_train_steps == 300 and default.warmup_steps == 30
  config = _parse_flags('--config=configs/lm_redraw.py:steps=2400,redraw=100')
  assert config.num_train_steps == 2400
  assert config.warmup_steps == 240
  assert config.eval_every_steps == config.log_every_steps == 100
  assert config.model.attention_options.favor.redraw_interval == 100
  from configs import lm_redraw

  with pytest.raises(ValueError, match='steps must be >= 0.*got -5'):
    lm_redraw.get_config('steps=-5')
