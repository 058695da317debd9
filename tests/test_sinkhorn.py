"""Sparse Sinkhorn attention against dense float64 numpy references.

References, none of which calls the code under test:
- The Sinkhorn matrix P from the module's own sort-network weights: block
  means of the real keys, relu MLP, logits / temperature, then row and
  column normalisation in float64 on the submatrix of the blocks that hold
  a real key.
- Given any P, attention by loops: query block n takes one softmax over
  its own block's real keys and the slots of its sorted block (slot j: the
  P-weighted mean of the real keys in slot j of the blocks, masked when
  that mass is 0).
- With P forced to the identity: dense block-local softmax attention (a
  block-diagonal mask; the sorted copy of the own block counts every key
  twice, which leaves the softmax unchanged), tests/reference.py. With a
  hard permutation: dense softmax over the own and the permuted block.
fp32 against float64 at rtol = atol = 1e-5.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import attention
from performer.attention import sinkhorn
from tests import jaxpr_walk, reference, test_model

B, L, H, D = 2, 29, 2, 8
C = 8  # block_size: 4 blocks, the last with 5 positions.
N = -(-L // C)
MAX_LEN = 48
RTOL, ATOL = 1e-5, 1e-5
assert sinkhorn.SinkhornAttention  # The import registers the variant.


def _create(causal=False, **opts):
  opts = {'block_size': C, 'max_len': MAX_LEN, **opts}
  return attention.create(
    'sinkhorn', head_dim=D, causal=causal, rngs=nnx.Rngs(0), **opts
  )


def _inputs(seed=0, length=L, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [jax.random.normal(k, (B, length, H, D), dtype) for k in keys]


def _mask(length=L):
  """Batch 0: a hole and a padded tail; batch 1: no padding."""
  mask = np.ones((B, length), bool)
  mask[0, length - 6 :] = False
  mask[0, 3] = False
  return jnp.asarray(mask)


def _blocks(x_BL, c=C):
  """[B, L, ...] -> [B, N, C, ...], zero (False) padded, float64."""
  x = np.asarray(x_BL)
  pad = -x.shape[1] % c
  x = np.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  return x.reshape(x.shape[0], -1, c, *x.shape[2:])


def _lse(x, axis):
  top = x.max(axis=axis, keepdims=True)
  return top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))


def _sinkhorn_reference(attn, k, mask, c=C):
  """P [B, H, N, N] in float64 from the module's weights."""
  w1 = np.asarray(attn.sort_hidden.kernel[...], np.float64)
  b1 = np.asarray(attn.sort_hidden.bias[...], np.float64)
  w2 = np.asarray(attn.sort_out.kernel[...], np.float64)
  real = _blocks(mask, c)
  keys = _blocks(np.where(np.asarray(mask)[..., None, None], k, 0.0), c)
  keys = keys.astype(np.float64)
  b, n = real.shape[:2]
  p = np.zeros((b, H, n, n))
  for bi in range(b):
    count = real[bi].sum(-1)
    idx = np.flatnonzero(count > 0)
    for hi in range(H):
      pooled = keys[bi, idx, :, hi].sum(1) / count[idx, None]
      logits = np.maximum(pooled @ w1 + b1, 0.0) @ w2
      log_p = logits[:, idx] / attn.temperature
      for _ in range(attn.sinkhorn_iters):
        log_p = log_p - _lse(log_p, axis=1)
        log_p = log_p - _lse(log_p, axis=0)
      p[bi, hi, idx[:, None], idx[None, :]] = np.exp(log_p)
  return p


def _attention_reference(q, k, v, mask, p, c=C):
  """One softmax over the own block and the sorted block, by loops."""
  length = q.shape[1]
  real = _blocks(mask, c).astype(np.float64)
  qb, kb, vb = (_blocks(np.asarray(x, np.float64), c) for x in (q, k, v))
  kb = np.where(real[..., None, None] > 0, kb, 0.0)
  vb = np.where(real[..., None, None] > 0, vb, 0.0)
  out = np.zeros_like(qb)
  b, n = real.shape[:2]
  for bi in range(b):
    for hi in range(H):
      for ni in range(n):
        mass = p[bi, hi, ni] @ real[bi]  # [C]
        denom = np.where(mass > 0, mass, 1.0)[:, None]
        weights = p[bi, hi, ni][:, None] * real[bi]  # [M, C]
        k_sorted = np.einsum('mc,mcd->cd', weights, kb[bi, :, :, hi]) / denom
        v_sorted = np.einsum('mc,mcd->cd', weights, vb[bi, :, :, hi]) / denom
        keys = np.concatenate([kb[bi, ni, :, hi], k_sorted])
        values = np.concatenate([vb[bi, ni, :, hi], v_sorted])
        seen = np.concatenate([real[bi, ni] > 0, mass > 0])
        logits = qb[bi, ni, :, hi] @ keys.T / np.sqrt(D)
        logits = np.where(seen, logits, -np.inf)
        if not seen.any():
          continue  # No real key: zeros.
        w = np.exp(logits - logits.max(-1, keepdims=True))
        out[bi, ni, :, hi] = (w / w.sum(-1, keepdims=True)) @ values
  return out.reshape(b, -1, H, D)[:, :length]


def _block_of(length=L, c=C):
  return np.arange(length) // c


def test_sinkhorn_matrix_matches_reference_from_the_weights():
  attn = _create()
  _, k, _ = _inputs()
  mask = _mask()
  got = attn.sinkhorn_matrix(k, mask)
  assert got.shape == (B, H, N, N) and got.dtype == jnp.float32
  expected = _sinkhorn_reference(attn, k, mask)
  # P is not close to uniform (the test could not fail otherwise).
  assert np.ptp(expected) > 0.05
  np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_matches_dense_reference_with_its_sinkhorn_matrix():
  attn = _create()
  q, k, v = _inputs()
  mask = _mask()
  p = _sinkhorn_reference(attn, k, mask)
  expected = _attention_reference(q, k, v, mask, p)
  np.testing.assert_allclose(
    attn(q, k, v, mask=mask), expected, rtol=RTOL, atol=ATOL
  )


def test_identity_permutation_is_block_local_attention():
  attn = _create()
  q, k, v = _inputs()
  mask = _mask()
  block = _block_of()
  allowed_LS = block[:, None] == block[None, :]
  expected = reference.masked_softmax_attention(q, k, v, allowed_LS, mask)
  got = attn.attend(q, k, v, mask, permutation_BHNN=jnp.eye(N)[None, None])
  np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
  # The loop reference agrees: each key twice under one softmax.
  np.testing.assert_allclose(
    _attention_reference(
      q, k, v, mask, np.broadcast_to(np.eye(N), (B, H, N, N))
    ),
    expected,
    rtol=1e-12,
    atol=1e-12,
  )


def test_hard_permutation_is_softmax_over_own_and_permuted_block():
  attn = _create()
  q, k, v = _inputs()
  mask = _mask()
  rng = np.random.default_rng(0)
  perm_BHN = np.stack(
    [np.stack([rng.permutation(N) for _ in range(H)]) for _ in range(B)]
  )
  assert np.any(perm_BHN != np.arange(N))  # Not the identity.
  p_BHNN = np.eye(N)[perm_BHN]  # Row n is one-hot at perm[n].
  block = _block_of()
  target_BHL = perm_BHN[:, :, block]  # The block each query also sees.
  allowed = (block[:, None] == block[None, :])[None, None] | (
    target_BHL[..., :, None] == block[None, None, None, :]
  )
  expected = reference.masked_softmax_attention(q, k, v, allowed, mask)
  got = attn.attend(q, k, v, mask, permutation_BHNN=jnp.asarray(p_BHNN))
  np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_sinkhorn_matrix_is_doubly_stochastic():
  attn = _create()
  _, k, _ = _inputs()
  p = np.asarray(attn.sinkhorn_matrix(k))
  # Each round ends with the column step: columns are exact up to float32
  # rounding. Rows converge linearly, at a rate set by the spread of the
  # logits: at initialization, with unit-scale keys, 8 rounds already reach
  # float32 rounding (~1e-7 measured), so 1e-5 leaves margin.
  np.testing.assert_allclose(p.sum(-2), 1.0, rtol=0, atol=1e-6)
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=0, atol=1e-5)
  assert np.all(p > 0)
  # Keys 5x larger spread the logits: 8 rounds leave ~2e-3 on the rows
  # (measured), 32 reach rounding again.
  wide = np.asarray(attn.sinkhorn_matrix(5.0 * k))
  np.testing.assert_allclose(wide.sum(-2), 1.0, rtol=0, atol=1e-6)
  assert np.abs(wide.sum(-1) - 1.0).max() > 5e-4  # The row check can fail.
  more = np.asarray(_create(sinkhorn_iters=32).sinkhorn_matrix(5.0 * k))
  np.testing.assert_allclose(more.sum(-2), 1.0, rtol=0, atol=1e-6)
  np.testing.assert_allclose(more.sum(-1), 1.0, rtol=0, atol=1e-5)


def test_blocks_without_real_keys_are_not_sorted():
  attn = _create()
  q, k, v = _inputs()
  mask = np.ones((B, L), bool)
  mask[0, C : 2 * C] = False  # Block 1 of batch 0 is all padding.
  p = np.asarray(attn.sinkhorn_matrix(k, jnp.asarray(mask)))
  np.testing.assert_array_equal(p[0, :, 1, :], 0.0)
  np.testing.assert_array_equal(p[0, :, :, 1], 0.0)
  # Doubly stochastic over the real blocks (tolerances as above).
  real = [0, 2, 3]
  np.testing.assert_allclose(p[0][:, real].sum(-2)[:, real], 1.0, atol=1e-6)
  np.testing.assert_allclose(p[0][:, real].sum(-1), 1.0, atol=1e-4)
  # Its queries see no real key: zeros.
  out = np.asarray(attn(q, k, v, mask=jnp.asarray(mask)))
  np.testing.assert_array_equal(out[0, C : 2 * C], 0.0)
  assert np.all(out[0, :C] != 0.0)


def test_padded_keys_change_nothing():
  attn = _create()
  q, k, v = _inputs()
  mask = _mask()
  k2, v2 = _inputs(seed=1)[1:]
  pad = ~mask[:, :, None, None]
  out = attn(q, k, v, mask=mask)
  changed = attn(
    q, jnp.where(pad, 5.0 * k2, k), jnp.where(pad, 100.0 * v2, v), mask=mask
  )
  np.testing.assert_allclose(changed, out, rtol=0, atol=1e-6)
  # Even inf and NaN in the padding stay out (jnp.where, not products).
  bad = attn(
    q, jnp.where(pad, jnp.inf, k), jnp.where(pad, jnp.nan, v), mask=mask
  )
  np.testing.assert_allclose(bad, out, rtol=0, atol=1e-6)


def test_padded_tail_equals_the_shorter_sequence():
  # Two extra blocks of padding: they take no part in the sort.
  attn = _create()
  q, k, v = _inputs(length=L)
  long = L + 2 * C
  extra = _inputs(seed=3, length=long)
  q2, k2, v2 = (
    jnp.concatenate([a, b[:, L:]], axis=1)
    for a, b in zip((q, k, v), extra, strict=True)
  )
  mask = jnp.arange(long)[None] < L
  mask = jnp.broadcast_to(mask, (B, long))
  got = attn(q2, k2, v2, mask=mask)[:, :L]
  np.testing.assert_allclose(got, attn(q, k, v), rtol=RTOL, atol=ATOL)


def test_sequence_shorter_than_a_block_is_dense_attention():
  attn = _create()
  q, k, v = _inputs(length=5)
  mask = jnp.ones((B, 5), bool).at[0, 1].set(False)
  expected = reference.masked_softmax_attention(q, k, v, None, mask)
  np.testing.assert_allclose(
    attn(q, k, v, mask=mask), expected, rtol=RTOL, atol=ATOL
  )


def test_jit_matches_eager():
  attn = _create()
  q, k, v = _inputs()
  mask = _mask()
  eager = attn(q, k, v, mask=mask)
  jitted = nnx.jit(lambda m, q, k, v, mask: m(q, k, v, mask=mask))(
    attn, q, k, v, mask
  )
  # Only float rounding may differ (fusion order).
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


def test_bfloat16_inputs_compute_in_float32():
  attn = _create()
  q, k, v = _inputs(dtype=jnp.bfloat16)
  mask = _mask()
  out = attn(q, k, v, mask=mask)
  assert out.dtype == jnp.bfloat16
  # The same float32 computation on the same (bf16-exact) values, then one
  # rounding to bf16: at most one bf16 rounding step (2**-8 relative) apart.
  full = attn(*(x.astype(jnp.float32) for x in (q, k, v)), mask=mask)
  np.testing.assert_allclose(
    np.asarray(out, np.float32), full, rtol=2**-8, atol=1e-6
  )


def test_every_model_parameter_gets_a_gradient():
  config = test_model.small_config('sinkhorn', 'classifier', pool='cls')
  net = test_model.build(config)
  toks = test_model.tokens(0)

  def loss(net):
    return jnp.sum(net(toks, test_model.padding_mask()) ** 2)

  # Jitted: one compiled program is much faster on a CPU than op by op.
  grads = nnx.jit(nnx.grad(loss))(net)
  paths = []
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    paths.append(jax.tree_util.keystr(path))
    assert np.any(np.asarray(g) != 0), paths[-1]
  # The sort network is among them.
  assert any('sort_out' in p for p in paths)
  assert any('sort_hidden' in p for p in paths)


@pytest.mark.parametrize(
  'opts,words',
  [
    ({'block_size': 0}, 'block_size must be an int >= 1, got 0'),
    ({'max_len': None}, 'max_len is required'),
    ({'max_len': 0}, 'max_len must be an int >= 1, got 0'),
    ({'sinkhorn_iters': 0}, 'sinkhorn_iters must be an int >= 1, got 0'),
    ({'sinkhorn_iters': 2.0}, 'sinkhorn_iters must be an int >= 1, got 2.0'),
    ({'temperature': 0.0}, 'temperature must be a finite number > 0, got 0.0'),
    ({'temperature': -1}, 'temperature must be a finite number > 0, got -1'),
    ({'temperature': float('inf')}, 'got inf'),
    ({'temperature': '1'}, "got '1'"),
  ],
)
def test_bad_options_are_named(opts, words):
  with pytest.raises(ValueError, match=words):
    _create(**opts)


def test_one_block_is_dense_attention():
  # max_len <= block_size: one block, P = [[1]], nothing to sort.
  attn = _create(block_size=32, max_len=29)
  q, k, v = _inputs()
  mask = _mask()
  expected = reference.masked_softmax_attention(q, k, v, None, mask)
  np.testing.assert_allclose(
    attn(q, k, v, mask=mask), expected, rtol=1e-5, atol=1e-5
  )


def test_causal_is_refused():
  with pytest.raises(ValueError, match='cannot be causal.*approximately'):
    _create(causal=True)


def test_too_long_input_and_bad_permutation_are_named():
  attn = _create(max_len=24)
  q, k, v = _inputs()
  with pytest.raises(ValueError, match='length 29 exceeds max_len=24'):
    attn(q, k, v)
  with pytest.raises(ValueError, match='length 29 exceeds max_len=24'):
    attn.sinkhorn_matrix(k)
  attn = _create()
  with pytest.raises(ValueError, match=r'\(2, 2, 4, 4\), got shape \(3, 3\)'):
    attn.attend(q, k, v, permutation_BHNN=jnp.eye(3))


def test_memory_is_linear_in_length():
  # No [.., L, L] value at L = 1024 with blocks of 32, forward or backward.
  length = 1024
  attn = _create(block_size=32, max_len=length)
  q = jnp.zeros((1, length, 1, D))
  jaxpr = jax.make_jaxpr(jax.grad(lambda q: attn(q, q, q).sum()))(q)
  shapes = list(jaxpr_walk.all_shapes(jaxpr.jaxpr))
  assert len(shapes) > 50
  for shape in shapes:
    assert sum(n >= length for n in shape) <= 1, shape
