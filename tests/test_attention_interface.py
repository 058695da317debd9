"""Checks every registered attention variant against the common contract.

Each variant, causal and bidirectional, fp32 and bf16: output shape and
dtype, jit equals eager, padded keys have no effect, causal variants are
exactly causal (zero gradient from future positions, and earlier outputs
bit-identical when the future changes).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import attention
from performer.attention import softmax
from tests import reference

# Small options so each case compiles in a second; lengths below are not
# multiples of the chunk, window or block size on purpose.
CASES = [
  ('softmax', {}),
  ('favor', {'num_features': 16, 'chunk_size': 8}),
  ('favor', {'num_features': 16, 'chunk_size': 8, 'kernel': 'relu'}),
  ('favor', {'num_features': 16, 'chunk_size': 8, 'kernel': 'softmax_trig'}),
  # FAVOR++ / FAVOR#: causal modules start from empty running statistics
  # (A = 0); tests/test_favorpp.py checks them with learned ones.
  ('favorpp', {'num_features': 16, 'chunk_size': 8, 'num_heads': 2}),
  ('favorsharp', {'num_features': 16, 'chunk_size': 8, 'num_heads': 2}),
  ('favor_scan', {'num_features': 16}),
  ('local', {'pattern': 'block', 'window': 8}),
  ('local', {'pattern': 'sliding', 'window': 8}),
  ('sparse', {'pattern': 'fixed', 'block_size': 8}),
  ('sparse', {'pattern': 'bigbird', 'block_size': 8}),
  ('linear', {'chunk_size': 8}),
  ('reformer', {'bucket_size': 4, 'n_hashes': 2}),
  ('linformer', {'k': 8, 'max_len': 32}),
  ('sinkhorn', {'block_size': 8, 'max_len': 32}),
  ('longformer', {'window': 8, 'global_positions': (0, 5)}),
  ('synthesizer', {'mode': 'dense', 'max_len': 32, 'num_heads': 2}),
  (
    'synthesizer',
    {
      'mode': 'factorized',
      'k': 4,
      'vanilla': True,
      'max_len': 32,
      'num_heads': 2,
    },
  ),
]
IDS = [f'{n}-{"-".join(f"{k}={v}" for k, v in o.items())}' for n, o in CASES]
# Variants whose method cannot be causal: causal=True is a ValueError that
# says so (test_causal_is_refused_where_the_method_cannot_be_causal).
BIDIRECTIONAL_ONLY = ('linformer', 'sinkhorn')
CAUSAL_CASES = [case for case in CASES if case[0] not in BIDIRECTIONAL_ONLY]
CAUSAL_IDS = [
  i for i, (n, _) in zip(IDS, CASES, strict=True) if n not in BIDIRECTIONAL_ONLY
]
# (name, opts, causal) for every mode a variant has.
MODES = [(n, o, False) for n, o in CASES] + [
  (n, o, True) for n, o in CASES if n not in BIDIRECTIONAL_ONLY
]
MODE_IDS = [f'{i}-bidirectional' for i in IDS] + [
  f'{i}-causal' for i in CAUSAL_IDS
]
B, L, H, D = 2, 29, 2, 8
# Only float rounding may differ between jit and eager (fusion order).
JIT_RTOL, JIT_ATOL = 1e-5, 1e-6


def _inputs(dtype=jnp.float32, seed=0, scale=1.0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [scale * jax.random.normal(k, (B, L, H, D), dtype) for k in keys]


def _mask():
  """Batch 0: padded tail and one hole; batch 1: no padding."""
  mask = np.ones((B, L), bool)
  mask[0, L - 6 :] = False
  mask[0, 3] = False
  return jnp.asarray(mask)


def _create(name, opts, causal):
  return attention.create(
    name, head_dim=D, causal=causal, rngs=nnx.Rngs(0), **opts
  )


def test_every_registered_variant_has_a_case():
  assert set(attention.names()) == {name for name, _ in CASES}


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('name,opts,causal', MODES, ids=MODE_IDS)
def test_shape_and_dtype(name, opts, causal, dtype):
  attn = _create(name, opts, causal)
  q, k, v = _inputs(dtype)
  out = attn(q, k, v, mask=_mask())
  assert out.shape == q.shape
  assert out.dtype == dtype
  assert np.all(np.isfinite(np.asarray(out, np.float32)))


@pytest.mark.parametrize('name,opts,causal', MODES, ids=MODE_IDS)
def test_jit_matches_eager(name, opts, causal):
  attn = _create(name, opts, causal)
  # Trigonometric features with 16 features and unit-norm inputs give
  # near-zero denominators (an ill-conditioned output); smaller inputs keep
  # the comparison about the compiler, not the conditioning.
  scale = 0.3 if opts.get('kernel') == 'softmax_trig' else 1.0
  q, k, v = _inputs(scale=scale)
  eager = attn(q, k, v, mask=_mask())
  jitted = nnx.jit(lambda m, q, k, v, mask: m(q, k, v, mask=mask))(
    attn, q, k, v, _mask()
  )
  np.testing.assert_allclose(jitted, eager, rtol=JIT_RTOL, atol=JIT_ATOL)


@pytest.mark.parametrize('name,opts,causal', MODES, ids=MODE_IDS)
def test_padded_keys_have_no_effect(name, opts, causal):
  attn = _create(name, opts, causal)
  q, k, v = _inputs()
  mask = _mask()
  k2, v2 = _inputs(seed=1)[1:]
  # Large, different keys and values at the padded positions only.
  pad = ~mask[:, :, None, None]
  k_changed = jnp.where(pad, 5.0 * k2, k)
  v_changed = jnp.where(pad, 100.0 * v2, v)
  out = attn(q, k, v, mask=mask)
  out_changed = attn(q, k_changed, v_changed, mask=mask)
  # Exact in math; 1e-6 leaves room for float rounding only.
  np.testing.assert_allclose(out_changed, out, rtol=0, atol=1e-6)


@pytest.mark.parametrize('name,opts', CAUSAL_CASES, ids=CAUSAL_IDS)
def test_causal_gradient_from_future_is_zero(name, opts):
  attn = _create(name, opts, causal=True)
  q, k, v = _inputs()
  mask = _mask()

  # One compiled gradient for every position: row `at_L` picks output i.
  @jax.jit
  def grads_of_output(q, k, v, at_L):
    def out_i(q, k, v):
      return (attn(q, k, v, mask=mask) * at_L[None, :, None, None]).sum()

    return jax.grad(out_i, argnums=(0, 1, 2))(q, k, v)

  for i in (0, 7, 8, 16, L - 2):
    grads = grads_of_output(q, k, v, jnp.arange(L) == i)
    for g in grads:
      np.testing.assert_array_equal(np.asarray(g[:, i + 1 :]), 0.0)
    # The past does influence position i (the test could not fail otherwise).
    if i > 0:
      assert np.any(np.asarray(grads[2][1, :i]) != 0.0)


@pytest.mark.parametrize('name,opts', CAUSAL_CASES, ids=CAUSAL_IDS)
def test_causal_outputs_ignore_changed_future(name, opts):
  attn = _create(name, opts, causal=True)
  q, k, v = _inputs()
  q2, k2, v2 = _inputs(seed=2)
  i = 13
  future = (jnp.arange(L) > i)[None, :, None, None]
  changed = [
    jnp.where(future, 10.0 * b, a)
    for a, b in zip((q, k, v), (q2, k2, v2), strict=True)
  ]
  out = np.asarray(attn(q, k, v))
  out_changed = np.asarray(attn(*changed))
  np.testing.assert_array_equal(out_changed[:, : i + 1], out[:, : i + 1])
  assert np.any(out_changed[:, i + 1 :] != out[:, i + 1 :])


@pytest.mark.parametrize('name', BIDIRECTIONAL_ONLY)
def test_causal_is_refused_where_the_method_cannot_be_causal(name):
  opts = next(o for n, o in CASES if n == name)
  with pytest.raises(ValueError, match='causal'):
    _create(name, opts, causal=True)


@pytest.mark.parametrize('name,opts', CASES, ids=IDS)
def test_bidirectional_variants_see_the_future(name, opts):
  attn = _create(name, opts, causal=False)
  q, k, v = _inputs()
  grad_v = jax.grad(lambda v: attn(q, k, v)[:, 0].sum())(v)
  assert np.any(np.asarray(grad_v[:, 1:]) != 0.0)


@pytest.mark.parametrize('causal', [True, False])
def test_softmax_matches_dense_reference(causal):
  attn = _create('softmax', {}, causal)
  q, k, v = _inputs()
  mask = _mask()
  pattern = reference.causal_pattern(L) if causal else None
  expected = reference.masked_softmax_attention(q, k, v, pattern, mask)
  np.testing.assert_allclose(attn(q, k, v, mask=mask), expected, atol=1e-5)
  np.testing.assert_allclose(
    softmax.softmax_reference(q, k, v, mask, causal), expected, atol=1e-5
  )


def test_softmax_query_without_visible_keys_outputs_zeros():
  attn = _create('softmax', {}, causal=True)
  q, k, v = _inputs()
  mask = jnp.ones((B, L), bool).at[0, :4].set(False)
  out = attn(q, k, v, mask=mask)
  np.testing.assert_array_equal(np.asarray(out[0, :4]), 0.0)
  assert np.all(np.asarray(out[0, 4:]) != 0.0)


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match=r"'nope'.*softmax"):
    attention.create('nope', head_dim=D, causal=False, rngs=nnx.Rngs(0))


def test_unknown_option_lists_valid_options():
  with pytest.raises(ValueError, match=r"\['windw'\].*implementation"):
    attention.create(
      'softmax', head_dim=D, causal=False, rngs=nnx.Rngs(0), windw=3
    )


def test_invalid_option_value_is_named():
  with pytest.raises(ValueError, match=r"implementation 'flash'.*cudnn"):
    attention.create(
      'softmax',
      head_dim=D,
      causal=False,
      rngs=nnx.Rngs(0),
      implementation='flash',
    )


@pytest.mark.parametrize('name,opts', CAUSAL_CASES, ids=CAUSAL_IDS)
def test_bad_shapes_are_named(name, opts):
  attn = _create(name, opts, causal=True)
  q, k, v = _inputs()
  with pytest.raises(ValueError, match='head_dim'):
    attn(q[..., :4], k[..., :4], v[..., :4])
  with pytest.raises(ValueError, match='same shape'):
    attn(q, k, v[:, :-1])
  with pytest.raises(ValueError, match='mask'):
    attn(q, k, v, mask=jnp.ones((B, L + 1), bool))
  with pytest.raises(ValueError, match='shape'):
    attn(q[0], k[0], v[0])
