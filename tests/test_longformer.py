"""Longformer (sliding window + global tokens) against a dense reference.

The reference pattern is written here from the definition, as a dense
[L, L] numpy matrix, independently of performer.attention: query i sees key
j when j is in i's sliding window (|i - j| <= W // 2; causal
i - W < j <= i), or j is global, or i is global; causal attention in
addition hides j > i. Attention is then reference.masked_softmax_attention
(float64) over that pattern, with each key counted once. fp32 against
float64, 1e-5.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import attention
from performer.attention import (
  local,
  longformer,  # noqa: F401  (registers it)
)
from tests import jaxpr_walk, reference

B, L, H, D = 2, 37, 2, 8
RTOL, ATOL = 1e-5, 1e-5


_forward = nnx.jit(lambda m, q, k, v, mask: m(q, k, v, mask=mask))
_prefill = nnx.jit(lambda m, q, k, v, c, mask: m.prefill(q, k, v, c, mask=mask))
_decode = nnx.jit(lambda m, q, k, v, c: m.decode(q, k, v, c))


def _create(causal=False, **opts):
  return attention.create(
    'longformer', head_dim=D, causal=causal, rngs=nnx.Rngs(0), **opts
  )


def _inputs(seed=0, length=L, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [jax.random.normal(k, (B, length, H, D), dtype) for k in keys]


def _mask(length=L):
  """Batch 0: a padded tail and a hole at 3; batch 1: no padding."""
  mask = np.ones((B, length), bool)
  mask[0, max(length - 5, 1) :] = False
  mask[0, 3:4] = False
  return jnp.asarray(mask)


def _pattern(length, window, positions, causal):
  """The dense [L, L] pattern of the definition."""
  i = np.arange(length)[:, None]
  j = np.arange(length)[None, :]
  if causal:
    allowed = (j <= i) & (j > i - window)
  else:
    allowed = np.abs(i - j) <= window // 2
  is_global = np.zeros(length, bool)
  is_global[list(positions)] = True
  allowed = allowed | is_global[None, :] | is_global[:, None]
  if causal:
    allowed &= j <= i
  return allowed


SETTINGS = [
  {'window': 8, 'global_positions': (0,)},
  # Globals in the middle; 12 lies in 10's window (|10 - 12| <= 5 // 2), so
  # each is both a global key and a window key of the other.
  {'window': 5, 'global_positions': (10, 12, 30)},
  # No globals: plain sliding window.
  {'window': 4, 'global_positions': ()},
  # Window 1: each query itself and the globals; a padded global (3 is a
  # hole in batch 0) and the last position.
  {'window': 1, 'global_positions': (3, 20, 36)},
  # A window wider than the sequence: every query sees every key.
  {'window': 100, 'global_positions': (5,)},
  # 19 globals: the global queries run in two blocks (of 16 and 3).
  {'window': 3, 'global_positions': tuple(range(0, L, 2))},
]
SETTING_IDS = ['w8-g0', 'w5-g10_12_30', 'w4-none', 'w1-g3_20_36', 'w100-g5']
SETTING_IDS.append('w3-g_every_2nd')


def _check_dense(opts, causal, length):
  attn = _create(causal, **opts)
  q, k, v = _inputs(length=length)
  mask = _mask(length)
  allowed = _pattern(length, opts['window'], opts['global_positions'], causal)
  expected = reference.masked_softmax_attention(q, k, v, allowed, mask)
  got = _forward(attn, q, k, v, mask)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('opts', SETTINGS, ids=SETTING_IDS)
def test_matches_dense_reference(opts, causal):
  _check_dense(opts, causal, L)


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('length', [16, 1])
def test_matches_dense_reference_at_short_lengths(length, causal):
  # 16: one sliding block (C = 16) with the window reaching past both ends.
  positions = (0, 7, 9) if length == 16 else (0,)
  _check_dense({'window': 5, 'global_positions': positions}, causal, length)


@pytest.mark.parametrize('causal', [False, True])
def test_matches_dense_reference_in_steps(causal, monkeypatch):
  # A tiny score budget makes block_softmax step over the query blocks
  # (lax.map), with the global key group and the global query blocks split
  # or closed over.
  monkeypatch.setattr(local, 'MAX_SCORES_PER_STEP', 2048)
  positions = (0, 3, 17, 18, 30)
  attn = _create(causal, window=20, global_positions=positions)
  q, k, v = _inputs(seed=4)
  mask = _mask()
  allowed = _pattern(L, 20, positions, causal)
  expected = reference.masked_softmax_attention(q, k, v, allowed, mask)
  forward = jax.jit(lambda q, k, v, mask: attn(q, k, v, mask=mask))
  assert 'scan' in str(jax.make_jaxpr(forward)(q, k, v, mask))
  np.testing.assert_allclose(
    forward(q, k, v, mask), expected, rtol=RTOL, atol=ATOL
  )


def test_global_key_inside_the_window_counts_once():
  # Queries 1..4 hold global key 0 in their window (|i - 0| <= 8 // 2):
  # counting it in both groups would double its weight there. The output
  # is the reference's, and measurably not that mistake's.
  attn = _create(False, window=8, global_positions=(0,))
  q, k, v = _inputs()
  allowed = _pattern(L, 8, (0,), False)
  got = np.asarray(_forward(attn, q, k, v, None))
  once = reference.masked_softmax_attention(q, k, v, allowed)
  np.testing.assert_allclose(got, once, rtol=RTOL, atol=ATOL)
  # The mistake: a copy of key 0 that queries 1..4 see as well.
  k2, v2 = (jnp.concatenate([x[:, :1], x], axis=1) for x in (k, v))
  copy_L1 = np.zeros((L, 1), bool)
  copy_L1[1:5] = True
  twice = np.concatenate([copy_L1, allowed], axis=1)
  doubled = reference.masked_softmax_attention(q, k2, v2, twice)
  np.testing.assert_allclose(doubled[:, 5:], once[:, 5:], rtol=0, atol=1e-12)
  assert np.abs(doubled[:, 1:5] - got[:, 1:5]).max() > 1e-2


def test_query_without_real_keys_outputs_zeros():
  attn = _create(True, window=3, global_positions=(0,))
  q, k, v = _inputs()
  mask = jnp.ones((B, L), bool).at[0, :4].set(False)
  out = np.asarray(_forward(attn, q, k, v, mask))
  np.testing.assert_array_equal(out[0, :4], 0.0)
  assert np.all(out[0, 4:] != 0.0)


@pytest.mark.parametrize('causal', [False, True])
def test_padded_keys_change_nothing(causal):
  # Global 3 is padded in batch 0: it must vanish as a global key too.
  attn = _create(causal, window=6, global_positions=(0, 3, 20))
  q, k, v = _inputs()
  _, k2, v2 = _inputs(seed=1)
  mask = _mask()
  pad = ~mask[:, :, None, None]
  out = _forward(attn, q, k, v, mask)
  changed = _forward(
    attn, q, jnp.where(pad, 5.0 * k2, k), jnp.where(pad, 100.0 * v2, v), mask
  )
  # Exact in math; 1e-6 leaves room for float rounding only.
  np.testing.assert_allclose(changed, out, rtol=0, atol=1e-6)
  # Even inf/NaN in padded values cannot leak.
  nan_v = jnp.where(pad, jnp.nan, v)
  np.testing.assert_allclose(
    _forward(attn, q, k, nan_v, mask), out, rtol=0, atol=1e-6
  )


CAUSAL_OPTS = {'window': 5, 'global_positions': (0, 10, 12, 25)}


def test_causal_gradient_from_future_is_zero():
  attn = _create(True, **CAUSAL_OPTS)
  q, k, v = _inputs()
  mask = _mask()

  # Output i's gradient, as the vjp of a one-hot weighting (one compile).
  @jax.jit
  def grads_of(q, k, v, onehot_L):
    def out_i(q, k, v):
      out = attn(q, k, v, mask=mask)
      return jnp.sum(out * onehot_L[None, :, None, None])

    return jax.grad(out_i, argnums=(0, 1, 2))(q, k, v)

  for i in (0, 4, 10, 11, 12, 20, 25, L - 2):
    grads = grads_of(q, k, v, jnp.zeros(L).at[i].set(1.0))
    for g in grads:
      np.testing.assert_array_equal(np.asarray(g[:, i + 1 :]), 0.0)
    if i > 0:  # The past does reach position i.
      assert np.any(np.asarray(grads[2][1, :i]) != 0.0)
    if i == 25:  # A global query: every earlier key reaches it.
      assert np.all(np.asarray(grads[2][1, : i + 1]) != 0.0)


def test_causal_outputs_ignore_changed_future():
  attn = _create(True, **CAUSAL_OPTS)
  q, k, v = _inputs()
  q2, k2, v2 = _inputs(seed=2)
  for i in (9, 12, 19):  # The future holds globals 10/12/25.
    future = (jnp.arange(L) > i)[None, :, None, None]
    changed = [
      jnp.where(future, 10.0 * b, a)
      for a, b in zip((q, k, v), (q2, k2, v2), strict=True)
    ]
    out = np.asarray(_forward(attn, q, k, v, None))
    out_changed = np.asarray(_forward(attn, *changed, None))
    np.testing.assert_array_equal(out_changed[:, : i + 1], out[:, : i + 1])
    assert np.any(out_changed[:, i + 1 :] != out[:, i + 1 :])


def test_bidirectional_global_sees_and_is_seen_by_everything():
  attn = _create(False, window=4, global_positions=(18,))
  q, k, v = _inputs()
  grad_of = jax.jit(
    lambda v, i: jax.grad(lambda v: attn(q, k, v)[:, i].sum())(v),
    static_argnums=1,
  )
  grad_v = grad_of(v, 18)
  assert np.all(np.asarray(grad_v) != 0.0)
  grad_v = grad_of(v, 0)
  seen = np.any(np.asarray(grad_v) != 0.0, axis=(0, 2, 3))
  np.testing.assert_array_equal(np.flatnonzero(seen), [0, 1, 2, 18])


def test_causal_ignores_globals_beyond_the_sequence():
  # Global 30 is beyond a prefix of 20: the prefix's outputs are those of
  # the whole sequence, and those of the pattern without 30.
  attn = _create(True, **CAUSAL_OPTS)
  q, k, v = _inputs()
  full = np.asarray(_forward(attn, q, k, v, None))
  prefix = np.asarray(_forward(attn, q[:, :20], k[:, :20], v[:, :20], None))
  np.testing.assert_array_equal(prefix, full[:, :20])
  allowed = _pattern(20, 5, (0, 10, 12), True)
  expected = reference.masked_softmax_attention(
    q[:, :20], k[:, :20], v[:, :20], allowed
  )
  np.testing.assert_allclose(prefix, expected, rtol=RTOL, atol=ATOL)


def test_prefill_and_decode_equal_parallel_pass():
  length = 21
  attn = _create(True, window=4, global_positions=(0, 6, 15))
  q, k, v = _inputs(length=length)
  # Padding inside the prompt must stay invisible to the decoded positions.
  mask = jnp.ones((B, length), bool).at[0, 0].set(False)
  expected = _forward(attn, q, k, v, mask)
  # Prompts shorter than a global position, mid-window, and past all.
  for prompt in (1, 13, 17):
    cache = attn.init_cache(B, H, length)
    p = slice(0, prompt)
    out, cache = _prefill(attn, q[:, p], k[:, p], v[:, p], cache, mask[:, p])
    outs = [out]
    for i in range(prompt, length):
      s = slice(i, i + 1)
      out, cache = _decode(attn, q[:, s], k[:, s], v[:, s], cache)
      outs.append(out)
    assert int(cache['index']) == length
    got = jnp.concatenate(outs, axis=1)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_bidirectional_cannot_decode():
  with pytest.raises(ValueError, match='causal'):
    _create(False).init_cache(B, H, 8)


@pytest.mark.parametrize(
  'opts,words',
  [
    ({'window': 0}, 'window must be an int >= 1, got 0'),
    ({'window': -3}, 'window must be an int >= 1, got -3'),
    ({'window': 2.5}, 'window must be an int >= 1, got 2.5'),
    ({'global_positions': (0, -1)}, 'ints >= 0, got -1'),
    ({'global_positions': (0, 1.0)}, 'ints >= 0, got 1.0'),
    ({'global_positions': (4, 2, 4)}, r'distinct, got \[4\] more than once'),
    ({'global_positions': 3}, 'must be a tuple .* got 3'),
  ],
)
def test_bad_options_are_named(opts, words):
  with pytest.raises(ValueError, match=words):
    _create(**opts)


def test_defaults():
  assert attention.defaults('longformer') == {
    'window': 512,
    'global_positions': (0,),
  }


def test_positions_are_sorted():
  attn = _create(global_positions=[12, 0, 5])
  assert attn.global_positions == (0, 5, 12)


def test_global_position_beyond_the_sequence_is_named():
  attn = _create(False, window=4, global_positions=(0, 37))
  q, k, v = _inputs()
  with pytest.raises(ValueError, match='global position 37 .* length 37'):
    attn(q, k, v)


def test_jit_matches_eager():
  # Causal: every op of the bidirectional pass plus the causal masks (one
  # case only: eager dispatch is the slowest part of this file).
  attn = _create(True, **CAUSAL_OPTS)
  q, k, v = _inputs()
  mask = _mask()
  eager = attn(q, k, v, mask=mask)
  jitted = _forward(attn, q, k, v, mask)
  # Only float rounding may differ (fusion order).
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('causal', [False, True])
def test_bfloat16(causal):
  attn = _create(causal, **CAUSAL_OPTS)
  q, k, v = _inputs(dtype=jnp.bfloat16)
  mask = _mask()
  out = _forward(attn, q, k, v, mask)
  assert out.dtype == jnp.bfloat16
  allowed = _pattern(L, 5, CAUSAL_OPTS['global_positions'], causal)
  expected = reference.masked_softmax_attention(q, k, v, allowed, mask)
  # bf16 inputs and output carry about 3 significant digits; the softmax
  # itself runs in float32.
  np.testing.assert_allclose(
    np.asarray(out, np.float32), expected, rtol=0, atol=5e-2
  )


@pytest.mark.parametrize('causal', [False, True])
def test_no_length_squared_intermediate(causal):
  length = 1024
  attn = _create(causal, window=32, global_positions=(0, 500, 1023))
  x = jnp.zeros((1, length, 1, D))
  mask = jnp.ones((1, length), bool)
  grad = jax.grad(lambda q, k, v: attn(q, k, v, mask=mask).sum(), (0, 1, 2))
  shapes = list(jaxpr_walk.all_shapes(jax.make_jaxpr(grad)(x, x, x).jaxpr))
  assert len(shapes) > 50  # The walk reached the computation.
  assert (1, 1, 3, length) in shapes or (1, 1, 1, 3, length) in shapes
  for shape in shapes:
    assert sum(n >= length for n in shape) <= 1, shape
