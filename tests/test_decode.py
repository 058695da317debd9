"""Prefill + token-by-token decoding against the parallel pass.

For every attention variant that has a causal form (the small options of
test_attention_interface.CAUSAL_CASES) and for the language model with each
position encoding: the outputs of a prefill of the prompt followed by one
`decode` per later position equal the parallel pass over the whole sequence
(fp32, 1e-5). Prompt lengths end mid-chunk (chunk 8), mid-window (window 8)
and mid-block (block 8), and are longer than the local ring buffers.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import attention
from tests import test_model
from tests.test_attention_interface import CAUSAL_CASES as CASES
from tests.test_attention_interface import CAUSAL_IDS as IDS

B, L, H, D = 2, 21, 2, 8
PROMPTS = (1, 13)  # 13 = 8 + 5: mid-chunk, mid-window, mid-block.
# Prefill and parallel pass are the same computation; decode sums the same
# terms in another order (fp32 rounding only).
RTOL, ATOL = 1e-5, 1e-5


def _create(name, opts, causal=True):
  return attention.create(
    name, head_dim=D, causal=causal, rngs=nnx.Rngs(0), **opts
  )


def _inputs(seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [jax.random.normal(k, (B, L, H, D), jnp.float32) for k in keys]


# Module level, so that each compiled step is reused across prompts.
_forward = nnx.jit(lambda m, q, k, v, mask: m(q, k, v, mask=mask))
_prefill = nnx.jit(lambda m, q, k, v, c, mask: m.prefill(q, k, v, c, mask=mask))
_decode = nnx.jit(lambda m, q, k, v, c: m.decode(q, k, v, c))


def _decode_all(attn, q, k, v, prompt, mask=None):
  """Prefill of `prompt` positions, then one decode per position: [B, L]."""
  cache = attn.init_cache(B, H, L, q.dtype)
  p = slice(0, prompt)
  pmask = None if mask is None else mask[:, p]
  out, cache = _prefill(attn, q[:, p], k[:, p], v[:, p], cache, pmask)
  outs = [out]
  for i in range(prompt, L):
    s = slice(i, i + 1)
    out, cache = _decode(attn, q[:, s], k[:, s], v[:, s], cache)
    outs.append(out)
  assert int(cache['index']) == L
  return jnp.concatenate(outs, axis=1)


@pytest.mark.parametrize('name,opts', CASES, ids=IDS)
def test_prefill_and_decode_equal_parallel_pass(name, opts):
  attn = _create(name, opts)
  q, k, v = _inputs()
  # Padding inside the prompt must stay invisible to the decoded positions.
  mask = jnp.ones((B, L), bool).at[0, 0].set(False)
  expected = _forward(attn, q, k, v, mask)
  for prompt in PROMPTS:
    got = _decode_all(attn, q, k, v, prompt, mask)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('name', ['favor', 'softmax'])
def test_bfloat16_decoding_runs(name):
  opts = dict(CASES)[name]
  attn = _create(name, opts)
  q, k, v = (x.astype(jnp.bfloat16) for x in _inputs())
  got = _decode_all(attn, q, k, v, 5)
  assert got.dtype == jnp.bfloat16
  # bf16 inputs: about 3 significant digits.
  np.testing.assert_allclose(
    np.asarray(got, np.float32),
    np.asarray(_forward(attn, q, k, v, None), np.float32),
    rtol=0.05,
    atol=0.05,
  )


def test_favor_decode_state_does_not_grow():
  attn = _create('favor', dict(CASES)['favor'])
  small = attn.init_cache(B, H, 16, jnp.float32)
  large = attn.init_cache(B, H, 1 << 20, jnp.float32)
  assert jax.tree.map(jnp.shape, small) == jax.tree.map(jnp.shape, large)
  m = small['norm'].shape[-1]
  assert small['state'].shape == (B, H, m, D)


@pytest.mark.parametrize('pattern,slots', [('sliding', 8), ('block', 16)])
def test_local_cache_is_a_window(pattern, slots):
  attn = _create('local', {'pattern': pattern, 'window': 8})
  cache = attn.init_cache(B, H, 1 << 20, jnp.float32)
  assert cache['k'].shape == (B, slots, H, D)


@pytest.mark.parametrize('name,opts', CASES, ids=IDS)
def test_bidirectional_modules_refuse_to_decode(name, opts):
  attn = _create(name, opts, causal=False)
  q, k, v = (x[:, :1] for x in _inputs())
  with pytest.raises(ValueError, match='causal=False'):
    attn.init_cache(B, H, L, jnp.float32)
  with pytest.raises(ValueError, match='causal=False'):
    attn.prefill(q, k, v, {})
  with pytest.raises(ValueError, match='causal=False'):
    attn.decode(q, k, v, {})


def test_decode_takes_one_position():
  attn = _create('softmax', {})
  q, k, v = _inputs()
  cache = attn.init_cache(B, H, L, jnp.float32)
  with pytest.raises(ValueError, match='one position'):
    attn.decode(q[:, :2], k[:, :2], v[:, :2], cache)


def test_prompt_longer_than_kv_cache_is_an_error():
  attn = _create('softmax', {})
  q, k, v = _inputs()
  cache = attn.init_cache(B, H, L - 1, jnp.float32)
  with pytest.raises(ValueError, match=rf'{L} positions.*max_len={L - 1}'):
    attn.prefill(q, k, v, cache)


# Model level. Rotary positions enter every variant through q and k, so
# each variant is checked with them; learned and sinusoidal positions are
# added to the embeddings before any attention, so FAVOR+ (constant state)
# and softmax (KV cache) cover them.
MODEL_CASES = [(name, opts, 'rotary') for name, opts in CASES] + [
  (name, dict(CASES)[name], position)
  for name in ('favor', 'softmax')
  for position in ('learned', 'sinusoidal')
]
MODEL_IDS = [f'{i}-rotary' for i in IDS] + [
  f'{name}-{position}' for name, _, position in MODEL_CASES[len(CASES) :]
]
MODEL_L = 19
MODEL_PROMPT = 11  # Mid-chunk and mid-window for size 8.
_model_prefill = nnx.jit(lambda m, t, c: m.prefill(t, c))
_model_decode = nnx.jit(lambda m, t, c: m.decode_step(t, c))


def _lm(name, opts, position):
  config = test_model.small_config(name, position=position)
  config.attention_options[name].update(opts)
  return test_model.build(config)


@pytest.mark.parametrize('name,opts,position', MODEL_CASES, ids=MODEL_IDS)
def test_model_prefill_and_decode_equal_forward(name, opts, position):
  model = _lm(name, opts, position)
  tokens = jax.random.randint(
    jax.random.key(1), (B, MODEL_L), 0, test_model.VOCAB
  )
  expected = nnx.jit(lambda m, t: m(t))(model, tokens)

  cache = model.init_cache(B, MODEL_L)
  logits, cache = _model_prefill(model, tokens[:, :MODEL_PROMPT], cache)
  outs = [logits]
  for i in range(MODEL_PROMPT, MODEL_L):
    logits, cache = _model_decode(model, tokens[:, i : i + 1], cache)
    outs.append(logits)
  assert int(cache['index']) == MODEL_L
  got = jnp.concatenate(outs, axis=1)
  np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_model_decoding_errors():
  model = _lm('softmax', {}, 'learned')  # max_len = 64.
  with pytest.raises(ValueError, match=r'max_len 65 exceeds max_len=64'):
    model.init_cache(B, 65)
  cache = model.init_cache(B, 64)
  tokens = jnp.zeros((B, 65), jnp.int32)
  with pytest.raises(ValueError, match=r'prompt length 65 exceeds'):
    model.prefill(tokens, cache)
  with pytest.raises(ValueError, match=r'one token per sequence'):
    model.decode_step(tokens[:, :2], cache)
  bidirectional = test_model.build(
    test_model.small_config('favor', causal=False)
  )
  with pytest.raises(ValueError, match='causal=False'):
    bidirectional.init_cache(B, 8)
