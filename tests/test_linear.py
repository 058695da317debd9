"""Linear Transformer (elu + 1 features) against the naive O(L^2) form.

The reference builds phi(x) = elu(x D^-1/4) + 1 + eps in float64 from its
definition (not from features.py) and computes out_i = sum_j a_ij v_j /
sum_j a_ij with a_ij = phi(q_i) . phi(k_j), causal and padding masks by
zeroing a_ij. fp32 against float64, 1e-5.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import attention
from tests import reference

B, L, H, D = 2, 29, 2, 8
RTOL, ATOL = 1e-5, 1e-5


def _phi(x, eps):
  x = np.asarray(x, np.float64) * D**-0.25
  return np.where(x > 0, x, np.expm1(np.minimum(x, 0))) + 1.0 + eps


def _inputs(seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [jax.random.normal(k, (B, L, H, D), jnp.float32) for k in keys]


def _mask():
  mask = np.ones((B, L), bool)
  mask[0, L - 6 :] = False
  mask[0, 3] = False
  return jnp.asarray(mask)


@pytest.mark.parametrize('eps', [1e-6, 0.1])
@pytest.mark.parametrize('chunk_size', [8, 64])
@pytest.mark.parametrize('causal', [True, False])
def test_matches_naive_linear_attention(causal, chunk_size, eps):
  attn = attention.create(
    'linear',
    head_dim=D,
    causal=causal,
    rngs=nnx.Rngs(0),
    chunk_size=chunk_size,
    kernel_eps=eps,
  )
  q, k, v = _inputs()
  mask = _mask()
  expected = reference.linear_attention(
    _phi(q, eps), _phi(k, eps), v, causal, key_mask_BS=mask
  )
  np.testing.assert_allclose(
    attn(q, k, v, mask=mask), expected, rtol=RTOL, atol=ATOL
  )


def test_is_a_favor_preset_with_deterministic_features():
  attn = attention.create('linear', head_dim=D, causal=True, rngs=nnx.Rngs(0))
  assert attn.kernel == 'elu'
  assert attn.projection is None
  assert set(attention.options('linear')) == {'kernel_eps', 'chunk_size'}


def test_very_negative_inputs_keep_a_positive_normalizer():
  # elu(x) + 1 rounds to exactly 0 in float32 below about x = -17; the eps
  # keeps the output a finite weighted mean of the values.
  attn = attention.create('linear', head_dim=D, causal=True, rngs=nnx.Rngs(0))
  q, k, v = _inputs()
  out = attn(-1e3 * (1 + jnp.abs(q)), -1e3 * (1 + jnp.abs(k)), v)
  assert np.all(np.isfinite(out))
  # All features equal eps: uniform weights, the running mean of the values.
  running_mean = np.cumsum(v, axis=1) / np.arange(1, L + 1)[None, :, None, None]
  np.testing.assert_allclose(out, running_mean, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
  'option,value', [('kernel_eps', -1.0), ('chunk_size', 0)]
)
def test_bad_options_are_named(option, value):
  with pytest.raises(ValueError, match=f'{option}.*{value}'):
    attention.create(
      'linear', head_dim=D, causal=True, rngs=nnx.Rngs(0), **{option: value}
    )
