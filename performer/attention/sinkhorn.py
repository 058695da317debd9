"""Sparse Sinkhorn attention (Tay et al. 2020, "Sparse Sinkhorn Attention").

The sequence is cut into N contiguous blocks of C = `block_size` positions.
A learned sort network looks at each block's pooled keys and proposes, for
every block n, which block m it should attend to; Sinkhorn balancing turns
these logits into a soft permutation of the blocks, and each query block
attends to its own block and to its soft-sorted block under one softmax:

  pooled_n = mean of the real keys of block n                   [H, N, D]
  R[n, :]  = relu(pooled_n W1 + b1) W2, its first N columns     [H, N, N]
  P        = Sinkhorn(R / temperature), `sinkhorn_iters` rounds [H, N, N]
  K_s[n]   = sum_m P[n, m] K[m],  V_s[n] = sum_m P[n, m] V[m]   [H, N, C, D]
  out_i    = softmax([q_i K[n]^T, q_i K_s[n]^T] / sqrt(D)) [V[n]; V_s[n]]

for a query i of block n. Sinkhorn balancing runs in log space: starting
from R / temperature, each round subtracts the logsumexp of every row, then
of every column; P is the exponential. After a round the columns sum to 1
exactly (up to rounding) and the rows approximately; the rows converge
linearly, the faster the smaller the spread of R / temperature.

- The sort network (the paper's two-layer "SortNet") is shared by all heads:
  each head feeds it its own pooled keys, so heads still sort differently,
  and its size (D x D + D x max_blocks) needs no `num_heads`. It outputs
  max_blocks = ceil(max_len / block_size) logits per block, of which a
  sequence of N blocks uses the first N. Its output layer has no bias: a
  per-column constant is a diagonal scaling that Sinkhorn balancing divides
  out (exactly in the limit), so such a bias would barely be trained.
- With P the identity the sorted block is the own block, every key appears
  twice under the softmax, and the result is plain block-local attention.
- Padding. Padded keys (mask False) and the positions that pad the sequence
  to a multiple of C are removed with `jnp.where` before anything else: they
  count in no pooled key, their keys and values are zeroed before mixing,
  and they get zero weight in the own block. A block with no real key takes
  no part in the sort (its rows and columns of P are zero, and P is doubly
  stochastic over the real blocks), so a padded tail gives the same result
  as the shorter sequence. In the sorted block, slot j mixes the real keys
  in slot j of the blocks: with w[n, j] = sum_m P[n, m] mask[m, j] the mass
  of real keys there, K_s[n, j] = sum_m P[n, m] mask[m, j] K[m, j] / w[n, j]
  (the same for V), and the slot is masked when w[n, j] = 0. For a hard
  permutation this is exactly the permuted block with its own mask; for a
  soft P, a slot that is padding in some blocks is the mean of the real
  keys only, not pulled towards zero by the padding.
- A query whose own and sorted blocks hold no real key outputs zeros.
- Not causal: the pooled key of a block includes its later positions, and
  every column normalisation sums over all query blocks, later ones
  included, so the sorted block of block n depends on the future. The
  paper's causal Sinkhorn balancing is approximately causal only, so
  causal=True is refused. There is no Gumbel noise (the paper's optional
  Gumbel-Sinkhorn sampling during training): the interface passes no
  random stream at call time, and the balancing is deterministic.

Cost: the attention is O(L C D) time and O(L C) memory. Sorting mixes N
blocks into each of N blocks, O(N^2 C D) = O(L^2 D / C) time (the paper's
cost too) but only O(L D) memory; P and the sort logits are N x N and
N x max_blocks = O(L^2 / C^2). Nothing is L x L.

Tensor names: B batch, L length, H heads, D head dim, N blocks, M blocks
(the mixed-from axis of P), C block size, X max_blocks, E sort-network
hidden width (= D).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from performer.attention import common, local, registry


@registry.register('sinkhorn')
class SinkhornAttention(nnx.Module):
  """Block-local attention plus attention to a learned soft-sorted block.

  Bidirectional only. The model fills `max_len` with the longest sequence
  its attention sees; standalone, give it.

  Example:
    attn = attention.create('sinkhorn', head_dim=64, causal=False,
                            rngs=nnx.Rngs(0), block_size=64, max_len=4096)
    out_BLHD = attn(q_BLHD, k_BLHD, v_BLHD, mask=mask_BL)
  """

  def __init__(
    self,
    *,
    head_dim: int,
    causal: bool,
    rngs: nnx.Rngs,
    block_size: int = 64,
    max_len: int | None = None,
    sinkhorn_iters: int = 8,
    temperature: float = 0.75,
  ):
    """Builds the module.

    Args:
      head_dim: D, size of each head.
      causal: must be False (see the module docstring).
      rngs: initialises the sort network (`rngs.params()`).
      block_size: C, positions per block; a query attends to 2C keys. A
        sequence shorter than C is one block.
      max_len: the longest sequence; the sort network outputs
        ceil(max_len / block_size) block logits. Required. With
        max_len <= block_size every sequence is one block: P = [[1]],
        nothing is sorted, the result is dense attention and the sort
        network is unused (allowed, so that a model config whose other
        variants' options do not fit its length is still valid).
      sinkhorn_iters: rounds of row and column normalisation, >= 1.
      temperature: the sort logits are divided by it before balancing; a
        positive number (smaller: closer to a hard permutation, and slower
        to balance).

    Raises:
      ValueError: causal=True, a missing max_len, or an option out of range.
    """
    if causal:
      raise ValueError(
        'sinkhorn cannot be causal (got causal=True): each pooled block key '
        'includes the later positions of its block, and the column '
        'normalisation of Sinkhorn balancing sums over all query blocks, so '
        'the sorted block of an early block depends on later positions; the '
        "paper's causal Sinkhorn balancing is only approximately causal. "
        'Use causal=False'
      )
    common.required_size(
      'sinkhorn',
      'max_len',
      max_len,
      'the sort network outputs ceil(max_len / block_size) block logits',
    )
    self.head_dim = head_dim
    self.causal = causal
    self.block_size = common.check_positive_int('block_size', block_size)
    self.max_len = common.check_positive_int('max_len', max_len)
    self.sinkhorn_iters = common.check_positive_int(
      'sinkhorn_iters', sinkhorn_iters
    )
    if (
      isinstance(temperature, bool)
      or not isinstance(temperature, int | float)
      or not math.isfinite(temperature)
      or temperature <= 0
    ):
      raise ValueError(
        f'temperature must be a finite number > 0, got {temperature!r}'
      )
    self.temperature = float(temperature)
    self.max_blocks = -(-max_len // block_size)
    self.sort_hidden = nnx.Linear(head_dim, head_dim, rngs=rngs)
    # No bias: Sinkhorn balancing divides out per-column constants.
    self.sort_out = nnx.Linear(
      head_dim, self.max_blocks, use_bias=False, rngs=rngs
    )

  def __call__(
    self,
    q_BLHD: jax.Array,
    k_BLHD: jax.Array,
    v_BLHD: jax.Array,
    mask: jax.Array | None = None,
  ) -> jax.Array:
    """Sparse Sinkhorn attention.

    Args:
      q_BLHD: queries [batch, length, heads, head_dim], length <= max_len.
      k_BLHD: keys, same shape (self-attention).
      v_BLHD: values, same shape.
      mask: optional bool [batch, length]; False marks padded keys.

    Returns:
      [batch, length, heads, head_dim] in the dtype of q.

    Raises:
      ValueError: for mismatched inputs or length > max_len.
    """
    return self.attend(q_BLHD, k_BLHD, v_BLHD, mask)

  def attend(
    self,
    q_BLHD: jax.Array,
    k_BLHD: jax.Array,
    v_BLHD: jax.Array,
    mask: jax.Array | None = None,
    permutation_BHNN: jax.Array | None = None,
  ) -> jax.Array:
    """`__call__`, optionally with a given block permutation instead of P.

    Args:
      q_BLHD: queries [batch, length, heads, head_dim], length <= max_len.
      k_BLHD: keys, same shape.
      v_BLHD: values, same shape.
      mask: optional bool [batch, length]; False marks padded keys.
      permutation_BHNN: optional matrix, broadcastable to [batch, heads, N,
        N] (N = `num_blocks(length)`), used as P instead of the Sinkhorn
        matrix: the sorted block n is sum_m P[n, m] block m. For tests and
        analysis (the identity gives block-local attention).

    Returns:
      [batch, length, heads, head_dim] in the dtype of q.

    Raises:
      ValueError: for mismatched inputs, length > max_len, or a
        permutation that does not broadcast to [batch, heads, N, N].
    """
    common.check_inputs(q_BLHD, k_BLHD, v_BLHD, mask, self.head_dim)
    self._check_length(q_BLHD.shape[1])
    dtype = q_BLHD.dtype
    acc = common.compute_dtype(dtype)
    b, length, h, d = q_BLHD.shape
    c = self._block(length)
    real_BNC, k_BNCHD, v_BNCHD = self._blocks(k_BLHD, v_BLHD, mask, acc)
    n = real_BNC.shape[1]
    if permutation_BHNN is None:
      p_BHNM = self._sinkhorn(k_BNCHD, real_BNC)
    else:
      p_BHNM = jnp.asarray(permutation_BHNN, acc)
      if p_BHNM.ndim != 4 or not all(
        x in (1, y) for x, y in zip(p_BHNM.shape, (b, h, n, n), strict=True)
      ):
        raise ValueError(
          f'permutation_BHNN must broadcast to [batch, heads, N, N] = '
          f'{(b, h, n, n)}, got shape {tuple(p_BHNM.shape)}'
        )
      p_BHNM = jnp.broadcast_to(p_BHNM, (b, h, n, n))

    # The mass of real keys in each slot of each sorted block; the slot
    # mixes real keys only (padding is zeroed), renormalised by that mass.
    real_BMC = real_BNC.astype(acc)
    w_BHNC = jnp.einsum('bhnm,bmc->bhnc', p_BHNM, real_BMC)
    sorted_real_BHNC = w_BHNC > 0
    w_BNCH1 = jnp.transpose(w_BHNC, (0, 2, 3, 1))[..., None]
    w_BNCH1 = jnp.where(w_BNCH1 > 0, w_BNCH1, 1.0)
    ks_BNCHD, vs_BNCHD = (
      jnp.einsum('bhnm,bmchd->bnchd', p_BHNM, x) / w_BNCH1
      for x in (k_BNCHD, v_BNCHD)
    )

    # One key set per (batch, head): the sorted block differs by head.
    def fold(x_BNCHD):
      x_BHNCD = jnp.transpose(x_BNCHD, (0, 3, 1, 2, 4))
      return x_BHNCD.reshape(b * h, n, c, 1, d)

    own_allowed = jnp.broadcast_to(real_BNC[:, None], (b, h, n, c))
    own_allowed = own_allowed.reshape(b * h, n, 1, c)
    sorted_allowed = sorted_real_BHNC.reshape(b * h, n, 1, c)
    q_BNCHD = local.to_blocks(q_BLHD.astype(acc), c)
    # With P the identity both groups hold the same keys: each key counts
    # twice in numerator and denominator, i.e. block-local attention.
    out = local.block_softmax(
      fold(q_BNCHD),
      [
        local.KeyGroup(fold(k_BNCHD), fold(v_BNCHD), own_allowed),
        local.KeyGroup(fold(ks_BNCHD), fold(vs_BNCHD), sorted_allowed),
      ],
    )
    out_BHLD = out.reshape(b, h, n * c, d)[:, :, :length]
    return jnp.swapaxes(out_BHLD, 1, 2).astype(dtype)

  def num_blocks(self, length: int) -> int:
    """N, the number of blocks of a sequence of `length` positions."""
    return -(-length // self._block(length))

  def sinkhorn_matrix(
    self, k_BLHD: jax.Array, mask: jax.Array | None = None
  ) -> jax.Array:
    """The soft block permutation P that `__call__` uses.

    Args:
      k_BLHD: keys [batch, length, heads, head_dim], length <= max_len.
      mask: optional bool [batch, length]; False marks padded keys.

    Returns:
      P, [batch, heads, N, N] in at least float32: row n holds the weights
      of the blocks that sorted block n mixes. Over the blocks that hold a
      real key it is doubly stochastic (after `sinkhorn_iters` rounds:
      columns exactly, rows approximately); rows and columns of blocks
      without a real key are zero.
    """
    common.check_inputs(k_BLHD, k_BLHD, k_BLHD, mask, self.head_dim)
    self._check_length(k_BLHD.shape[1])
    acc = common.compute_dtype(k_BLHD.dtype)
    real_BNC, k_BNCHD, _ = self._blocks(k_BLHD, k_BLHD, mask, acc)
    return self._sinkhorn(k_BNCHD, real_BNC)

  def _check_length(self, length: int) -> None:
    if length > self.max_len:
      raise ValueError(
        f'sequence length {length} exceeds max_len={self.max_len} of the '
        'sinkhorn sort network; build the module with max_len >= the '
        'longest sequence'
      )

  def _block(self, length: int) -> int:
    # A sequence shorter than a block is one block, unpadded.
    return min(self.block_size, length)

  def _blocks(self, k_BLHD, v_BLHD, mask, acc):
    """The real-key mask and the zero-padded keys and values, in blocks."""
    b, length = k_BLHD.shape[:2]
    c = self._block(length)
    real_BL = common.key_mask_or_ones(mask, b, length)
    real_BL11 = real_BL[:, :, None, None]
    # where, not a product: inf or NaN in padding must not leak.
    k_BLHD = jnp.where(real_BL11, k_BLHD.astype(acc), 0.0)
    v_BLHD = jnp.where(real_BL11, v_BLHD.astype(acc), 0.0)
    return (
      local.to_blocks(real_BL, c),
      local.to_blocks(k_BLHD, c),
      local.to_blocks(v_BLHD, c),
    )

  def _sinkhorn(self, k_BNCHD: jax.Array, real_BNC: jax.Array) -> jax.Array:
    """P [B, H, N, N] from zero-padded key blocks and their real mask."""
    n = k_BNCHD.shape[1]
    count_BN = jnp.sum(real_BNC, axis=-1)
    # The padded keys are zero: the mean of the real ones (0 if none).
    count_BN11 = jnp.maximum(count_BN, 1)[:, :, None, None]
    pooled_BNHD = jnp.sum(k_BNCHD, axis=2) / count_BN11.astype(k_BNCHD.dtype)
    hidden_BHNE = jax.nn.relu(self.sort_hidden(jnp.swapaxes(pooled_BNHD, 1, 2)))
    logits_BHNM = self.sort_out(hidden_BHNE)[..., :n]
    # Only blocks with real keys are sorted, among themselves.
    block_real_BN = count_BN > 0
    valid_B1NM = block_real_BN[:, None, :, None] & block_real_BN[:, None, None]
    log_p_BHNM = jnp.where(valid_B1NM, logits_BHNM / self.temperature, 0.0)

    def balance(_, log_p_BHNM):
      log_p_BHNM = _log_normalize(log_p_BHNM, valid_B1NM, axis=-1)
      return _log_normalize(log_p_BHNM, valid_B1NM, axis=-2)

    log_p_BHNM = jax.lax.fori_loop(0, self.sinkhorn_iters, balance, log_p_BHNM)
    return jnp.where(valid_B1NM, jnp.exp(log_p_BHNM), 0.0)


def _log_normalize(x: jax.Array, valid: jax.Array, axis: int) -> jax.Array:
  """x minus the logsumexp of its `valid` entries along `axis`.

  Invalid entries become 0 (finite, so that no inf or NaN reaches a
  gradient); a line without a valid entry stays 0.
  """
  top = jnp.max(jnp.where(valid, x, -jnp.inf), axis=axis, keepdims=True)
  # The shift cancels in the value, so it needs no gradient.
  top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
  total = jnp.sum(
    jnp.exp(jnp.where(valid, x - top, -jnp.inf)), axis=axis, keepdims=True
  )
  lse = top + jnp.log(jnp.where(total > 0, total, 1.0))
  return jnp.where(valid, x - lse, 0.0)
