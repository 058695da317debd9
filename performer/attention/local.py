"""Local attention: contiguous blocks and sliding windows.

Both patterns are computed block-wise: the sequence is cut into blocks of C
queries, each query block gathers its neighbouring key blocks (a static index
table of shape [N, G]), and a masked softmax runs over those G * C keys only.
Memory and time are O(L * W), never O(L^2).

`block_softmax` is the masked block-gather softmax shared with the
block-sparse family (sparse.py).
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from performer.attention import common, decoding, registry

PATTERNS = ('block', 'sliding')
# Sliding windows use blocks of about half the window (fewest wasted key
# slots); much smaller blocks would make the batched einsums too thin.
_MIN_SLIDING_BLOCK = 16
# 2**24 float32 scores (64 MiB) per step: big enough for efficient einsums,
# small enough that window 256 at L = 65536 stays well under 4 GiB.
MAX_SCORES_PER_STEP = 2**24


class KeyGroup(NamedTuple):
  """One set of keys that the query blocks attend to (see `block_softmax`).

  Attributes:
    k: keys in one of three layouts: [B, N, K, H, D], a key set per query
      block; [B, K, H, D], one key set shared by every query block; or, with
      `blocks_NG`, key blocks [B, M, C, H, D] of which query block n gathers
      blocks_NG[n] (K = G * C keys).
    v: values, the same shape as `k`.
    allowed: bool, broadcastable to [B, N, C, K]: True where query c of
      block n may attend to key k of this group.
    blocks_NG: optional int numpy array [N, G], the key blocks each query
      block gathers (static: built at trace time from static shapes).
  """

  k: jax.Array
  v: jax.Array
  allowed: jax.Array
  blocks_NG: np.ndarray | None = None


def block_softmax(
  q_BNCHD: jax.Array,
  groups: Sequence[KeyGroup],
  *,
  max_scores_per_step: int | None = None,
) -> jax.Array:
  """Masked softmax attention of each query block over its own key sets.

  The softmax runs jointly over the keys of all groups, in at least float32.
  A query that is allowed no key at all outputs zeros. Masked keys get
  exactly zero weight, so they change neither the output nor its gradient.

  When the scores would exceed `max_scores_per_step` entries, the query
  blocks are processed a slice at a time (`lax.map` over rematerialised
  steps, each gathering only its own key blocks), so that peak memory stays
  a small multiple of the inputs for any length.

  Args:
    q_BNCHD: queries cut into N blocks of C.
    groups: the key sets; see `KeyGroup`. A key must not be allowed in two
      groups (or twice in one), or it would count twice.
    max_scores_per_step: the most score entries (B*N*H*C*K) computed at
      once; default `MAX_SCORES_PER_STEP`.

  Returns:
    [B, N, C, H, D] outputs in the dtype of `q_BNCHD`.
  """
  groups = [g._replace(allowed=jnp.asarray(g.allowed)) for g in groups]
  if max_scores_per_step is None:
    max_scores_per_step = MAX_SCORES_PER_STEP
  b, n, c, h, _ = q_BNCHD.shape
  scores = sum(b * n * h * c * _num_keys(g) for g in groups)
  steps = min(n, -(-scores // max_scores_per_step))
  if steps <= 1:
    return _block_softmax(q_BNCHD, groups)
  per_step = -(-n // steps)
  steps = -(-n // per_step)

  def split(x_BN):
    # [B, N, ...] -> [steps, B, per_step, ...]; padded blocks are dropped.
    x_BN = common.pad_axis(x_BN, per_step, 1)
    x_BTN = x_BN.reshape(x_BN.shape[0], steps, per_step, *x_BN.shape[2:])
    return jnp.moveaxis(x_BTN, 1, 0)

  def per_block(x):
    return x.ndim >= 2 and x.shape[1] == n

  # Per-query-block tensors are sliced along N; the rest is closed over.
  xs_groups = []
  for g in groups:
    gathered = g.blocks_NG is not None
    k_v = (
      (None, None) if gathered or g.k.ndim == 4 else (split(g.k), split(g.v))
    )
    allowed = split(g.allowed) if per_block(g.allowed) else None
    blocks = split(g.blocks_NG[None])[:, 0] if gathered else None
    xs_groups.append(KeyGroup(*k_v, allowed, blocks))

  @jax.checkpoint
  def step(xs):
    q_step, step_groups = xs
    step_groups = [
      KeyGroup(*(s if s is not None else x for s, x in zip(gs, g, strict=True)))
      for gs, g in zip(step_groups, groups, strict=True)
    ]
    return _block_softmax(q_step, step_groups)

  out_TBNCHD = jax.lax.map(step, (split(q_BNCHD), xs_groups))
  out_BNCHD = jnp.moveaxis(out_TBNCHD, 0, 1).reshape(b, -1, *q_BNCHD.shape[2:])
  return out_BNCHD[:, :n]


def _num_keys(group: KeyGroup) -> int:
  if group.blocks_NG is not None:
    return group.blocks_NG.shape[1] * group.k.shape[2]
  return group.k.shape[-3]


def _gather(group: KeyGroup) -> KeyGroup:
  """Gathers the key blocks of a `blocks_NG` group into [B, N, K, H, D]."""
  if group.blocks_NG is None:
    return group
  n, g = group.blocks_NG.shape
  flat = jnp.reshape(group.blocks_NG, (-1,))
  k, v = (
    jnp.take(x, flat, axis=1, mode='clip').reshape(
      x.shape[0], n, g * x.shape[2], *x.shape[3:]
    )
    for x in (group.k, group.v)
  )
  return KeyGroup(k, v, group.allowed)


def _block_softmax(q_BNCHD: jax.Array, groups: Sequence[KeyGroup]) -> jax.Array:
  """`block_softmax` in one step."""
  groups = [_gather(g) for g in groups]
  acc = common.compute_dtype(q_BNCHD.dtype)
  scale = 1.0 / np.sqrt(q_BNCHD.shape[-1])
  logits = []
  for k, v, allowed, _ in groups:
    if k.shape != v.shape:
      raise ValueError(f'k {k.shape} and v {v.shape} must have equal shapes')
    spec = 'bnchd,bnkhd->bnhck' if k.ndim == 5 else 'bnchd,bkhd->bnhck'
    logits_BNHCK = jnp.einsum(spec, q_BNCHD, k, preferred_element_type=acc)
    allowed_BN1CK = jnp.expand_dims(allowed, 2)
    logits.append(jnp.where(allowed_BN1CK, logits_BNHCK * scale, -jnp.inf))
  max_BNHC = logits[0].max(-1)
  for logits_BNHCK in logits[1:]:
    max_BNHC = jnp.maximum(max_BNHC, logits_BNHCK.max(-1))
  # Softmax is shift invariant, so the shift needs no gradient; a query with
  # no allowed key has max -inf and gets shift 0 (weights exp(-inf) = 0).
  max_BNHC = jax.lax.stop_gradient(
    jnp.where(jnp.isfinite(max_BNHC), max_BNHC, 0.0)
  )
  num_BNCHD, denom_BNHC = 0.0, 0.0
  for (k, v, _, _), logits_BNHCK in zip(groups, logits, strict=True):
    weights_BNHCK = jnp.exp(logits_BNHCK - max_BNHC[..., None])
    denom_BNHC = denom_BNHC + weights_BNHCK.sum(-1)
    spec = 'bnhck,bnkhd->bnchd' if k.ndim == 5 else 'bnhck,bkhd->bnchd'
    # Normalising after the value product divides C*D numbers, not C*K.
    num_BNCHD = num_BNCHD + jnp.einsum(
      spec, weights_BNHCK.astype(v.dtype), v, preferred_element_type=acc
    )
  denom_BNCH1 = jnp.swapaxes(denom_BNHC, 2, 3)[..., None]
  out_BNCHD = num_BNCHD / jnp.where(denom_BNCH1 > 0, denom_BNCH1, 1.0)
  return out_BNCHD.astype(q_BNCHD.dtype)


def to_blocks(x_BL: jax.Array, block: int) -> jax.Array:
  """Pads axis 1 to a multiple of `block` and splits it.

  Args:
    x_BL: [B, L, ...]; bool masks pad with False (masked).
    block: the block size C.

  Returns:
    [B, N, C, ...] with N = ceil(L / C).
  """
  x_BL = common.pad_axis(x_BL, block, 1)
  b, length = x_BL.shape[:2]
  return x_BL.reshape(b, length // block, block, *x_BL.shape[2:])


def gathered_key_mask(
  key_mask_BNC: jax.Array, blocks_NG: np.ndarray, valid_NG: np.ndarray
) -> jax.Array:
  """The key-padding mask of gathered key blocks, [B, N, G * C].

  Args:
    key_mask_BNC: bool key-padding mask cut into blocks.
    blocks_NG: the key blocks each query block gathers.
    valid_NG: False for gathered slots that must be ignored (beyond the
      sequence, or duplicates of an earlier slot).
  """
  b, _, c = key_mask_BNC.shape
  n, g = blocks_NG.shape
  mask_BNGC = jnp.take(key_mask_BNC, blocks_NG.reshape(-1), axis=1)
  mask_BNGC = mask_BNGC.reshape(b, n, g, c) & valid_NG[None, :, :, None]
  return mask_BNGC.reshape(b, n, g * c)


class LocalLayout(NamedTuple):
  """How a local pattern maps onto blocks, for one sequence length.

  Attributes:
    block: queries per block, C.
    blocks_NG: int [N, G], the key blocks each query block gathers: blocks
      n - before, ..., n + after, clipped to the sequence.
    valid_NG: bool [N, G], False for slots beyond either end of the sequence
      (their clipped block is masked out).
    allowed_CK: bool [C, K], K = G * C: the pattern between a query's offset
      in its block and the gathered key slots.
  """

  block: int
  blocks_NG: np.ndarray
  valid_NG: np.ndarray
  allowed_CK: np.ndarray


def local_layout(
  pattern: str, window: int, causal: bool, length: int
) -> LocalLayout:
  """The block layout of a local pattern for sequences of `length`."""
  if pattern == 'block':
    # One block covering the whole sequence behaves like blocks of `window`.
    block = min(window, length)
    before, after = 1, 0 if causal else 1
  else:
    # Blocks of about half the window waste the fewest key slots.
    block = min(max(-(-window // 2), _MIN_SLIDING_BLOCK), length)
    reach_back = window - 1 if causal else window // 2
    reach_ahead = 0 if causal else window // 2
    before, after = -(-reach_back // block), -(-reach_ahead // block)
  num_blocks = -(-length // block)
  before, after = min(before, num_blocks - 1), min(after, num_blocks - 1)
  wanted_NG = np.arange(num_blocks)[:, None] + np.arange(-before, after + 1)
  valid_NG = (wanted_NG >= 0) & (wanted_NG < num_blocks)
  blocks_NG = np.clip(wanted_NG, 0, num_blocks - 1)
  # delta = i - j for query offset c and key slot k.
  query_C1 = np.arange(block)[:, None]
  key_1K = np.arange(wanted_NG.shape[1] * block)[None, :] - before * block
  delta_CK = query_C1 - key_1K
  if pattern == 'block':
    # The gathered blocks are exactly the visible ones; causal adds j <= i.
    allowed_CK = delta_CK >= 0 if causal else np.ones_like(delta_CK, bool)
  elif causal:
    allowed_CK = (delta_CK >= 0) & (delta_CK < window)
  else:
    allowed_CK = np.abs(delta_CK) <= window // 2
  return LocalLayout(block, blocks_NG, valid_NG, allowed_CK)


@registry.register('local')
class LocalAttention(decoding.KVCacheDecoding, nnx.Module):
  """Local softmax attention, O(L * window) time and memory.

  Patterns (i = query position, j = key position, W = `window`):

  - 'block': the sequence is cut into contiguous blocks of W positions
    (block b holds positions [b*W, (b+1)*W)). Causal: a query attends to
    its own block and the previous one, keys j <= i only. Bidirectional: to
    the previous, its own and the next block.
  - 'sliding': a window around each query. Causal: keys with
    i - W < j <= i (W keys including i itself). Bidirectional: keys with
    |i - j| <= W // 2 (W + 1 keys for even W).

  Any length works (blocks are padded internally; padded positions are masked
  keys and their outputs are dropped). Padded keys (mask False) get zero
  weight; a query that sees no real key outputs zeros. The softmax runs in at
  least float32; the output has the dtype of q.

  Decoding (see `decoding`) keeps a ring buffer of the positions a query can
  still see: the last W ('sliding') or 2W ('block': the previous and the
  current block) positions, whatever the length.
  """

  ring = True  # For `decoding.KVCacheDecoding`.

  def __init__(
    self,
    *,
    head_dim: int,
    causal: bool,
    rngs: nnx.Rngs,
    pattern: str = 'block',
    window: int = 256,
  ):
    """Builds the module.

    Args:
      head_dim: size of each head.
      causal: whether position i only attends to positions <= i.
      rngs: unused; kept for the common interface.
      pattern: 'block' or 'sliding' (see the class docstring).
      window: the block length ('block') or window width ('sliding').

    Raises:
      ValueError: for an unknown pattern or a window that is not an int >= 1.
    """
    del rngs
    self.head_dim = head_dim
    self.causal = causal
    self.pattern = common.check_choice('pattern', pattern, PATTERNS)
    self.window = common.check_positive_int('window', window)

  def pattern_mask(self, length: int) -> np.ndarray:
    """The dense bool [L, L] pattern (True = query i may see key j).

    Read off the same block layout that `__call__` uses, for tests and
    figures; O(L^2), so small lengths only.
    """
    layout = local_layout(self.pattern, self.window, self.causal, length)
    return _dense_pattern(layout, length)

  def __call__(
    self,
    q_BLHD: jax.Array,
    k_BSHD: jax.Array,
    v_BSHD: jax.Array,
    mask: jax.Array | None = None,
  ) -> jax.Array:
    """Attends each query to its local keys.

    Args:
      q_BLHD: queries [batch, length, heads, head_dim].
      k_BSHD: keys, same shape (self-attention: S == L).
      v_BSHD: values, same shape.
      mask: optional bool [batch, length]; False marks padded keys.

    Returns:
      [batch, length, heads, head_dim] in the dtype of q.
    """
    common.check_inputs(q_BLHD, k_BSHD, v_BSHD, mask, self.head_dim)
    b, length, h, d = q_BLHD.shape
    layout = local_layout(self.pattern, self.window, self.causal, length)
    c = layout.block
    key_mask_BS = common.key_mask_or_ones(mask, b, length)
    # Zeroed padded values keep even inf/NaN padding out of 0 * v.
    v_BSHD = jnp.where(key_mask_BS[:, :, None, None], v_BSHD, 0)
    key_mask_BNK = gathered_key_mask(
      to_blocks(key_mask_BS, c), layout.blocks_NG, layout.valid_NG
    )
    allowed_BNCK = key_mask_BNK[:, :, None, :] & layout.allowed_CK
    group = KeyGroup(
      to_blocks(k_BSHD, c), to_blocks(v_BSHD, c), allowed_BNCK, layout.blocks_NG
    )
    out_BNCHD = block_softmax(to_blocks(q_BLHD, c), [group])
    return out_BNCHD.reshape(b, -1, h, d)[:, :length]

  def _cache_slots(self, max_len: int) -> int:
    del max_len  # Constant memory.
    return self.window if self.pattern == 'sliding' else 2 * self.window

  def _allowed_slots(self, cache: decoding.Cache) -> jax.Array:
    i = cache['index'] - 1
    pos_T = decoding.slot_positions(cache)
    w = self.window
    if self.pattern == 'sliding':
      return pos_T > i - w
    # The query's block and the previous one.
    return pos_T >= (i // w - 1) * w


def _dense_pattern(layout: LocalLayout, length: int) -> np.ndarray:
  c = layout.block
  _, g = layout.blocks_NG.shape
  i_L = np.arange(length)
  block_L, offset_L = i_L // c, i_L % c
  allowed_LL = np.zeros((length, length), bool)
  for k in range(g * c):
    slot = k // c
    j_L = layout.blocks_NG[block_L, slot] * c + k % c
    ok_L = layout.allowed_CK[offset_L, k] & layout.valid_NG[block_L, slot]
    ok_L &= j_L < length
    allowed_LL[i_L[ok_L], j_L[ok_L]] = True
  return allowed_LL
