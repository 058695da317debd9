"""Block-sparse attention ('fixed', 'bigbird') against a dense reference.

The reference patterns are written here straight from their definitions, as
dense [L, L] numpy matrices. BigBird's random blocks are the one thing the
test cannot know in advance: it reads them from the module, checks them
against their definition, and builds the rest of the pattern itself.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import attention
from performer.attention import local
from tests import reference
from tests.test_local import (
  ATOL,
  BF16_ATOL,
  B,
  D,
  L,
  assert_exactly_causal,
  inputs,
  largest_gradient_intermediate,
  padding_mask,
)

BIGBIRD_CASES = [
  # (block_size, num_global_blocks, num_window_blocks, num_random_blocks)
  (4, 0, 1, 0),
  (4, 1, 3, 1),
  (4, 2, 3, 3),
  (3, 1, 5, 2),
  (5, 3, 1, 2),
]


def create(causal, **opts):
  return attention.create(
    'sparse', head_dim=D, causal=causal, rngs=nnx.Rngs(0), **opts
  )


def fixed_pattern(block, summary, causal, length):
  i = np.arange(length)[:, None]
  j = np.arange(length)[None, :]
  allowed = (i // block == j // block) | (j % block >= block - summary)
  return allowed & (j <= i) if causal else allowed


def check_random_blocks(random_NR, num_blocks, g, w, r, causal):
  """Asserts that the random blocks follow their definition."""
  assert random_NR.shape == (num_blocks, r)
  for n in range(num_blocks):
    drawn = [m for m in random_NR[n] if m >= 0]
    if n < g:  # global query blocks see everything already
      assert not drawn
      continue
    candidates = {
      m
      for m in range(n if causal else num_blocks)
      if m >= g and abs(m - n) > w // 2
    }
    assert len(set(drawn)) == len(drawn) == min(r, len(candidates))
    assert set(drawn) <= candidates


def bigbird_pattern(block, g, w, random_NR, causal, length):
  i = np.arange(length)[:, None]
  j = np.arange(length)[None, :]
  bi, bj = i // block, j // block
  num_blocks = -(-length // block)
  random_NN = np.zeros((num_blocks, num_blocks), bool)
  for n, row in enumerate(random_NR):
    random_NN[n, row[row >= 0]] = True
  allowed = (bi < g) | (bj < g) | (np.abs(bi - bj) <= w // 2)
  allowed |= random_NN[bi, bj]
  return allowed & (j <= i) if causal else allowed


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('block,summary', [(1, 1), (4, 1), (5, 2), (8, 4)])
def test_fixed_matches_dense_reference(block, summary, causal):
  attn = create(causal, pattern='fixed', block_size=block, num_summary=summary)
  q, k, v = inputs()
  mask = padding_mask()
  allowed = fixed_pattern(block, summary, causal, L)
  np.testing.assert_array_equal(attn.pattern_mask(L), allowed)
  expected = reference.masked_softmax_attention(q, k, v, allowed, mask)
  out = attn(q, k, v, mask=jnp.asarray(mask))
  np.testing.assert_allclose(out, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('block,g,w,r', BIGBIRD_CASES)
def test_bigbird_matches_dense_reference(block, g, w, r, causal):
  attn = create(
    causal,
    pattern='bigbird',
    block_size=block,
    num_global_blocks=g,
    num_window_blocks=w,
    num_random_blocks=r,
    seed=3,
  )
  random_NR = attn.random_blocks(L)
  check_random_blocks(random_NR, -(-L // block), g, w, r, causal)
  q, k, v = inputs()
  mask = padding_mask()
  allowed = bigbird_pattern(block, g, w, random_NR, causal, L)
  np.testing.assert_array_equal(attn.pattern_mask(L), allowed)
  expected = reference.masked_softmax_attention(q, k, v, allowed, mask)
  out = attn(q, k, v, mask=jnp.asarray(mask))
  np.testing.assert_allclose(out, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('pattern', ['fixed', 'bigbird'])
def test_stepwise_path_matches_reference_and_gradients(
  pattern, causal, monkeypatch
):
  attn = create(causal, pattern=pattern, block_size=4, num_global_blocks=1)
  q, k, v = inputs()
  mask = jnp.asarray(padding_mask())
  if pattern == 'fixed':
    allowed = fixed_pattern(4, 4, causal, L)
  else:
    allowed = bigbird_pattern(4, 1, 3, attn.random_blocks(L), causal, L)

  def loss(q, k, v):
    return (attn(q, k, v, mask=mask) ** 2).sum()

  grads_whole = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  monkeypatch.setattr(local, 'MAX_SCORES_PER_STEP', 100)
  expected = reference.masked_softmax_attention(q, k, v, allowed, mask)
  out = jax.jit(lambda q, k, v: attn(q, k, v, mask=mask))(q, k, v)
  np.testing.assert_allclose(out, expected, rtol=0, atol=ATOL)
  grads_steps = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  for whole, steps in zip(grads_whole, grads_steps, strict=True):
    np.testing.assert_allclose(steps, whole, rtol=0, atol=ATOL)


def test_bigbird_random_blocks_are_seeded():
  length, opts = 256, {'pattern': 'bigbird', 'block_size': 8}
  first = create(False, seed=1, **opts).random_blocks(length)
  again = create(False, seed=1, **opts).random_blocks(length)
  other = create(False, seed=2, **opts).random_blocks(length)
  np.testing.assert_array_equal(first, again)
  assert np.any(first != other)
  # Bidirectional, 16 blocks: enough candidates for the seeds to matter.
  q, k, v = inputs(shape=(1, 128, 1, D))
  outs = [create(False, seed=s, **opts)(q, k, v) for s in (1, 1, 2)]
  np.testing.assert_array_equal(outs[0], outs[1])
  assert np.any(np.asarray(outs[0]) != np.asarray(outs[2]))


def test_bigbird_causal_random_blocks_ignore_length():
  # Earlier query blocks keep their random blocks when the sequence grows,
  # so a causal prefix is computed the same way at any length.
  attn = create(True, pattern='bigbird', block_size=4)
  short, long = attn.random_blocks(40), attn.random_blocks(80)
  np.testing.assert_array_equal(long[: short.shape[0]], short)


@pytest.mark.parametrize('pattern', ['fixed', 'bigbird'])
def test_query_without_visible_keys_outputs_zeros(pattern):
  attn = create(True, pattern=pattern, block_size=4)
  q, k, v = inputs()
  mask = np.ones((B, L), bool)
  mask[0, :8] = False
  out = np.asarray(attn(q, k, v, mask=jnp.asarray(mask)))
  np.testing.assert_array_equal(out[0, :8], 0.0)
  assert np.all(np.isfinite(out))


@pytest.mark.parametrize('pattern', ['fixed', 'bigbird'])
def test_exactly_causal(pattern):
  attn = create(True, pattern=pattern, block_size=4, num_global_blocks=1)
  assert_exactly_causal(attn, 13)


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('pattern', ['fixed', 'bigbird'])
def test_no_length_squared_intermediate(pattern, causal):
  length = 1024
  attn = create(causal, pattern=pattern, block_size=32)
  shape = largest_gradient_intermediate(attn, length)
  # Dense attention would hold [1, 1, L, L] scores; BigBird's default
  # gathers 8 blocks of 32 keys per query.
  assert np.prod(shape) <= length * 8 * 32, shape


@pytest.mark.parametrize('pattern', ['fixed', 'bigbird'])
def test_bfloat16(pattern):
  attn = create(True, pattern=pattern, block_size=4)
  q, k, v = inputs(jnp.bfloat16)
  mask = padding_mask()
  out = attn(q, k, v, mask=jnp.asarray(mask))
  assert out.dtype == jnp.bfloat16
  out = np.asarray(out, np.float32)
  assert np.all(np.isfinite(out))
  if pattern == 'fixed':
    allowed = fixed_pattern(4, 4, True, L)
  else:
    allowed = bigbird_pattern(4, 2, 3, attn.random_blocks(L), True, L)
  expected = reference.masked_softmax_attention(q, k, v, allowed, mask)
  np.testing.assert_allclose(out, expected, rtol=0, atol=BF16_ATOL)


@pytest.mark.parametrize(
  'opts,match',
  [
    ({'pattern': 'strided'}, r"pattern 'strided'.*bigbird.*fixed"),
    ({'block_size': 0}, r'block_size.*0'),
    ({'block_size': 4.0}, r'block_size.*4\.0'),
    ({'block_size': 4, 'num_summary': 5}, r'num_summary.*block_size=4.*5'),
    ({'num_summary': 0}, r'num_summary.*0'),
    ({'num_global_blocks': -1}, r'num_global_blocks.*-1'),
    ({'num_window_blocks': 2}, r'num_window_blocks.*odd.*2'),
    ({'num_window_blocks': 0}, r'num_window_blocks.*0'),
    ({'num_random_blocks': -1}, r'num_random_blocks.*-1'),
    ({'seed': -1}, r'seed.*-1'),
    ({'seed': 'a'}, r"seed.*'a'"),
  ],
)
def test_bad_options_raise(opts, match):
  with pytest.raises(ValueError, match=match):
    create(True, **opts)


def test_defaults():
  assert attention.defaults('sparse') == {
    'pattern': 'fixed',
    'block_size': 64,
    'num_summary': 4,
    'num_global_blocks': 2,
    'num_window_blocks': 3,
    'num_random_blocks': 3,
    'seed': 0,
  }
