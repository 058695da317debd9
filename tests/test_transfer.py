"""Weight transfer between attention variants (performer/transfer.py).

A tiny softmax LM's state is saved as the trainer saves it (the nnx.State
of `TrainState(model, optimizer)` with `checkpoint.Checkpoints`), at two
steps with different weights and validation losses, so that loading must
pick the best step. The references are the saved arrays themselves.
"""

import json
import os

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs import common
from performer import model as model_lib
from performer import steps, train, transfer
from performer import workdir as ckpt_lib
from performer.data import lm

# Step 1 has the lower validation loss: it is the checkpoint to load.
LOSSES = {1: 2.0, 2: 3.0}


def _model_config(**overrides) -> ml_collections.ConfigDict:
  config = model_lib.default_config()
  config.update(
    vocab_size=24,
    max_len=16,
    num_layers=2,
    emb_dim=16,
    qkv_dim=16,
    num_heads=2,
    mlp_dim=32,
    attention='softmax',
  )
  config.attention_options.favor.update(num_features=8, chunk_size=8)
  config.update(overrides)
  return config


def _params(model: nnx.Module) -> dict[str, np.ndarray]:
  state = nnx.state(model, nnx.Param)
  return {
    '.'.join(map(str, path)): np.array(var.get_value())
    for path, var in nnx.to_flat_state(state)
  }


def _non_params(model: nnx.Module) -> dict[str, np.ndarray]:
  state = nnx.state(model, nnx.Not(nnx.Param))
  return {
    '.'.join(map(str, path)): np.array(var.get_value())
    for path, var in nnx.to_flat_state(state)
  }


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """(workdir, {step: params}) of a saved softmax run."""
  workdir = tmp_path_factory.mktemp('softmax_run')
  config = _model_config()
  model = model_lib.create_model(config, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
  split = lm.StreamSplit('tokens', np.arange(200, dtype=np.int32) % 24)
  data_iter = iter(
    lm.train_loader(
      split,
      tokenizer=None,
      seq_len=8,
      batch_size=2,
      seed=0,
      shard_index=0,
      shard_count=1,
      read_threads=1,
    )
  )
  ckpts = ckpt_lib.Checkpoints(
    os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR),
    keep=2,
    best_metric='loss',
    best_mode='min',
  )
  saved = {}
  for step, loss in LOSSES.items():
    # Different weights at each step, so loading the wrong step shows.
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda x: x + 0.5, params))
    saved[step] = _params(model)
    ckpts.save(
      step,
      nnx.state(steps.TrainState(model, optimizer)),
      data_iter,
      metadata={'step': step},
      metrics={'loss': loss, 'accuracy': 0.5},
    )
  ckpts.close()
  run_config = {
    'model': config.to_dict(),
    'best_metric': 'loss',
    'best_mode': 'min',
  }
  with open(os.path.join(workdir, ckpt_lib.CONFIG_FILE), 'w') as f:
    json.dump(run_config, f)
  return str(workdir), saved


def test_softmax_to_favor_keeps_every_param_and_the_projection(source):
  workdir, saved = source
  model = model_lib.create_model(
    _model_config(attention='favor'), rngs=nnx.Rngs(1)
  )
  before = _params(model)
  own = _non_params(model)
  assert own, 'FAVOR+ should hold a projection and a seed'
  report = transfer.load_pretrained(model, workdir)

  after = _params(model)
  assert sorted(after) == sorted(saved[1])
  for name, value in saved[1].items():
    # Exact: the arrays are copied, not recomputed.
    np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert not np.array_equal(before[name], value), name
  for name, value in _non_params(model).items():
    np.testing.assert_array_equal(value, own[name], err_msg=name)
  assert report['source_step'] == 1
  assert report['source_attention'] == 'softmax'
  assert report['num_params'] == len(saved[1])
  assert report['loaded_values'] == sum(v.size for v in saved[1].values())
  assert report['destination_only'] == sorted(own)
  assert any(name.endswith('attention.projection') for name in own)


def test_same_attention_reproduces_the_source_logits(source):
  workdir, saved = source
  reference = model_lib.create_model(_model_config(), rngs=nnx.Rngs(5))
  # Reference: a model whose parameters are set from the saved arrays by
  # path, with no use of `transfer`.
  state = nnx.state(reference, nnx.Param)
  for path, var in nnx.to_flat_state(state):
    var[...] = saved[1]['.'.join(map(str, path))]
  nnx.update(reference, state)

  model = model_lib.create_model(_model_config(), rngs=nnx.Rngs(7))
  transfer.load_pretrained(model, workdir)
  tokens_BL = np.arange(24, dtype=np.int32).reshape(2, 12)
  # Jitted: op-by-op dispatch of the two models would take seconds.
  forward = nnx.jit(lambda m, x: m(x))
  np.testing.assert_array_equal(
    np.asarray(forward(model, tokens_BL)),
    np.asarray(forward(reference, tokens_BL)),
  )


def test_shape_mismatch_names_the_path_and_both_shapes(source):
  workdir, _ = source
  model = model_lib.create_model(
    _model_config(attention='favor', emb_dim=32), rngs=nnx.Rngs(1)
  )
  with pytest.raises(ValueError) as error:
    transfer.load_pretrained(model, workdir)
  message = str(error.value)
  assert (
    'encoder.token_embed.embedding: source (24, 16), destination (24, 32)'
    in message
  )


def test_missing_and_extra_params_are_listed(source):
  workdir, _ = source
  fewer = model_lib.create_model(_model_config(num_layers=1), rngs=nnx.Rngs(1))
  with pytest.raises(ValueError, match=r'only in the source: \[.*blocks\.1\.'):
    transfer.load_pretrained(fewer, workdir)
  more = model_lib.create_model(_model_config(num_layers=3), rngs=nnx.Rngs(1))
  with pytest.raises(
    ValueError, match=r'missing in the source: \[.*blocks\.2\.'
  ):
    transfer.load_pretrained(more, workdir)


def test_missing_workdir_is_named(tmp_path):
  model = model_lib.create_model(_model_config(), rngs=nnx.Rngs(1))
  missing = tmp_path / 'no_such_run'
  with pytest.raises(FileNotFoundError, match=str(missing)):
    transfer.load_pretrained(model, str(missing))
  with pytest.raises(FileNotFoundError, match='holds no checkpoint'):
    transfer.load_pretrained(model, str(tmp_path))


def _trainer_config(corpus: str, attention: str, **overrides):
  """A tiny LM config for the trainer (the model of `_model_config`)."""
  config = common.base_config()
  config.data.update(name='text_files', path=corpus, seq_len=16)
  config.data.read_threads = 1
  config.model.update(
    num_layers=1, emb_dim=16, qkv_dim=16, num_heads=2, mlp_dim=32
  )
  config.model.attention = attention
  config.model.attention_options.favor.update(num_features=8, chunk_size=8)
  config.update(
    batch_size=2,
    num_train_steps=2,
    warmup_steps=1,
    log_every_steps=1,
    eval_every_steps=1,
    eval_max_batches=1,
    test_max_batches=1,
    keep_checkpoints=1,
    sample_num_tokens=0,
  )
  config.update(overrides)
  return config


def _raw_checkpoint(workdir: str, step: int) -> dict:
  """The saved model tree of a trainer checkpoint, restored whole, raw."""
  manager = ocp.CheckpointManager(
    os.path.join(workdir, ckpt_lib.CHECKPOINT_DIR),
    options=ocp.CheckpointManagerOptions(read_only=True),
  )
  try:
    restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
    )
  finally:
    manager.close()
  return restored['state']['model']


def test_trainer_run_then_init_from(tmp_path):
  """A softmax run of the trainer, loaded directly and through init_from."""
  corpus = tmp_path / 'corpus.txt'
  corpus.write_text('the quick brown fox jumps over the lazy dog\n' * 200)
  source = str(tmp_path / 'softmax')
  result = train.train_and_evaluate(
    _trainer_config(str(corpus), 'softmax', num_train_steps=1), source
  )
  config = _trainer_config(str(corpus), 'favor')
  config.model.vocab_size = 256  # The trainer takes it from the bytes.
  model = model_lib.create_model(config.model, rngs=nnx.Rngs(3))
  report = transfer.load_pretrained(model, source)
  assert report['source_step'] == result['best_step']
  raw = _raw_checkpoint(source, result['best_step'])
  for name, value in _params(model).items():
    node = raw
    for key in name.split('.'):
      node = node[key]
    np.testing.assert_array_equal(value, node['value'], err_msg=name)

  # Through the trainer: the fine-tuning run starts with a step-0
  # evaluation of the transferred model.
  target = str(tmp_path / 'favor')
  train.train_and_evaluate(
    _trainer_config(str(corpus), 'favor', init_from=source, num_train_steps=1),
    target,
  )
  with open(os.path.join(target, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  validation = [r for r in records if r['split'] == 'validation']
  assert [r['step'] for r in validation] == [0, 1]
