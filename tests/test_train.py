"""The trainer end to end, on a tiny causal LM over a text file.

One uninterrupted reference run (module fixture) serves several tests; the
other runs reuse its model and optimizer settings, so the jitted steps
compile once per process.
"""

import json
import math
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import common
from performer import attention, optim, steps, train
from performer import model as model_lib
from performer import workdir as ckpt_lib
from performer.data import build as data_build
from tests.test_attention_interface import BIDIRECTIONAL_ONLY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8  # The reference run; the resume test stops at STEPS // 2.
# Metrics that measure time, which no two runs share.
TIMINGS = ('tokens_per_sec', 'steps_per_sec')

# Step 1's training loss of the reference run. It changes when the model's
# initialization, the loss, the seed handling (parameter and dropout keys,
# FAVOR+ features), the data order or the corpus written below change; if
# such a change is intended, update the value.
GOLDEN_STEP1_LOSS = 6.07590
# Both are one fp32 forward pass on the same CPU; 1e-5 leaves room only for
# summation order.
GOLDEN_RTOL = 1e-5

# Small options for each variant, so each compiles in seconds.
SMALL_OPTIONS = {
  'favor': {'num_features': 16, 'chunk_size': 8, 'redraw_interval': 3},
  'favor_scan': {'num_features': 16},
  'local': {'window': 8},
  'sparse': {'block_size': 8},
}


@pytest.fixture(scope='module')
def corpus(tmp_path_factory) -> str:
  """A 40 kB text file of seeded random 'sentences'."""
  rng = np.random.default_rng(0)
  words = (
    'to be or not that is the question whether tis nobler in mind suffer '
    'slings and arrows of outrageous fortune take arms against sea troubles'
  ).split()
  lines = [' '.join(rng.choice(words, size=10)) for _ in range(700)]
  path = tmp_path_factory.mktemp('corpus') / 'corpus.txt'
  path.write_text('\n'.join(lines))
  return str(path)


def _config(corpus: str, **overrides) -> ml_collections.ConfigDict:
  """The tiny test config; `overrides` use dotted names ('model.x')."""
  config = common.base_config()
  config.data.name = 'text_files'
  config.data.path = corpus
  config.data.seq_len = 32
  config.data.read_threads = 1
  config.model.update(
    num_layers=1,
    emb_dim=32,
    qkv_dim=32,
    num_heads=2,
    mlp_dim=64,
    dropout_rate=0.1,  # Dropout on, so its keys are part of what is tested.
    attention='favor',
  )
  for name, options in SMALL_OPTIONS.items():
    if name in config.model.attention_options:
      config.model.attention_options[name].update(options)
  config.update(
    batch_size=4,
    num_train_steps=STEPS,
    learning_rate=3e-3,
    warmup_steps=2,
    schedule='cosine',
    log_every_steps=1,
    eval_every_steps=2,
    eval_max_batches=2,
    test_max_batches=2,
    keep_checkpoints=1,
    # 'max' on the loss ranks the worst evaluation best: the best checkpoint
    # is then an early one, which the last-1 policy alone would delete.
    best_metric='loss',
    best_mode='max',
    sample_num_tokens=0,
  )
  config.lock()
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


@pytest.fixture(scope='module')
def reference(corpus, tmp_path_factory):
  """An uninterrupted run of STEPS steps: (workdir, result)."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  result = train.train_and_evaluate(_config(corpus), workdir)
  return workdir, result


def _records(workdir: str, split: str) -> list[dict]:
  records = ckpt_lib.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  return [r for r in records if r['split'] == split]


def _snapshot(directory: str) -> dict[str, bytes]:
  """Every file's bytes under `directory`."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, directory)] = f.read()
  return files


def test_first_step_loss_is_golden(reference):
  workdir, _ = reference
  loss = _records(workdir, 'train')[0]['loss']
  assert loss == pytest.approx(GOLDEN_STEP1_LOSS, rel=GOLDEN_RTOL), (
    f'step-1 loss {loss:.6f} != golden {GOLDEN_STEP1_LOSS}: model init, '
    'loss, seeding, data order or the test corpus changed; update '
    'GOLDEN_STEP1_LOSS if that was intended'
  )
  # A byte model starts near uniform: ln(256) = 5.545 nats.
  assert abs(loss - math.log(256)) < 1.0


def test_metrics_files(reference):
  workdir, result = reference
  train_rows = _records(workdir, 'train')
  assert [r['step'] for r in train_rows] == list(range(1, STEPS + 1))
  for row in train_rows:
    assert set(row) >= {
      'step',
      'split',
      'loss',
      'accuracy',
      'bits_per_byte',
      'grad_norm',
      'learning_rate',
      'tokens_per_sec',
      'steps_per_sec',
    }
    assert row['bits_per_byte'] == pytest.approx(row['loss'] / math.log(2))
  validation = _records(workdir, 'validation')
  assert [r['step'] for r in validation] == list(range(2, STEPS + 1, 2))
  (test,) = _records(workdir, 'test')
  for row in (*validation, test):
    assert set(row) == {'step', 'split', 'loss', 'accuracy', 'bits_per_byte'}
  assert result['validation/loss'] == validation[-1]['loss']
  assert result['test/bits_per_byte'] == test['bits_per_byte']
  assert result['step'] == STEPS
  with open(os.path.join(workdir, 'results.json')) as f:
    saved_result = json.load(f)
  assert saved_result['test/loss'] == result['test/loss']
  assert saved_result['best_step'] == result['best_step']
  assert saved_result['peak_memory_bytes'] > 0
  # Warmup starts at 0 and reaches the peak after warmup_steps.
  assert train_rows[0]['learning_rate'] == 0.0
  assert train_rows[2]['learning_rate'] == pytest.approx(3e-3)

  with open(os.path.join(workdir, 'config.json')) as f:
    saved = json.load(f)
  assert saved['model']['vocab_size'] == 256  # Resolved from the data.
  assert saved['model']['max_len'] == 32  # Follows data.seq_len.
  events = os.listdir(os.path.join(workdir, 'tensorboard'))
  assert any(name.startswith('events.out.tfevents') for name in events)


def test_test_split_uses_best_checkpoint(reference, corpus):
  workdir, result = reference
  validation = _records(workdir, 'validation')
  best = max(validation, key=lambda r: r['loss'])['step']  # best_mode='max'
  assert best != STEPS, 'the test needs a best step other than the last'
  assert result['best_step'] == best
  # keep_checkpoints=1 keeps the last; the best is kept in addition.
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  assert sorted(int(s) for s in os.listdir(ckpt_dir)) == [best, STEPS]

  # Evaluate the best checkpoint independently: restore it, run the model,
  # and compute the cross-entropy with numpy.
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  model = model_lib.create_model(config.model, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(
    model, optim.make_optimizer(config)[0], wrt=nnx.Param
  )
  graphdef, state = nnx.split(steps.TrainState(model, optimizer))
  ckpts = ckpt_lib.Checkpoints(
    ckpt_dir, keep=1, best_metric='loss', best_mode='max'
  )
  try:
    state = ckpts.restore(best, ckpt_lib.abstract(state))
  finally:
    ckpts.close()
  model = nnx.merge(graphdef, state).model
  datasets = data_build.create(config.data, batch_size=4, seed=0)
  loss_sum = weight_sum = 0.0
  for batch in datasets.eval_batches('test', max_batches=2):
    logits = np.asarray(model(batch['inputs']), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, batch['targets'][..., None], -1)[..., 0]
    loss_sum += float((nll * batch['weights']).sum())
    weight_sum += float(batch['weights'].sum())
  # fp32 model against a float64 loss on the same logits.
  assert result['test/loss'] == pytest.approx(loss_sum / weight_sum, rel=1e-5)


class _Preempted(Exception):
  pass


def test_resume_gives_identical_losses(
  reference, corpus, tmp_path, monkeypatch
):
  """Stop during step STEPS/2 + 2, resume, and match the reference exactly."""
  workdir = str(tmp_path / 'run')
  config = _config(corpus)
  stop_at = STEPS // 2 + 2  # Steps up to STEPS // 2 + 1 ran; last save 4.
  calls = []
  real_step = steps.train_step

  def preempted_step(*args):
    calls.append(None)
    if len(calls) == stop_at:
      raise _Preempted
    return real_step(*args)

  monkeypatch.setattr(steps, 'train_step', preempted_step)
  with pytest.raises(_Preempted):
    train.train_and_evaluate(config, workdir)
  logged = [r['step'] for r in _records(workdir, 'train')]
  assert logged == list(range(1, stop_at))  # Includes one step past the save.
  monkeypatch.setattr(steps, 'train_step', real_step)

  result = train.train_and_evaluate(config, workdir)
  reference_dir, reference_result = reference
  for split in ('train', 'validation', 'test'):
    resumed = [
      {k: v for k, v in r.items() if k not in TIMINGS}
      for r in _records(workdir, split)
    ]
    expected = [
      {k: v for k, v in r.items() if k not in TIMINGS}
      for r in _records(reference_dir, split)
    ]
    assert resumed == expected, split  # Exactly: same bits, not just close.
  assert result['test/loss'] == reference_result['test/loss']


def test_rerun_of_finished_run_only_evaluates(reference, corpus, tmp_path):
  reference_dir, reference_result = reference
  workdir = str(tmp_path / 'copy')
  shutil.copytree(reference_dir, workdir)
  result = train.train_and_evaluate(_config(corpus), workdir)
  assert result['step'] == STEPS
  assert result['test/loss'] == reference_result['test/loss']
  assert _records(workdir, 'train') == _records(reference_dir, 'train')
  assert len(_records(workdir, 'test')) == 1


def test_incompatible_workdir_is_refused_untouched(reference, corpus, tmp_path):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(reference[0], workdir)
  before = _snapshot(workdir)
  config = _config(corpus, **{'model.num_layers': 2, 'data.seq_len': 16})
  with pytest.raises(ValueError) as error:
    train.train_and_evaluate(config, workdir)
  message = str(error.value)
  for field in ('model.num_layers', 'data.seq_len', 'model.max_len'):
    assert field in message
  assert _snapshot(workdir) == before


def test_invalid_config_fails_before_writing(corpus, tmp_path):
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match='schedule must be one of'):
    train.train_and_evaluate(_config(corpus, schedule='cosin'), str(workdir))
  with pytest.raises(ValueError, match='best_metric must be one of'):
    train.train_and_evaluate(
      _config(corpus, best_metric='perplexity'), str(workdir)
    )
  with pytest.raises(FileNotFoundError):
    train.train_and_evaluate(
      _config(corpus, **{'data.path': str(tmp_path / 'nope.txt')}),
      str(workdir),
    )
  assert not workdir.exists()


def test_nan_loss_stops_naming_the_step(corpus, tmp_path):
  workdir = str(tmp_path / 'run')
  # A huge constant learning rate without clipping blows the weights up
  # within a few steps.
  config = _config(
    corpus,
    learning_rate=1e9,
    warmup_steps=0,
    schedule='constant',
    grad_clip_norm=0.0,
    num_train_steps=50,
    eval_every_steps=100,
    checkpoint_every_steps=1,
    keep_checkpoints=100,
    **{'model.attention': 'softmax'},
  )
  with pytest.raises(FloatingPointError, match=r'at step (\d+)') as error:
    train.train_and_evaluate(config, workdir)
  bad_step = int(error.value.args[0].split('at step ')[1].split(';')[0])
  saved = sorted(
    int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))
  )
  assert saved == list(range(1, bad_step))  # Only the good steps were saved.
  assert f'last good checkpoint is step {bad_step - 1}' in str(error.value)


# The reference run trains 'favor' (with redraws) through the whole trainer;
# a language model is causal, which Linformer and Sinkhorn cannot be.
@pytest.mark.parametrize(
  'name',
  [
    name
    for name in attention.names()
    if name != 'favor' and name not in BIDIRECTIONAL_ONLY
  ],
)
def test_every_attention_variant_trains(name, corpus):
  config = _config(
    corpus,
    **{
      'model.attention': name,
      # Two buckets of 4 fit the 32 positions (the default 64 does not).
      'model.attention_options.reformer.bucket_size': 4,
    },
  )
  config = config.copy_and_resolve_references()
  datasets = data_build.create(config.data, batch_size=4, seed=0)
  config.model.vocab_size = datasets.vocab_size
  model = model_lib.create_model(config.model, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(
    model, optim.make_optimizer(config)[0], wrt=nnx.Param
  )
  graphdef, state = nnx.split(steps.TrainState(model, optimizer))
  before = nnx.to_pure_dict(nnx.filter_state(state, nnx.Param))
  before = jax.tree.map(np.asarray, before)
  batches = iter(datasets.train_loader())
  key = jax.random.key(0)
  losses = []
  for _ in range(3):  # Step 1 has learning rate 0 (warmup from 0).
    state, step_metrics = steps.train_step(graphdef, state, next(batches), key)
    losses.append(float(step_metrics['loss']))
  assert all(math.isfinite(loss) for loss in losses), losses
  after = nnx.to_pure_dict(nnx.filter_state(state, nnx.Param))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after)
  assert all(jax.tree.leaves(changed))


def test_schedules():
  base = _config('unused', learning_rate=1.0, warmup_steps=10)
  for name, end in (('cosine', 0.1), ('linear', 0.1), ('constant', 1.0)):
    config = _config(
      'unused',
      schedule=name,
      learning_rate=1.0,
      warmup_steps=10,
      num_train_steps=110,
      end_lr_fraction=0.1,
    )
    _, lr = optim.make_optimizer(config)
    assert float(lr(0)) == 0.0
    assert float(lr(5)) == pytest.approx(0.5)
    assert float(lr(10)) == pytest.approx(1.0)
    assert float(lr(110)) == pytest.approx(end)
  base.schedule = 'rsqrt'
  _, lr = optim.make_optimizer(base)
  assert float(lr(10)) == pytest.approx(1.0)
  assert float(lr(40)) == pytest.approx(0.5)  # sqrt(10 / 40).


# ---------------------------------------------------------------------------
# What went wrong for a new user (issue 14), each fixed.


def test_resume_ignores_settings_that_cannot_change_the_run(
  reference, corpus, tmp_path
):
  """An unused variant's option and data-loader tuning may change."""
  workdir = str(tmp_path / 'copy')
  shutil.copytree(reference[0], workdir)
  config = _config(
    corpus,
    **{
      'model.attention_options.sparse.block_size': 32,
      'data.read_threads': 2,
      'data.worker_buffer_size': 3,
    },
  )
  result = train.train_and_evaluate(config, workdir)
  assert result['step'] == STEPS
  # The option of the variant the run uses still counts.
  config = _config(corpus, **{'model.attention_options.favor.num_features': 12})
  with pytest.raises(ValueError, match='attention_options.favor.num_features'):
    train.train_and_evaluate(config, workdir)


def test_bad_options_of_unused_variants_are_reported(corpus, tmp_path):
  workdir = tmp_path / 'run'
  config = _config(corpus, **{'model.attention_options.sparse.block_size': -7})
  with pytest.raises(ValueError, match=r'sparse: block_size .*-7'):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


def test_every_problem_of_a_config_is_reported_at_once(corpus, tmp_path):
  workdir = tmp_path / 'run'
  config = _config(
    corpus,
    learning_rate=-1.0,
    end_lr_fraction=2.0,
    b1=1.5,
    eps=0.0,
    sample_temperature=-0.5,
    **{'model.num_layers': 0},
  )
  with pytest.raises(ValueError) as error:
    train.train_and_evaluate(config, str(workdir))
  message = str(error.value)
  for part in (
    'learning_rate must be in (0, inf), got -1.0',
    'end_lr_fraction must be in [0, 1], got 2.0',
    'b1 must be in [0, 1), got 1.5',
    'eps must be in (0, inf), got 0.0',
    'sample_temperature must be in [0, inf), got -0.5',
    'model.num_layers must be a positive int, got 0',
  ):
    assert part in message, part
  assert not workdir.exists()


def test_warmup_longer_than_the_run_is_said(corpus, tmp_path, capsys):
  """Not silent, and not refused: short smoke runs of long configs work."""
  config = _config(
    corpus, warmup_steps=1000, num_train_steps=2, eval_every_steps=2
  )
  result = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert result['step'] == 2
  peak = config.learning_rate
  end = peak * 1 / 1000  # Linear warmup from 0: lr(step 1) = peak / 1000.
  assert (
    f'Notice: warmup_steps=1000 exceeds num_train_steps=2: the learning '
    f'rate never reaches its peak {peak:.3g} (it ends at {end:.3g})'
  ) in capsys.readouterr().out


def test_fewer_steps_than_saved_is_refused_untouched(
  reference, corpus, tmp_path
):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(reference[0], workdir)
  before = _snapshot(workdir)
  config = _config(corpus, num_train_steps=STEPS // 2)
  with pytest.raises(ValueError, match=f'at step {STEPS}, beyond'):
    train.train_and_evaluate(config, workdir)
  assert _snapshot(workdir) == before


def test_extending_a_cosine_run_says_the_schedule_changes(
  reference, corpus, tmp_path, capsys
):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(reference[0], workdir)
  config = _config(corpus, num_train_steps=STEPS + 2, eval_every_steps=2)
  train.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  _, old = optim.make_optimizer(_config(corpus))
  _, new = optim.make_optimizer(config)
  assert (
    f'num_train_steps changed from {STEPS} to {STEPS + 2}, so the cosine '
    f'schedule is recomputed: the learning rate at step {STEPS} goes from '
    f'{float(old(STEPS)):.3g} to {float(new(STEPS)):.3g}'
  ) in out


def test_failed_init_from_leaves_nothing(corpus, tmp_path):
  """A source run whose parameters do not fit: the new workdir stays empty."""
  source = str(tmp_path / 'source')
  train.train_and_evaluate(
    _config(corpus, num_train_steps=2, **{'model.emb_dim': 16}), source
  )
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match='shapes differ'):
    train.train_and_evaluate(
      _config(corpus, num_train_steps=2, init_from=source), str(workdir)
    )
  assert not workdir.exists() or not any(workdir.iterdir())


def test_workdir_that_is_a_file_is_refused(corpus, tmp_path):
  path = tmp_path / 'file'
  path.write_text('keep me')
  with pytest.raises(ValueError, match='is a file'):
    train.train_and_evaluate(_config(corpus), str(path))
  assert path.read_text() == 'keep me'


@pytest.mark.parametrize(
  'args, message',
  [
    (
      ['--config.model.attention_options.favro.num_features=1'],
      'error: unknown config field \'favro\' Did you mean "favor"',
    ),
    (['--config=configs/nope.py'], 'error: cannot load --config: '),
    (
      ['--config=configs/lra_listops.py:favr'],
      "error: ValueError: unknown attention 'favr'",
    ),
    (['--config.warmup_steps=-1'], 'error: invalid config: warmup_steps'),
  ],
)
def test_script_errors_are_one_clear_line(args, message, tmp_path):
  script = os.path.join(REPO, 'scripts', 'train.py')
  run = subprocess.run(
    [sys.executable, script, f'--workdir={tmp_path / "run"}', *args],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=300,
  )
  assert run.returncode == 1
  assert run.stderr.strip().startswith(message), run.stderr
  assert 'Traceback' not in run.stderr
  assert not (tmp_path / 'run').exists()
