"""The Long Range Arena configs (configs/lra_*.py).

Each config is locked and documented, takes every attention variant and
`lite`, and has the public LRA code's settings (spot-checked against the
table written out below). Lite models, shrunk to toy size, take one
`steps.train_step` (every variant on one task, every task with softmax) on
synthetic batches in the format of performer.data.classification (the data
of three tasks needs a download).
"""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import attention, optim, steps, tasks
from performer import model as model_lib

TASKS = ('listops', 'text', 'retrieval', 'image', 'pathfinder')
VOCAB = 32  # Toy models' vocabulary.

# The public LRA code's settings (google-research/long-range-arena configs,
# as tabulated in the project's published-numbers reference). lr: the base
# of LRA's unnormalized rsqrt schedule, or the cosine peak.
PUBLISHED = {
  'listops': dict(
    seq_len=2000, batch=32, steps=5000, lr=0.05, warmup=1000,
    schedule='rsqrt', wd=0.1, emb=512, heads=8, layers=4, qkv=512, mlp=1024,
    pool='cls', classes=10,
  ),
  'text': dict(
    seq_len=1000, batch=32, steps=20_000, lr=0.05, warmup=8000,
    schedule='rsqrt', wd=0.1, emb=256, heads=4, layers=4, qkv=256, mlp=1024,
    pool='cls', classes=2,
  ),
  'retrieval': dict(
    seq_len=4000, batch=32, steps=5000, lr=0.05, warmup=8000,
    schedule='rsqrt', wd=0.1, emb=128, heads=4, layers=4, qkv=128, mlp=512,
    pool='cls', classes=2,
  ),
  'image': dict(
    seq_len=1024, batch=256, steps=35_000, lr=5e-4, warmup=175,
    schedule='cosine', wd=0.0, emb=128, heads=8, layers=1, qkv=64, mlp=128,
    pool='cls', classes=10,
  ),
  'pathfinder': dict(
    seq_len=1024, batch=512, steps=200 * (160_000 // 512), lr=1e-3,
    warmup=160_000 // 512, schedule='cosine', wd=0.0, emb=32, heads=4,
    layers=4, qkv=16, mlp=32, pool='mean', classes=2,
  ),
}  # fmt: skip


def _module(task: str):
  return importlib.import_module(f'configs.lra_{task}')


def _config(task: str, arg: str):
  return _module(task).get_config(arg)


@pytest.mark.parametrize('task', TASKS)
def test_locked_documented_and_arguments(task):
  doc = _module(task).__doc__
  assert 'python scripts/train.py' in doc and 'lite' in doc
  for name in attention.names():
    for lite in ('', ',lite'):
      config = _config(task, f'attention={name}{lite}')
      assert config.is_locked
      assert config.model.attention == name
      with pytest.raises(AttributeError):
        config.num_train_step = 5  # A typo fails on a locked config.
  assert _config(task, 'softmax').model.attention == 'softmax'  # Bare value.
  # A bare first value names the variant, also with more items after it.
  for name in attention.names():
    config = _config(task, f'{name},lite')
    assert config.model.attention == name
    assert config.to_dict() == _config(task, f'attention={name},lite').to_dict()
  with pytest.raises(ValueError, match=r"\['softmax'\].*valid keys.*'lite'"):
    _config(task, 'lite,softmax')  # Only the first item may be bare.
  with pytest.raises(ValueError, match="'fast'.*valid names"):
    _config(task, 'fast,lite')
  with pytest.raises(ValueError, match=r"\['atention'\].*valid keys"):
    _config(task, 'atention=softmax')
  with pytest.raises(ValueError, match="'fast'.*valid names"):
    _config(task, 'attention=fast')


@pytest.mark.parametrize('task', TASKS)
def test_full_settings_are_the_published_ones(task):
  want = PUBLISHED[task]
  c = _config(task, 'favor').copy_and_resolve_references()
  assert c.data.seq_len == want['seq_len']
  assert c.model.max_len == want['seq_len']
  assert c.batch_size == want['batch']
  assert c.num_train_steps == want['steps']
  assert c.warmup_steps == want['warmup']
  assert c.schedule == want['schedule']
  # LRA's rsqrt schedule peaks at base / sqrt(warmup): our learning_rate.
  lr = want['lr']
  if want['schedule'] == 'rsqrt':
    lr /= math.sqrt(want['warmup'])
  assert c.learning_rate == pytest.approx(lr, rel=1e-12)
  assert c.weight_decay == want['wd']
  m = c.model
  assert (m.emb_dim, m.num_heads, m.num_layers) == (
    want['emb'],
    want['heads'],
    want['layers'],
  )
  assert (m.qkv_dim, m.mlp_dim, m.pool) == (
    want['qkv'],
    want['mlp'],
    want['pool'],
  )
  assert m.num_classes == want['classes']
  head = 'dual_encoder' if task == 'retrieval' else 'classifier'
  assert (m.head, m.causal, m.position) == (head, False, 'learned')
  assert (c.b1, c.b2, c.eps) == (0.9, 0.98, 1e-9)
  assert (c.best_metric, c.best_mode, c.sample_num_tokens) == (
    'accuracy',
    'max',
    0,
  )


def test_variant_arguments():
  assert _config('text', 'attention=favor,length=4000').data.seq_len == 4000
  pathx = _config('pathfinder', 'attention=favor,size=128')
  assert pathx.data.seq_len == 128**2
  assert (pathx.batch_size, pathx.grad_clip_norm) == (64, 1.0)
  assert (pathx.model.num_layers, pathx.model.num_heads) == (1, 2)
  assert pathx.data.difficulty == 'hard'
  assert _config('pathfinder', 'attention=favor,lite').data.difficulty == 'easy'
  with pytest.raises(ValueError, match='size=48.*32, 64, 128'):
    _config('pathfinder', 'attention=favor,size=48')
  with pytest.raises(ValueError, match="'extreme'.*'easy'"):
    _config('pathfinder', 'attention=favor,difficulty=extreme')


def test_favor_options_are_lras():
  # The LRA Performer default: deterministic ReLU features; ListOps's own
  # config: the softmax kernel with 2 orthogonal features, redrawn.
  text = _config('text', 'favor').model.attention_options.favor
  assert (text.kernel, text.projection) == ('relu', 'none')
  listops = _config('listops', 'favor').model.attention_options.favor
  assert (listops.kernel, listops.projection, listops.num_features) == (
    'softmax',
    'orthogonal',
    2,
  )
  assert listops.redraw_interval == 1


def test_rsqrt_schedule_is_lras():
  """Our 'rsqrt' with lr = base / sqrt(warmup) is LRA's schedule."""
  config = _config('listops', 'favor')
  _, schedule = optim.make_optimizer(config)
  base, warmup = 0.05, 1000
  for step in (0, 1, 500, 999, 1000, 1001, 2500, 4999):
    # LRA: base * min(1, step / warmup) / sqrt(max(step, warmup)).
    want = base * min(1.0, step / warmup) / math.sqrt(max(step, warmup))
    # float32: optax's warmup computes peak - peak * (1 - step / warmup),
    # exact to float32 rounding of the peak, hence the absolute term.
    peak = base / math.sqrt(warmup)
    assert float(schedule(step)) == pytest.approx(
      want, rel=1e-6, abs=1e-7 * peak
    )


@pytest.mark.parametrize('task', TASKS)
def test_lite_is_smaller(task):
  full = _config(task, 'favor')
  lite = _config(task, 'attention=favor,lite')
  assert lite.data.seq_len <= full.data.seq_len
  assert lite.num_train_steps < full.num_train_steps
  assert lite.model.emb_dim <= full.model.emb_dim
  assert lite.model.num_layers <= full.model.num_layers
  assert lite.eval_max_batches > 0 and lite.test_max_batches > 0
  if task == 'listops':
    assert lite.data.max_length <= lite.data.seq_len  # The trees fit.


def _toy_batch(task: str, num_classes: int) -> dict:
  """A batch in the format of performer.data.classification."""
  rng = np.random.default_rng(0)
  b, l = 2, 24
  lengths = np.array([l, l // 2])  # One padded row.
  mask = np.arange(l)[None] < lengths[:, None]
  batch = {
    'targets': rng.integers(0, num_classes, b).astype(np.int32),
    'weights': np.ones(b, np.float32),
  }
  keys = ('1', '2') if task == 'retrieval' else ('',)
  for k in keys:
    tokens = rng.integers(1, VOCAB, (b, l)).astype(np.int32)
    batch[f'inputs{k}'] = np.where(mask, tokens, 0)
    batch[f'mask{k}'] = mask
  return {k: jnp.asarray(v) for k, v in batch.items()}


def _toy_model(task: str, name: str):
  """The task's lite model with attention `name`, shrunk to toy size."""
  config = _config(task, f'attention={name},lite')
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.update(
      num_layers=1, emb_dim=16, qkv_dim=16, num_heads=2, mlp_dim=16,
      vocab_size=VOCAB, max_len=24,
    )  # fmt: skip
    for favor in ('favor', 'favor_scan'):
      options = config.model.attention_options.get(favor)
      if options is not None and options.projection != 'none':
        options.num_features = min(options.num_features, 8)
    # Sinkhorn sorts blocks: at least two of them in 24 positions.
    config.model.attention_options.sinkhorn.block_size = 8
  model = model_lib.create_model(config.model, rngs=nnx.Rngs(0))
  return config, model


VARIANTS = attention.names()
# Every variant on one task (taken in turn) and every task with softmax:
# the variant's options and the task's head each meet the step once; the
# full product would compile 60 models to find the same faults.
STEP_CASES = sorted(
  {(TASKS[i % len(TASKS)], name) for i, name in enumerate(VARIANTS)}
  | {(task, 'softmax') for task in TASKS}
)


@pytest.mark.parametrize('task,name', STEP_CASES)
def test_one_training_step(task, name):
  config, model = _toy_model(task, name)
  with config.unlocked():
    config.warmup_steps = 0  # A first step that moves the parameters.
  tx, _ = optim.make_optimizer(config)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split(steps.TrainState(model, optimizer))
  before = jax.tree.map(np.array, nnx.state(model, nnx.Param))
  batch = _toy_batch(task, config.model.num_classes)
  options = steps.StepOptions(task=tasks.get(tasks.task_of(config.data)))
  state, metrics = steps.train_step(
    graphdef, state, batch, jax.random.key(0), options
  )
  assert math.isfinite(float(metrics['loss'])) and float(metrics['loss']) > 0
  assert math.isfinite(float(metrics['grad_norm']))
  trained = nnx.merge(graphdef, state)
  assert int(trained.optimizer.step[...]) == 1
  after = nnx.state(trained.model, nnx.Param)
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, after)
  assert all(jax.tree.leaves(changed)), 'a parameter did not move'
