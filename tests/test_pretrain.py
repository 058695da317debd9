"""Self-pretraining on a task's inputs, then the task (performer/pretrain.py).

- The masked batches against the raw examples they come from: the
  selection rate (4 binomial standard deviations over thousands of
  tokens), BERT's 80/10/10 split of the selected ones, labels (weights) at
  the selected positions only, padding never selected, the mask token one
  past the task's vocabulary; Retrieval's two documents both, in order;
  pixel tasks' level 0 a real token.
- The two-stage run end to end on tiny ListOps: the fine-tuned model
  starts from the pretrained encoder's exact weights (its first update is
  at learning rate 0, so the step-1 checkpoint holds the starting
  weights), the head and CLS vector fresh; both stages' results recorded;
  a rerun does not pretrain again.
- Bad input gets a clear error and writes nothing.
"""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from configs import common, lra_listops
from performer import model as model_lib
from performer import pretrain, train, validate
from performer import workdir as workdir_lib
from performer.data import classification, listops, masking
from tests.test_train_tasks import _examples

SEQ_LEN = 12
TASK_VOCAB = 8  # Tokens 1..7, padding 0.


def _task(pair: bool, examples: int = 64, **fields):
  splits = {
    'train': _examples(examples, 0, pair),
    'validation': _examples(10, 1, pair),
  }
  return classification.ClassificationDatasets(
    name='synthetic',
    splits=splits,
    vocab_size=TASK_VOCAB,
    num_classes=2 if pair else 3,
    seq_len=SEQ_LEN,
    batch_size=8,
    seed=0,
    pair=pair,
    read_threads=1,
    **fields,
  )


def _padded(tokens) -> np.ndarray:
  return classification.pad_tokens(
    tokens, SEQ_LEN, truncate=False, where='test'
  )[0]


def _binomial_ok(count: int, n: int, p: float) -> bool:
  return abs(count - n * p) <= 4 * np.sqrt(n * p * (1 - p))


@pytest.mark.parametrize('pair', [False, True])
def test_masked_training_batches_against_the_raw_examples(pair):
  task = _task(pair)
  rate = 0.3
  data = masking.MaskedInputDatasets.of_task(task, mask_rate=rate)
  assert (data.task, data.vocab_size) == ('mlm', TASK_VOCAB + 1)
  keys = ('inputs1', 'inputs2') if pair else ('inputs',)
  documents = {
    _padded(e[k]).tobytes() for e in task.splits['train'] for k in keys
  }
  it = iter(data.train_loader())
  real = selected = masked = replaced = 0
  for _ in range(60):
    batch = next(it)
    assert set(batch) == {'inputs', 'mask', 'targets', 'weights'}
    for row in range(batch['inputs'].shape[0]):
      targets = batch['targets'][row]
      # Each row is one of the task's documents, unchanged in 'targets'.
      assert targets.tobytes() in documents
      mask = batch['mask'][row]
      np.testing.assert_array_equal(mask, targets != 0)
      chosen = batch['weights'][row] == 1
      assert set(np.unique(batch['weights'][row])) <= {0.0, 1.0}
      assert not np.any(chosen & ~mask)  # Never a padding position.
      inputs = batch['inputs'][row]
      np.testing.assert_array_equal(inputs[~chosen], targets[~chosen])
      assert np.all((inputs[chosen] == TASK_VOCAB) | (inputs[chosen] >= 1))
      real += int(mask.sum())
      selected += int(chosen.sum())
      masked += int(np.sum(inputs[chosen] == TASK_VOCAB))
      replaced += int(
        np.sum((inputs[chosen] != TASK_VOCAB) & (inputs != targets)[chosen])
      )
  assert real > 3000
  assert _binomial_ok(selected, real, rate), (selected, real)
  assert _binomial_ok(masked, selected, masking.MASK_PROB)
  # A random token differs from the original with probability 6/7.
  assert _binomial_ok(replaced, selected, masking.RANDOM_PROB * 6 / 7)


def test_retrieval_evaluation_reads_both_documents_in_order_with_fixed_masks():
  task = _task(pair=True)
  data = masking.MaskedInputDatasets.of_task(task, mask_rate=0.5)
  first = list(data.eval_batches('validation'))
  rows = np.concatenate([b['targets'] for b in first])
  weights = np.concatenate([b['weights'] for b in first])
  expected = [
    _padded(e[k])
    for e in task.splits['validation']
    for k in ('inputs1', 'inputs2')
  ]
  assert len(expected) == 20
  np.testing.assert_array_equal(rows[:20], np.stack(expected))
  assert not np.any(weights[20:])  # Padding rows of the last batch.
  again = list(data.eval_batches('validation'))
  for a, b in zip(first, again, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_pixel_tasks_mask_every_level_including_zero():
  rng = np.random.default_rng(0)
  images = [
    {'inputs': rng.integers(0, 256, SEQ_LEN), 'targets': 0} for _ in range(64)
  ]
  task = classification.ClassificationDatasets(
    name='pixels',
    splits={'train': images},
    vocab_size=256,
    num_classes=2,
    seq_len=SEQ_LEN,
    batch_size=8,
    seed=0,
    read_threads=1,
    first_token=0,
  )
  data = masking.MaskedInputDatasets.of_task(task, mask_rate=0.5)
  assert data.vocab_size == 257
  it = iter(data.train_loader())
  zeros_selected = 0
  for _ in range(20):
    batch = next(it)
    assert batch['mask'].all()
    chosen = batch['weights'] == 1
    zeros_selected += int(np.sum(chosen & (batch['targets'] == 0)))
    assert np.all(batch['inputs'] <= 256)
  assert zeros_selected > 0


# ---------------------------------------------------------------------------
# The two stages through the trainer, on tiny ListOps.


def _listops_config(tmp_path, **overrides):
  config = lra_listops.get_config('attention=softmax,lite')
  config.unlock()
  config.data.update(
    data_dir=str(tmp_path / 'data'),
    seq_len=40,
    min_length=10,
    max_length=40,
    num_train=64,
    num_validation=16,
    num_test=16,
  )
  config.model.update(emb_dim=16, qkv_dim=16, num_heads=2, mlp_dim=32)
  config.model.num_layers = 1
  config.update(
    batch_size=8,
    num_train_steps=1,
    warmup_steps=1,
    eval_every_steps=1,
    log_every_steps=1,
    eval_max_batches=1,
    test_max_batches=1,
    pretrain_steps=3,
  )
  config.update(overrides)
  return config


def _params(module) -> dict[str, np.ndarray]:
  return {
    '.'.join(map(str, path)): np.asarray(var[...])
    for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param))
  }


def test_two_stages_end_to_end(tmp_path):
  config = _listops_config(tmp_path)
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(config, workdir)

  stage_dir = pretrain.stage_workdir(workdir)
  pretrained = workdir_lib.read_results(stage_dir)
  assert pretrained['step'] == 3
  saved = workdir_lib.read_config(stage_dir)
  assert saved['data']['objective'] == 'masked'
  assert saved['model']['head'] == 'lm'
  assert saved['model']['vocab_size'] == listops.VOCAB_SIZE + 1
  assert result['pretrain/step'] == 3
  assert result['pretrain/validation/loss'] == pretrained['validation/loss']
  on_disk = workdir_lib.read_results(workdir)
  assert on_disk['pretrain/best_step'] == pretrained['best_step']
  assert 0 <= on_disk['test/accuracy'] <= 1
  fine = workdir_lib.read_config(workdir)
  assert fine['init_from'] == stage_dir
  assert fine['model']['vocab_size'] == saved['model']['vocab_size']

  # The first fine-tuning update is at learning rate 0 (linear warmup):
  # the step-1 checkpoint holds the weights the fine-tuning started from.
  source, _, best = workdir_lib.restore_model(stage_dir)
  assert best == pretrained['best_step']
  started, fine_config, _ = workdir_lib.restore_model(workdir, step=1)
  source_params, started_params = _params(source), _params(started)
  fresh = model_lib.create_model(
    fine_config.model, rngs=nnx.Rngs(_init_key(fine_config.seed))
  )
  fresh_params = _params(fresh)
  encoder = [k for k in started_params if k.startswith('encoder.')]
  assert len(encoder) > 10
  # Pretraining moved the weights, so "from the source" is not "fresh".
  assert any(
    not np.array_equal(source_params[k], fresh_params[k])
    for k in encoder
    if k in source_params
  )
  for name in encoder:
    expected = fresh_params if name == 'encoder.cls_E' else source_params
    np.testing.assert_array_equal(started_params[name], expected[name], name)
  heads = [k for k in started_params if not k.startswith('encoder.')]
  assert heads and all(k.startswith('head.') for k in heads)
  for name in heads:
    np.testing.assert_array_equal(started_params[name], fresh_params[name])

  # A rerun finds both stages finished: it does not pretrain again.
  before = os.path.getmtime(workdir_lib.results_path(stage_dir))
  again = train.train_and_evaluate(config, workdir)
  assert os.path.getmtime(workdir_lib.results_path(stage_dir)) == before
  assert again['pretrain/step'] == 3


def _init_key(seed: int):
  key, _ = jax.random.split(jax.random.key(seed))  # As the trainer does.
  return key


# ---------------------------------------------------------------------------
# Bad input.


def _nothing_written(path) -> bool:
  return not os.path.exists(path) or not os.listdir(path)


@pytest.mark.parametrize(
  ('overrides', 'words'),
  [
    (
      {'pretrain_steps': -1},
      'pretrain_steps must be a non-negative int, got -1',
    ),
    (
      {'init_from': '/somewhere'},
      "pretrain_steps=3 and init_from='/somewhere' are both set",
    ),
  ],
)
def test_bad_pretraining_settings_write_nothing(tmp_path, overrides, words):
  config = _listops_config(tmp_path, **overrides)
  with pytest.raises(ValueError, match=words):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert _nothing_written(tmp_path / 'run')


def test_a_language_model_corpus_cannot_be_pretrained_on_its_inputs(tmp_path):
  config = common.base_config()
  config.pretrain_steps = 5
  with pytest.raises(ValueError, match='applies to the classification tasks'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  config.pretrain_steps = 0
  config.data.objective = 'masked'
  config.model.causal = False
  with pytest.raises(ValueError, match="applies to .* not 'shakespeare'"):
    validate.check(config)
  assert _nothing_written(tmp_path / 'run')


def test_a_plain_run_in_the_workdir_is_not_taken_for_a_pretrained_one(
  tmp_path,
):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(_listops_config(tmp_path, pretrain_steps=0), workdir)
  listing = sorted(os.listdir(workdir))
  with pytest.raises(ValueError, match='holds a run that was not pretrained'):
    train.train_and_evaluate(_listops_config(tmp_path), workdir)
  assert sorted(os.listdir(workdir)) == listing


def test_init_from_a_different_encoder_shape_is_named_and_writes_nothing(
  tmp_path,
):
  source = str(tmp_path / 'source')
  train.train_and_evaluate(_listops_config(tmp_path, pretrain_steps=0), source)
  config = _listops_config(tmp_path, pretrain_steps=0, init_from=source)
  config.model.mlp_dim = 48
  target = tmp_path / 'target'
  with pytest.raises(
    ValueError, match=r'shapes differ at .*mlp_in.*\(16, 32\)'
  ):
    train.train_and_evaluate(config, str(target))
  assert _nothing_written(target)


def test_pretraining_config_of_a_run():
  config = lra_listops.get_config('attention=favor,lite,pretrain_steps=500')
  validate.check(config)
  first = pretrain.pretraining_config(config)
  validate.check(first)
  assert (first.num_train_steps, first.warmup_steps) == (500, 50)
  assert (first.model.head, first.model.causal) == ('lm', False)
  assert (first.data.objective, first.data.mask_rate) == ('masked', 0.1)
  assert (first.best_metric, first.pretrain_steps) == ('loss', 0)
  # The encoder is the run's.
  for key in ('emb_dim', 'num_layers', 'num_heads', 'qkv_dim', 'mlp_dim'):
    assert first.model[key] == config.model[key]
  assert json.dumps(first.model.attention_options.to_dict()) == json.dumps(
    config.model.attention_options.to_dict()
  )
