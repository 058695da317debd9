"""Sampling, `generate`, checkpoint loading and scripts/generate.py.

Top-k / top-p supports are compared with a plain numpy reference; the
generated tokens with the tokens that a full forward pass over the growing
sequence picks (greedy), so the cached path is checked end to end.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import generate as gen
from performer import train
from performer import workdir as workdir_lib
from tests import test_model, test_train

V = 50


def _support_reference(logits, top_k, top_p):
  """Numpy: the tokens top-k then top-p keep, as a bool [V] per row."""
  logits = np.asarray(logits, np.float64)
  keep = np.ones(logits.shape, bool)
  for row, x in enumerate(logits):
    order = np.argsort(-x)
    if top_k:
      keep[row, order[top_k:]] = False
    p = np.where(keep[row], np.exp(x - x.max()), 0.0)
    p /= p.sum()
    before = 0.0
    for idx in order:
      if not keep[row, idx]:
        continue
      if before >= top_p:
        keep[row, idx] = False
      before += p[idx]
  return keep


def _logits(seed=0, rows=4):
  return 3.0 * jax.random.normal(jax.random.key(seed), (rows, V))


@pytest.mark.parametrize(
  'top_k,top_p', [(0, 1.0), (5, 1.0), (0, 0.5), (10, 0.8), (1, 0.9), (0, 1e-3)]
)
def test_filter_logits_matches_reference_support(top_k, top_p):
  logits = _logits()
  kept = np.isfinite(gen.filter_logits(logits, top_k=top_k, top_p=top_p))
  np.testing.assert_array_equal(kept, _support_reference(logits, top_k, top_p))


def test_samples_stay_in_the_support():
  logits = jnp.tile(_logits(rows=1), (2000, 1))
  support = _support_reference(logits[:1], 8, 0.7)[0]
  tokens = gen.sample(
    logits, jax.random.key(0), gen.Sampling(temperature=1.0, top_k=8, top_p=0.7)
  )
  drawn = np.unique(np.asarray(tokens))
  assert set(drawn) <= set(np.nonzero(support)[0])
  assert len(drawn) > 1  # The check above could not fail otherwise.


def test_zero_temperature_is_greedy():
  logits = _logits()
  tokens = gen.sample(logits, jax.random.key(0), gen.Sampling(temperature=0))
  np.testing.assert_array_equal(tokens, np.argmax(logits, axis=-1))


@pytest.mark.parametrize(
  'kwargs,match',
  [
    ({'temperature': -0.5}, r'temperature.*-0\.5'),
    ({'temperature': float('nan')}, 'temperature.*nan'),
    ({'top_k': -1}, 'top_k.*-1'),
    ({'top_p': 0.0}, r'top_p.*0\.0'),
    ({'top_p': 1.5}, r'top_p.*1\.5'),
  ],
)
def test_bad_sampling_settings_are_named(kwargs, match):
  settings = {'temperature': 1.0, 'top_k': 0, 'top_p': 1.0, **kwargs}
  with pytest.raises(ValueError, match=match):
    gen.check_sampling(**settings)


# generate() on tiny models.
PROMPT = np.array([3, 1, 4, 1, 5], np.int32)


def _model(name='favor', **overrides):
  return test_model.build(test_model.small_config(name, **overrides))


def _greedy_by_forward(model, prompt, num_tokens):
  """Greedy tokens from full forward passes over the growing sequence."""
  # One fixed-length buffer (one compilation): the model is causal, so the
  # zeros after the tokens cannot change the logits read before them.
  tokens = np.zeros((1, len(prompt) + num_tokens), np.int32)
  tokens[0, : len(prompt)] = prompt
  forward = nnx.jit(lambda m, t: m(t))
  for i in range(len(prompt), tokens.shape[1]):
    logits = forward(model, jnp.asarray(tokens[:, :-1]))
    tokens[0, i] = int(jnp.argmax(logits[0, i - 1]))
  return tokens[0, len(prompt) :]


@pytest.mark.parametrize('name', ['favor', 'softmax'])
def test_greedy_generation_matches_forward_passes(name):
  model = _model(name)
  got = gen.generate(model, PROMPT, num_tokens=6, temperature=0)
  np.testing.assert_array_equal(got, _greedy_by_forward(model, PROMPT, 6))


def test_sampling_with_a_seed_is_deterministic():
  model = _model()
  kwargs = {'num_tokens': 12, 'temperature': 1.0, 'top_k': 10, 'top_p': 0.9}
  a = gen.generate(model, PROMPT, seed=3, **kwargs)
  b = gen.generate(model, PROMPT, seed=3, **kwargs)
  c = gen.generate(model, PROMPT, seed=4, **kwargs)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (12,) and a.dtype == np.int32
  assert np.any(a != c)


def _sample_one_step_at_a_time(model, prompt, num_tokens, seed, sampling):
  """`generate` with one jitted decode call per token (no lax.scan)."""
  graphdef, state = nnx.split(model)
  key = jax.random.key(seed)
  prompt_1L = jnp.asarray(prompt[None])
  token, cache = gen.prefill_and_sample(
    graphdef, state, prompt_1L, len(prompt) + num_tokens, key, 0, sampling
  )
  tokens = [int(token[0])]
  for i in range(1, num_tokens):
    token, cache = gen.decode_and_sample(
      graphdef, state, token, cache, key, i, sampling
    )
    tokens.append(int(token[0]))
  return np.array(tokens, np.int32)


@pytest.mark.parametrize('name', ['favor', 'softmax'])
def test_steps_per_call_do_not_change_the_samples(name, monkeypatch):
  # 11 tokens with at most 4 steps per call: calls of 4, 4 and 2 steps.
  monkeypatch.setattr(gen, 'MAX_STEPS_PER_CALL', 4)
  model = _model(name)
  sampling = gen.check_sampling(1.0, top_k=10, top_p=0.9)
  got = gen.generate(
    model, PROMPT, num_tokens=11, seed=5, temperature=1.0, top_k=10, top_p=0.9
  )
  expected = _sample_one_step_at_a_time(model, PROMPT, 11, 5, sampling)
  np.testing.assert_array_equal(got, expected)


def test_steps_per_call_are_powers_of_two():
  assert [gen.steps_per_call(n) for n in (1, 2, 3, 7, 8, 63, 64, 65, 1000)] == [
    1,
    2,
    2,
    4,
    8,
    32,
    64,
    64,
    64,
  ]


def test_batched_prompts():
  model = _model()
  prompts = np.stack([PROMPT, PROMPT[::-1]])
  # 6 tokens as in the greedy test: the single-prompt steps are compiled.
  out = gen.generate(model, prompts, num_tokens=6, temperature=0)
  assert out.shape == (2, 6)
  np.testing.assert_array_equal(
    out[1], gen.generate(model, PROMPT[::-1], num_tokens=6, temperature=0)
  )


def test_learned_positions_continue_past_max_len():
  # max_len 16 (test_model: 4 * 4): windows restart from the last 8 tokens.
  model = _model(max_len=16)
  out = gen.generate(model, PROMPT, num_tokens=30, temperature=0)
  assert out.shape == (30,)
  # Up to the first restart the tokens are those of plain decoding.
  np.testing.assert_array_equal(out[:12], _greedy_by_forward(model, PROMPT, 12))


def test_bad_generate_inputs():
  model = _model(max_len=16)
  with pytest.raises(ValueError, match=r'17 tokens.*max_len=16'):
    gen.generate(model, np.zeros(17, np.int32), num_tokens=1)
  with pytest.raises(ValueError, match='length >= 1'):
    gen.generate(model, np.zeros(0, np.int32), num_tokens=1)
  with pytest.raises(ValueError, match=r'\[0, 32\)'):
    gen.generate(model, np.array([40]), num_tokens=1)
  with pytest.raises(ValueError, match='temperature.*-1'):
    gen.generate(model, PROMPT, num_tokens=1, temperature=-1)
  with pytest.raises(ValueError, match='num_tokens'):
    gen.generate(model, PROMPT, num_tokens=-2)
  with pytest.raises(ValueError, match='causal=False'):
    gen.generate(_model(causal=False), PROMPT, num_tokens=1)


# A trained workdir: the trainer's sample, restore_model and the script.


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  corpus = tmp_path_factory.mktemp('corpus') / 'corpus.txt'
  corpus.write_text('to be or not to be, that is the question\n' * 300)
  config = test_train._config(
    str(corpus),
    num_train_steps=2,
    eval_every_steps=2,
    eval_max_batches=1,
    test_max_batches=1,
    sample_num_tokens=8,
    sample_prompt='to be',
  )
  path = str(tmp_path_factory.mktemp('run'))
  result = train.train_and_evaluate(config, path)
  return path, result


def test_trainer_sample_uses_the_prompt(workdir):
  _, result = workdir
  assert result['sample'].startswith('to be')
  assert len(result['sample'].encode()) >= len('to be') + 1


def test_script_generates_deterministic_text(workdir):
  path, _ = workdir
  kwargs = {'num_tokens': 10, 'temperature': 0.8, 'top_k': 20, 'seed': 1}
  text = gen.generate_text(path, 'to be', **kwargs)
  assert text.startswith('to be')
  assert text == gen.generate_text(path, 'to be', **kwargs)
  model, config, step = workdir_lib.restore_model(path)
  assert step == 2 and config.model.attention == 'favor'
  assert model.max_decode_len == config.model.max_len


def test_script_errors(workdir, tmp_path):
  path, _ = workdir
  with pytest.raises(FileNotFoundError, match='does not exist'):
    gen.generate_text(str(tmp_path / 'nope'), 'a', num_tokens=1, temperature=1)
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    gen.generate_text(str(tmp_path), 'a', num_tokens=1, temperature=1)
  with pytest.raises(FileNotFoundError, match='no checkpoint 7'):
    gen.generate_text(path, 'a', num_tokens=1, temperature=1, step=7)
  with pytest.raises(ValueError, match=r'40 tokens.*max_len=32'):
    gen.generate_text(path, 'x' * 40, num_tokens=1, temperature=1)
  with pytest.raises(ValueError, match='temperature'):
    gen.generate_text(path, 'a', num_tokens=1, temperature=-1.0)


def test_a_classifier_workdir_is_not_a_language_model(tmp_path):
  from configs import lra_listops

  config = lra_listops.get_config('attention=softmax,lite')
  (tmp_path / 'config.json').write_text(json.dumps(config.to_dict()))
  with pytest.raises(ValueError, match='not a language model') as error:
    gen.generate_text(str(tmp_path), 'a', num_tokens=1, temperature=1)
  assert "'classifier' model" in str(error.value)
  assert "'classification' task of 'listops'" in str(error.value)
