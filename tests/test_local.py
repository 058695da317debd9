"""Local attention ('block' and 'sliding') against a dense masked reference.

The reference patterns are written here straight from their definitions,
as dense [L, L] numpy matrices, independently of performer.attention.local.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.extend import core as jax_core

from performer import attention
from performer.attention import local
from tests import reference

B, L, H, D = 2, 29, 2, 8
ATOL = 1e-5  # fp32 against the float64 reference
BF16_ATOL = 5e-2  # bf16 inputs carry ~3 significant digits


def inputs(dtype=jnp.float32, seed=0, shape=(B, L, H, D)):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [jax.random.normal(k, shape, dtype) for k in keys]


def padding_mask():
  """Batch 0: a padded tail and a hole; batch 1: no padding."""
  mask = np.ones((B, L), bool)
  mask[0, L - 6 :] = False
  mask[0, 3] = False
  return mask


def local_pattern(pattern, window, causal, length):
  """The dense [L, L] pattern, straight from the definitions."""
  i = np.arange(length)[:, None]
  j = np.arange(length)[None, :]
  if pattern == 'block':
    bi, bj = i // window, j // window
    if causal:
      return ((bj == bi) | (bj == bi - 1)) & (j <= i)
    return np.abs(bi - bj) <= 1
  if causal:
    return (j <= i) & (j > i - window)
  return np.abs(i - j) <= window // 2


def create(causal, **opts):
  return attention.create(
    'local', head_dim=D, causal=causal, rngs=nnx.Rngs(0), **opts
  )


def largest_intermediate(fn, *args):
  """Shape of the largest value in the jaxpr of `fn` (sub-jaxprs included)."""

  def shapes(jaxpr):
    for eqn in jaxpr.eqns:
      for var in eqn.outvars:
        yield tuple(getattr(var.aval, 'shape', ()))
      for param in eqn.params.values():
        for sub in param if isinstance(param, (list, tuple)) else [param]:
          if isinstance(sub, jax_core.ClosedJaxpr):
            yield from shapes(sub.jaxpr)
          elif isinstance(sub, jax_core.Jaxpr):
            yield from shapes(sub)

  jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
  return max(shapes(jaxpr), key=lambda shape: int(np.prod(shape)))


def largest_gradient_intermediate(attn, length):
  """Largest value shape in the q, k, v gradient of `attn` at `length`."""
  x = jnp.ones((1, length, 1, D))
  mask = jnp.ones((1, length), bool)
  return largest_intermediate(
    jax.grad(lambda q, k, v: attn(q, k, v, mask=mask).sum(), (0, 1, 2)),
    x,
    x,
    x,
  )


def assert_exactly_causal(attn, i):
  """Output i has zero gradient from, and ignores changes to, positions > i."""
  q, k, v = inputs()
  grads = jax.grad(
    lambda q, k, v: attn(q, k, v)[:, i].sum(), argnums=(0, 1, 2)
  )(q, k, v)
  for grad in grads:
    np.testing.assert_array_equal(np.asarray(grad[:, i + 1 :]), 0.0)
  future = (jnp.arange(L) > i)[None, :, None, None]
  changed = [jnp.where(future, 7.0 * x[::-1], x) for x in (q, k, v)]
  out = np.asarray(attn(q, k, v))
  out_changed = np.asarray(attn(*changed))
  np.testing.assert_array_equal(out_changed[:, : i + 1], out[:, : i + 1])


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('window', [1, 4, 5, 40])
@pytest.mark.parametrize('pattern', ['block', 'sliding'])
def test_matches_dense_reference(pattern, window, causal):
  attn = create(causal, pattern=pattern, window=window)
  q, k, v = inputs()
  mask = padding_mask()
  allowed = local_pattern(pattern, window, causal, L)
  np.testing.assert_array_equal(attn.pattern_mask(L), allowed)
  expected = reference.masked_softmax_attention(q, k, v, allowed, mask)
  out = attn(q, k, v, mask=jnp.asarray(mask))
  np.testing.assert_allclose(out, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('pattern', ['block', 'sliding'])
def test_stepwise_path_matches_reference_and_gradients(
  pattern, causal, monkeypatch
):
  attn = create(causal, pattern=pattern, window=6)
  q, k, v = inputs()
  mask = jnp.asarray(padding_mask())

  def loss(q, k, v):
    return (attn(q, k, v, mask=mask) ** 2).sum()

  grads_whole = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  # Few scores per step: many steps, the last one partly padding.
  monkeypatch.setattr(local, 'MAX_SCORES_PER_STEP', 100)
  allowed = local_pattern(pattern, 6, causal, L)
  expected = reference.masked_softmax_attention(q, k, v, allowed, mask)
  out = jax.jit(lambda q, k, v: attn(q, k, v, mask=mask))(q, k, v)
  np.testing.assert_allclose(out, expected, rtol=0, atol=ATOL)
  grads_steps = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  for whole, steps in zip(grads_whole, grads_steps, strict=True):
    np.testing.assert_allclose(steps, whole, rtol=0, atol=ATOL)


@pytest.mark.parametrize('pattern', ['block', 'sliding'])
def test_query_without_visible_keys_outputs_zeros(pattern):
  attn = create(True, pattern=pattern, window=4)
  q, k, v = inputs()
  mask = np.ones((B, L), bool)
  mask[0, :8] = False  # queries 0..7 see only padding
  out = np.asarray(attn(q, k, v, mask=jnp.asarray(mask)))
  np.testing.assert_array_equal(out[0, :8], 0.0)
  assert np.all(np.isfinite(out))


@pytest.mark.parametrize('pattern', ['block', 'sliding'])
def test_exactly_causal(pattern):
  assert_exactly_causal(create(True, pattern=pattern, window=5), 12)


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('pattern', ['block', 'sliding'])
def test_no_length_squared_intermediate(pattern, causal):
  length = 1024
  attn = create(causal, pattern=pattern, window=32)
  shape = largest_gradient_intermediate(attn, length)
  # Dense attention would hold [1, 1, L, L] scores (L * L entries).
  assert np.prod(shape) <= length * 3 * 32, shape


@pytest.mark.parametrize('pattern', ['block', 'sliding'])
def test_bfloat16(pattern):
  attn = create(True, pattern=pattern, window=8)
  q, k, v = inputs(jnp.bfloat16)
  mask = padding_mask()
  out = attn(q, k, v, mask=jnp.asarray(mask))
  assert out.dtype == jnp.bfloat16
  out = np.asarray(out, np.float32)
  assert np.all(np.isfinite(out))
  allowed = local_pattern(pattern, 8, True, L)
  expected = reference.masked_softmax_attention(q, k, v, allowed, mask)
  np.testing.assert_allclose(out, expected, rtol=0, atol=BF16_ATOL)


@pytest.mark.parametrize(
  'opts,match',
  [
    ({'window': 0}, r'window.*0'),
    ({'window': 2.5}, r'window.*2\.5'),
    ({'window': True}, r'window.*True'),
    ({'pattern': 'dilated'}, r"pattern 'dilated'.*block.*sliding"),
  ],
)
def test_bad_options_raise(opts, match):
  with pytest.raises(ValueError, match=match):
    create(True, **opts)


def test_defaults():
  assert attention.defaults('local') == {'pattern': 'block', 'window': 256}
