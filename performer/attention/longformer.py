"""Longformer attention (Beltagy et al. 2020, "Longformer: The
Long-Document Transformer"): a sliding window plus global tokens.

Notation: i is the query position, j the key position, W = `window`, and
P = `global_positions`, the global tokens (the first token by default, so
that a CLS token pools the whole sequence).

- A non-global query attends to its window, exactly the keys of local.py's
  'sliding' pattern (bidirectional |i - j| <= W // 2; causal
  i - W < j <= i), and to every global key (causal: those with j <= i).
- A global query attends to every key (causal: j <= i), so every key is
  seen by the global queries.
- One softmax per query runs over the union: a global key that is also in
  the query's window counts once.

Computation, O(L * (W + |P|)) time and memory, never an L x L tensor or
mask: the sequence is cut into blocks as for local.py's sliding pattern
and `local.block_softmax` runs over two key groups, the gathered window
blocks and the global keys shared by every block, the latter masked where
the window already holds them. The global queries' rows are a separate
dense softmax over all keys (|P| x L scores) scattered over the rows that
the blocks computed for them.

The paper's dilated windows and its separate projections for the global
attention are not included: the global attention reuses q, k and v.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from performer.attention import common, decoding, local, registry

# Global queries are processed in blocks of this many rows, so that
# `block_softmax` can step over them when there are many globals and long
# sequences.
_GLOBAL_QUERY_BLOCK = 16


def check_global_positions(positions) -> tuple[int, ...]:
  """The validated global positions, sorted.

  Raises:
    ValueError: unless `positions` is a tuple (or list) of distinct ints
      >= 0.
  """
  if not isinstance(positions, tuple | list):
    raise ValueError(
      f'global_positions must be a tuple of distinct ints >= 0, got '
      f'{positions!r}'
    )
  for p in positions:
    if isinstance(p, bool) or not isinstance(p, int | np.integer) or p < 0:
      raise ValueError(
        f'global_positions must hold ints >= 0, got {p!r} in '
        f'global_positions={positions!r}'
      )
  positions = [int(p) for p in positions]
  repeated = sorted({p for p in positions if positions.count(p) > 1})
  if repeated:
    raise ValueError(
      f'global_positions must be distinct, got {repeated} more than once in '
      f'global_positions={tuple(positions)!r}'
    )
  return tuple(sorted(positions))


@functools.lru_cache(maxsize=64)
def longformer_layout(
  window: int, causal: bool, length: int, positions: tuple[int, ...]
) -> tuple[local.LocalLayout, np.ndarray]:
  """The sliding layout and which global keys each query adds to it.

  Args:
    window: W.
    causal: whether keys j > i are hidden.
    length: the sequence length L.
    positions: the global positions, sorted, all < L.

  Returns:
    `local.local_layout('sliding', ...)` for L, and bool [N, C, P]: True
    where query c of block n sees global key p through the global group,
    i.e. p is not already among the query's window keys (read off that
    same layout, so no key can count twice or be missed) and, when causal,
    p <= i.
  """
  layout = local.local_layout('sliding', window, causal, length)
  c = layout.block
  n, slots = layout.blocks_NG.shape
  pos_P = np.asarray(positions, np.int64)
  # Key p sits at offset p % C of block p // C; query (n, c) has it in its
  # window when some valid gathered slot holds that block and the layout
  # allows that offset.
  holds_NPS = (
    layout.blocks_NG[:, None, :] == (pos_P // c)[None, :, None]
  ) & layout.valid_NG[:, None, :]
  sees_CSP = layout.allowed_CK.reshape(c, slots, c)[:, :, pos_P % c]
  in_window_NCP = np.any(
    holds_NPS[:, None] & np.swapaxes(sees_CSP, 1, 2)[None], axis=-1
  )
  extra_NCP = ~in_window_NCP
  if causal:
    query_NC1 = np.arange(n * c).reshape(n, c, 1)
    extra_NCP &= pos_P <= query_NC1
  return layout, extra_NCP


@registry.register('longformer')
class LongformerAttention(decoding.KVCacheDecoding, nnx.Module):
  """Sliding-window attention plus global tokens, O(L * (W + |P|)).

  See the module docstring for the pattern. Any length works (blocks are
  padded internally; padded positions are masked keys and their outputs are
  dropped). Padded keys (mask False) get zero weight for every query, global
  or not; a query that sees no real key outputs zeros. The softmax runs in
  at least float32; the output has the dtype of q.

  Global positions must lie inside the sequence: bidirectional attention
  raises ValueError for one >= L. Causal attention ignores them instead (a
  global token at p >= L would only be seen by queries >= p): the outputs
  over a prefix must be the prefix of the outputs, and a prompt shorter
  than the last global position must prefill.

  Decoding (see `decoding`) keeps a full KV cache of `max_len` positions
  (the global keys stay visible to every later query, and a global query
  sees every earlier key).

  Example:
    attn = attention.create('longformer', head_dim=64, causal=False,
                            rngs=nnx.Rngs(0), window=256,
                            global_positions=(0,))
  """

  def __init__(
    self,
    *,
    head_dim: int,
    causal: bool,
    rngs: nnx.Rngs,
    window: int = 512,
    global_positions: tuple[int, ...] = (0,),
  ):
    """Builds the module.

    Args:
      head_dim: size of each head.
      causal: whether position i only attends to positions <= i.
      rngs: unused (no parameters); kept for the common interface.
      window: W, the sliding window as in local.py's 'sliding' pattern:
        keys |i - j| <= W // 2, or i - W < j <= i when causal.
      global_positions: the positions of the global tokens (distinct ints
        >= 0; stored sorted). () gives plain sliding-window attention.

    Raises:
      ValueError: for a window that is not an int >= 1 or bad positions.
    """
    del rngs
    self.head_dim = head_dim
    self.causal = causal
    self.window = common.check_positive_int('window', window)
    self.global_positions = check_global_positions(global_positions)

  def positions_for(self, length: int) -> tuple[int, ...]:
    """The global positions that apply to sequences of `length`.

    Raises:
      ValueError: bidirectional, and a global position >= `length`.
    """
    beyond = [p for p in self.global_positions if p >= length]
    if beyond and not self.causal:
      raise ValueError(
        f'global position {beyond[0]} is outside a sequence of length '
        f'{length} (global_positions={self.global_positions}); every global '
        f'position must be < {length}'
      )
    return tuple(p for p in self.global_positions if p < length)

  def __call__(
    self,
    q_BLHD: jax.Array,
    k_BSHD: jax.Array,
    v_BSHD: jax.Array,
    mask: jax.Array | None = None,
  ) -> jax.Array:
    """Attends each query to its window and the global tokens.

    Args:
      q_BLHD: queries [batch, length, heads, head_dim].
      k_BSHD: keys, same shape (self-attention: S == L).
      v_BSHD: values, same shape.
      mask: optional bool [batch, length]; False marks padded keys.

    Returns:
      [batch, length, heads, head_dim] in the dtype of q.

    Raises:
      ValueError: for inputs that do not fit, or (bidirectional) a global
        position >= length.
    """
    common.check_inputs(q_BLHD, k_BSHD, v_BSHD, mask, self.head_dim)
    b, length, h, d = q_BLHD.shape
    positions = self.positions_for(length)
    layout, extra_NCP = longformer_layout(
      self.window, self.causal, length, positions
    )
    c = layout.block
    key_mask_BS = common.key_mask_or_ones(mask, b, length)
    # Zeroed padded values keep even inf/NaN padding out of 0 * v.
    v_BSHD = jnp.where(key_mask_BS[:, :, None, None], v_BSHD, 0)
    key_mask_BNK = local.gathered_key_mask(
      local.to_blocks(key_mask_BS, c), layout.blocks_NG, layout.valid_NG
    )
    groups = [
      local.KeyGroup(
        local.to_blocks(k_BSHD, c),
        local.to_blocks(v_BSHD, c),
        key_mask_BNK[:, :, None, :] & layout.allowed_CK,
        layout.blocks_NG,
      )
    ]
    pos_P = np.asarray(positions, np.int32)
    if positions:
      # One key set shared by every query block; `extra_NCP` leaves out the
      # global keys a query's window already holds.
      groups.append(
        local.KeyGroup(
          k_BSHD[:, pos_P],
          v_BSHD[:, pos_P],
          key_mask_BS[:, None, None, pos_P] & extra_NCP,
        )
      )
    out_BNCHD = local.block_softmax(local.to_blocks(q_BLHD, c), groups)
    out_BLHD = out_BNCHD.reshape(b, -1, h, d)[:, :length]
    if not positions:
      return out_BLHD
    # The blocks computed the global queries' rows like any other; replace
    # them (their cotangent is then zero, so they add no gradient).
    out_BPHD = self._global_rows(
      q_BLHD[:, pos_P], k_BSHD, v_BSHD, key_mask_BS, pos_P
    )
    return out_BLHD.at[:, pos_P].set(out_BPHD)

  def _global_rows(self, q_BPHD, k_BSHD, v_BSHD, key_mask_BS, pos_P):
    """Global queries over every key (j <= i when causal): [B, P, H, D]."""
    b, p, h, d = q_BPHD.shape
    length = k_BSHD.shape[1]
    c = min(p, _GLOBAL_QUERY_BLOCK)
    allowed = key_mask_BS[:, None, None, :]
    if self.causal:
      # Padded query rows of the last block (position 0) are dropped.
      pos_NC = np.pad(pos_P, (0, -p % c)).reshape(-1, c)
      allowed = allowed & (np.arange(length) <= pos_NC[..., None])
    group = local.KeyGroup(k_BSHD, v_BSHD, allowed)
    out_BNCHD = local.block_softmax(local.to_blocks(q_BPHD, c), [group])
    return out_BNCHD.reshape(b, -1, h, d)[:, :p]

  def _allowed_slots(self, cache: decoding.Cache) -> jax.Array:
    # A full cache: slot = position, and slots after the query are empty.
    i = cache['index'] - 1
    t = cache['valid'].shape[1]
    pos_T = jnp.arange(t)
    is_global_T = np.zeros(t, bool)
    is_global_T[[p for p in self.global_positions if p < t]] = True
    is_global_T = jnp.asarray(is_global_T)
    seen_T = (pos_T > i - self.window) | is_global_T | is_global_T[i]
    return seen_T & (pos_T <= i)
