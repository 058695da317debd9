"""The trainer on the classification and retrieval tasks.

The data is a small synthetic task fed through `ClassificationDatasets`
(the same loader the Long Range Arena tasks use), patched in for
`performer.data.build.create`.
"""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import common
from performer import model as model_lib
from performer import tasks, train
from performer import workdir as workdir_lib
from performer.data import build as data_build
from performer.data import classification

SEQ_LEN = 12
NUM_CLASSES = 3


def _examples(n: int, seed: int, pair: bool) -> list[dict]:
  """Token ids 1..7 of random lengths; label = first token mod 3."""
  rng = np.random.default_rng(seed)

  def sequence():
    return rng.integers(1, 8, size=rng.integers(2, SEQ_LEN + 1))

  examples = []
  for _ in range(n):
    if pair:
      a, b = sequence(), sequence()
      examples.append(
        {'inputs1': a, 'inputs2': b, 'targets': int(a[0] == b[0])}
      )
    else:
      a = sequence()
      examples.append({'inputs': a, 'targets': int(a[0] % NUM_CLASSES)})
  return examples


def _datasets(pair: bool, batch_size: int, seed: int):
  splits = {
    'train': _examples(64, 0, pair),
    'validation': _examples(10, 1, pair),
    'test': _examples(11, 2, pair),  # 11: the last batch has padding rows.
  }
  return classification.ClassificationDatasets(
    name='synthetic',
    splits=splits,
    vocab_size=8,
    num_classes=2 if pair else NUM_CLASSES,
    seq_len=SEQ_LEN,
    batch_size=batch_size,
    seed=seed,
    pair=pair,
    read_threads=1,
  )


@pytest.fixture
def synthetic(monkeypatch):
  """Patches data_build.create to give the synthetic task ('pair' picks)."""

  def create(data_config, *, batch_size, seed, **unused):
    return _datasets(data_config['path'] == 'pair', batch_size, seed)

  monkeypatch.setattr(data_build, 'create', create)


def _config(head: str, **overrides) -> ml_collections.ConfigDict:
  config = common.base_config()
  # Names of a pair task and a single-sequence task that read a path (the
  # config's task follows the name); data_build.create is patched.
  pair = head == 'dual_encoder'
  config.data.name = 'aan' if pair else 'pathfinder'
  config.data.path = 'pair' if pair else 'single'
  config.data.seq_len = SEQ_LEN
  config.model.update(
    head=head,
    causal=False,
    num_classes=0,
    num_layers=1,
    emb_dim=16,
    qkv_dim=16,
    num_heads=2,
    mlp_dim=32,
    dropout_rate=0.0,
    pool='mean',
    attention='favor',
  )
  config.model.attention_options.favor.update(num_features=8, chunk_size=4)
  config.update(
    batch_size=4,
    num_train_steps=6,
    learning_rate=1e-2,
    warmup_steps=1,
    log_every_steps=3,
    eval_every_steps=3,
    keep_checkpoints=1,
    best_metric='accuracy',
    best_mode='max',
    sample_num_tokens=0,
  )
  config.update(overrides)
  config.lock()
  return config


def test_classifier_test_accuracy_is_the_best_checkpoints(synthetic, tmp_path):
  workdir = str(tmp_path)
  result = train.train_and_evaluate(_config('classifier'), workdir)
  with open(os.path.join(workdir, 'results.json')) as f:
    saved = json.load(f)
  assert saved['test/accuracy'] == result['test/accuracy']
  assert set(saved) >= {
    'train/steps_per_sec',
    'validation/accuracy',
    'test/loss',
    'peak_memory_bytes',
    'wall_time_sec',
  }
  assert 'test/perplexity' not in saved  # Classifiers report no perplexity.
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['model']['num_classes'] == NUM_CLASSES  # From data.

  # Independently: the best checkpoint's predictions on every test example,
  # one example at a time (no batch padding involved).
  model, _, _ = workdir_lib.restore_model(workdir, result['best_step'])
  correct = 0
  examples = _examples(11, 2, pair=False)
  for example in examples:
    tokens = np.zeros((1, SEQ_LEN), np.int32)
    tokens[0, : len(example['inputs'])] = example['inputs']
    logits = model(tokens, tokens > 0)
    correct += int(np.argmax(np.asarray(logits)[0]) == example['targets'])
  assert result['test/accuracy'] == pytest.approx(correct / len(examples))


def test_dual_encoder_trains_on_pairs(synthetic, tmp_path):
  result = train.train_and_evaluate(
    _config('dual_encoder', num_train_steps=3), str(tmp_path)
  )
  assert np.isfinite(result['test/loss'])
  assert 0.0 <= result['test/accuracy'] <= 1.0
  # Two sequences per example.
  assert result['train/tokens_per_sec'] == pytest.approx(
    result['train/steps_per_sec'] * 4 * SEQ_LEN * 2
  )


def test_head_must_match_the_task(synthetic, tmp_path):
  config = _config('lm', **{})
  with pytest.raises(ValueError, match="model.head='classifier'"):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_init_from_missing_directory(synthetic, tmp_path):
  missing = str(tmp_path / 'nowhere')
  config = _config('classifier', init_from=missing)
  with pytest.raises(FileNotFoundError, match='nowhere'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_forward_calls_the_model_with_the_tasks_inputs():
  config = model_lib.default_config()
  config.update(
    head='classifier',
    causal=False,
    num_layers=1,
    emb_dim=8,
    qkv_dim=8,
    num_heads=1,
    mlp_dim=8,
    num_classes=2,
    attention='softmax',
  )
  model = model_lib.create_model(config, rngs=nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(0), (2, 5), 1, 8)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  batch = {'inputs': tokens, 'mask': mask}
  task = tasks.TASKS['classification']
  logits = tasks.forward(model, task, batch, train=False)
  np.testing.assert_array_equal(logits, model(tokens, mask))
