"""Linformer attention against a dense numpy float64 reference.

The reference takes the module's own E and F, keeps only the real keys
(dropping the padded ones, rather than zeroing them as the module does),
projects densely, K' = E[real]^T K[real] and V' = F[real]^T V[real], and
takes softmax(q K'^T / sqrt(D)) V'. fp32 against float64, 1e-5.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import attention
from performer.attention import linformer
from tests import jaxpr_walk, test_model

B, L, H, D = 2, 29, 2, 8
K, MAX_LEN = 6, 40
RTOL, ATOL = 1e-5, 1e-5
# Only float rounding may differ between jit and eager (fusion order).
JIT_RTOL, JIT_ATOL = 1e-5, 1e-6


def _create(causal=False, **opts):
  opts = {'k': K, 'max_len': MAX_LEN, **opts}
  return attention.create(
    'linformer', head_dim=D, causal=causal, rngs=nnx.Rngs(0), **opts
  )


def _inputs(seed=0, length=L, key_length=None, dtype=jnp.float32):
  key_length = length if key_length is None else key_length
  keys = jax.random.split(jax.random.key(seed), 3)
  shapes = [(B, length, H, D)] + 2 * [(B, key_length, H, D)]
  return [
    jax.random.normal(k, s, dtype) for k, s in zip(keys, shapes, strict=True)
  ]


def _mask(length=L):
  """Batch 0: padded tail and one hole; batch 1: no padding."""
  mask = np.ones((B, length), bool)
  mask[0, length - 6 :] = False
  mask[0, 3] = False
  return jnp.asarray(mask)


def _projections(attn):
  e = np.asarray(attn.proj_key[...], np.float64)
  f = e if attn.share_kv else np.asarray(attn.proj_value[...], np.float64)
  return e, f


def _dense(q, k, v, e, f, mask=None):
  """The definition, batch by batch, with the padded keys dropped."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  b, s = k.shape[:2]
  real = np.ones((b, s), bool) if mask is None else np.asarray(mask)
  out = np.zeros(q.shape)
  for bi in range(b):
    idx = np.flatnonzero(real[bi])
    kp_KHD = np.einsum('sk,shd->khd', e[idx], k[bi, idx])
    vp_KHD = np.einsum('sk,shd->khd', f[idx], v[bi, idx])
    logits_HLK = np.einsum('lhd,khd->hlk', q[bi], kp_KHD) / np.sqrt(D)
    w = np.exp(logits_HLK - logits_HLK.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out[bi] = np.einsum('hlk,khd->lhd', w, vp_KHD)
  return out


@pytest.mark.parametrize('share_kv', [False, True])
@pytest.mark.parametrize('with_mask', [False, True])
def test_matches_dense_reference(share_kv, with_mask):
  attn = _create(share_kv=share_kv)
  q, k, v = _inputs()
  mask = _mask() if with_mask else None
  e, f = _projections(attn)
  assert e.shape == (MAX_LEN, K) and f.shape == (MAX_LEN, K)
  assert share_kv or not np.array_equal(e, f)
  expected = _dense(q, k, v, e[:L], f[:L], mask)
  np.testing.assert_allclose(
    attn(q, k, v, mask=mask), expected, rtol=RTOL, atol=ATOL
  )


def test_share_kv_has_one_projection():
  attn = _create(share_kv=True)
  params = nnx.state(attn, nnx.Param)
  assert len(jax.tree_util.tree_leaves(params)) == 1
  assert attn.proj_value is None
  assert len(jax.tree_util.tree_leaves(nnx.state(_create(), nnx.Param))) == 2


@pytest.mark.parametrize('key_length', [1, 17, MAX_LEN])
def test_shorter_input_uses_first_rows(key_length):
  # Queries of another length too: Linformer is cross-attention as well.
  attn = _create()
  q, k, v = _inputs(seed=2, length=11, key_length=key_length)
  e, f = _projections(attn)
  expected = _dense(q, k, v, e[:key_length], f[:key_length])
  np.testing.assert_allclose(attn(q, k, v), expected, rtol=RTOL, atol=ATOL)
  # The reference with other rows differs: the rows used really matter.
  if key_length < MAX_LEN:
    other = _dense(q, k, v, e[-key_length:], f[-key_length:])
    assert not np.allclose(expected, other, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('fill', ['huge', 'nan', 'inf'])
def test_padded_keys_change_nothing(fill):
  attn = _create()
  q, k, v = _inputs()
  mask = _mask()
  pad = ~mask[:, :, None, None]
  out = attn(q, k, v, mask=mask)
  _, k2, v2 = _inputs(seed=5)
  if fill == 'huge':
    k_bad, v_bad = 1e30 * k2, 1e30 * v2
  else:
    k_bad = v_bad = jnp.full_like(k, jnp.nan if fill == 'nan' else jnp.inf)
  changed = attn(q, jnp.where(pad, k_bad, k), jnp.where(pad, v_bad, v), mask)
  np.testing.assert_array_equal(changed, out)
  # And the contract's check: padded keys x5, values x100.
  scaled = attn(q, jnp.where(pad, 5 * k2, k), jnp.where(pad, 100 * v2, v), mask)
  np.testing.assert_allclose(scaled, out, rtol=0, atol=1e-6)


def test_padding_gradients_are_zero_and_finite():
  attn = _create()
  q, k, v = _inputs()
  mask = _mask()
  pad = ~mask[:, :, None, None]
  k = jnp.where(pad, jnp.nan, k)

  def loss(k, v):
    return jnp.sum(attn(q, k, v, mask) ** 2)

  dk, dv = jax.grad(loss, argnums=(0, 1))(k, v)
  for g in (dk, dv):
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(jnp.where(pad, g, 0.0), 0.0)
    assert np.any(jnp.where(pad, 0.0, g) != 0)


def test_all_keys_padded_outputs_zeros():
  attn = _create()
  q, k, v = _inputs()
  mask = jnp.asarray(np.arange(B)[:, None] > 0).repeat(L, axis=1)
  out = np.asarray(attn(q, k, v, mask=mask))
  np.testing.assert_array_equal(out[0], 0.0)
  assert np.all(out[1] != 0)


@pytest.mark.parametrize(
  'opts,words',
  [
    ({'k': 0}, 'k must be an int >= 1, got 0'),
    ({'k': 2.5}, 'k must be an int >= 1, got 2.5'),
    ({'max_len': None}, 'max_len is required'),
    ({'max_len': 0}, 'max_len must be an int >= 1, got 0'),
    ({'share_kv': 'yes'}, "share_kv must be True or False, got 'yes'"),
  ],
)
def test_bad_options_are_named(opts, words):
  with pytest.raises(ValueError, match=words):
    _create(**opts)


def test_standalone_without_max_len_is_refused():
  with pytest.raises(ValueError, match='max_len is required'):
    attention.create('linformer', head_dim=D, causal=False, rngs=nnx.Rngs(0))


def test_causal_is_refused_with_reason():
  with pytest.raises(ValueError, match='causal=True.*future'):
    _create(causal=True)


def test_too_long_input_is_named():
  attn = _create()
  q, k, v = _inputs(length=MAX_LEN + 1)
  with pytest.raises(ValueError, match=f'{MAX_LEN + 1} exceeds max_len=40'):
    attn(q, k, v)


def test_options_and_defaults():
  assert attention.defaults('linformer') == {
    'k': 256,
    'max_len': None,
    'share_kv': False,
  }
  attn = _create()
  assert not hasattr(attn, 'init_cache') and not hasattr(attn, 'decode')
  assert isinstance(attn, linformer.LinformerAttention)


def test_initial_scale_preserves_norms():
  # N(0, 1/k) entries: E^T x keeps |x|^2 in expectation (see the module).
  attn = attention.create(
    'linformer', head_dim=D, causal=False, rngs=nnx.Rngs(3), k=64, max_len=512
  )
  e, _ = _projections(attn)
  np.testing.assert_allclose(np.mean(e**2) * 64, 1.0, rtol=0.05)


def test_jit_matches_eager():
  attn = _create()
  q, k, v = _inputs()
  mask = _mask()
  jitted = nnx.jit(lambda m, q, k, v, mask: m(q, k, v, mask=mask))
  np.testing.assert_allclose(
    jitted(attn, q, k, v, mask),
    attn(q, k, v, mask=mask),
    rtol=JIT_RTOL,
    atol=JIT_ATOL,
  )


def test_bfloat16_in_bfloat16_out():
  attn = _create()
  q, k, v = _inputs()
  mask = _mask()
  low = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  out = attn(*low, mask=mask)
  assert out.dtype == jnp.bfloat16
  # bf16 inputs and output (8 mantissa bits) against the fp32 result of the
  # same rounded inputs: only the output rounding and accumulation differ.
  expected = attn(*(x.astype(jnp.float32) for x in low), mask=mask)
  np.testing.assert_allclose(
    np.asarray(out, np.float32), expected, rtol=2e-2, atol=2e-2
  )


@pytest.mark.parametrize('share_kv', [False, True])
def test_gradients_reach_the_projections(share_kv):
  attn = _create(share_kv=share_kv)
  q, k, v = _inputs()
  mask = _mask()

  def loss(attn):
    return jnp.sum(attn(q, k, v, mask=mask) ** 2)

  grads = nnx.grad(loss)(attn)
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  assert len(leaves) == (1 if share_kv else 2)
  for path, g in leaves:
    g = np.asarray(g)
    assert np.any(g[:L] != 0), jax.tree_util.keystr(path)
    # Rows past the input length are unused: exactly zero gradient.
    np.testing.assert_array_equal(g[L:], 0.0)


def test_every_model_parameter_gets_a_gradient():
  length = test_model.LENGTH
  config = test_model.small_config(
    'linformer', 'classifier', pool='cls', max_len=length
  )
  config.attention_options.linformer.k = 4
  net = test_model.build(config)
  attn = net.encoder.blocks[0].attention
  assert attn.max_len == length + 1  # Filled by the model (CLS).
  # Batch row 0 is full length, so every row of E and F is used.
  toks = test_model.tokens(0, length=length)
  mask = test_model.padding_mask(length)

  @nnx.jit  # One compiled program: much faster than eager on a CPU.
  def grad(net):
    return nnx.grad(lambda net: jnp.sum(net(toks, mask) ** 2))(net)

  for path, g in jax.tree_util.tree_leaves_with_path(grad(net)):
    assert np.any(np.asarray(g) != 0), jax.tree_util.keystr(path)


def test_memory_is_linear_in_length():
  # No [.., L, L] intermediate at L = 1024 with k = 16, forward or backward.
  attn = attention.create(
    'linformer', head_dim=D, causal=False, rngs=nnx.Rngs(0), k=16, max_len=1024
  )
  q = jnp.zeros((1, 1024, 1, D))
  mask = jnp.ones((1, 1024), bool)
  jaxpr = jax.make_jaxpr(jax.grad(lambda q: attn(q, q, q, mask).sum()))(q)
  shapes = list(jaxpr_walk.all_shapes(jaxpr.jaxpr))
  assert len(shapes) > 10
  for shape in shapes:
    assert sum(n >= 1024 for n in shape) <= 1, shape
