"""Block-sparse attention: the Sparse Transformer's fixed pattern and BigBird.

Both patterns are computed block-wise with `local.block_softmax`: each query
block gathers its key blocks through a static index table [N, G] (built with
numpy at trace time from static shapes), or attends to one key set shared by
all blocks (the fixed pattern's summary columns). No L x L mask or score
tensor is ever formed. All heads share one pattern.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from performer.attention import common, decoding, registry
from performer.attention.local import (
  KeyGroup,
  block_softmax,
  gathered_key_mask,
  to_blocks,
)

PATTERNS = ('fixed', 'bigbird')


class BigBirdLayout(NamedTuple):
  """The BigBird block pattern for one number of blocks.

  Attributes:
    num_global: global blocks actually present, min(num_global_blocks, N).
    blocks_NG: int [N - num_global, G], the key blocks gathered by each
      non-global query block: global blocks, then window blocks, then random
      blocks.
    valid_NG: bool, False for slots to ignore: beyond the sequence, after
      the query block (causal), duplicates of an earlier slot, or random
      slots for which no candidate block was left.
    own_slot: the slot holding the query block itself.
    random_NR: int [N, num_random_blocks], each query block's random blocks,
      -1 where none (global query blocks, too few candidates).
  """

  num_global: int
  blocks_NG: np.ndarray
  valid_NG: np.ndarray
  own_slot: int
  random_NR: np.ndarray


@functools.lru_cache(maxsize=64)
def bigbird_layout(
  num_blocks: int,
  num_global: int,
  num_window: int,
  num_random: int,
  causal: bool,
  seed: int,
) -> BigBirdLayout:
  """Builds the BigBird block pattern (see `SparseAttention`).

  The random blocks of query block n come from a generator seeded with
  (seed, n), so they do not depend on the order of construction and, when
  causal, not on the sequence length either.
  """
  num_global = min(num_global, num_blocks)
  half = num_window // 2
  offsets = np.arange(-half, 1 if causal else half + 1)
  rows, valid_rows = [], []
  random_NR = np.full((num_blocks, num_random), -1)
  for n in range(num_global, num_blocks):
    window = n + offsets
    seen = set(range(num_global)) | set(window.tolist())
    limit = n if causal else num_blocks
    candidates = [m for m in range(limit) if m not in seen]
    rng = np.random.default_rng([seed, n])
    count = min(num_random, len(candidates))
    chosen = np.sort(rng.choice(candidates, count, replace=False))
    random_NR[n, :count] = chosen
    wanted = np.concatenate([np.arange(num_global), window, random_NR[n]])
    valid = (wanted >= 0) & (wanted < num_blocks)
    # A window block that is also global would otherwise count twice.
    _, first = np.unique(wanted, return_index=True)
    valid &= np.isin(np.arange(wanted.size), first)
    rows.append(np.clip(wanted, 0, num_blocks - 1))
    valid_rows.append(valid)
  num_slots = num_global + offsets.size + num_random
  blocks_NG = np.array(rows, dtype=np.int32).reshape(-1, num_slots)
  valid_NG = np.array(valid_rows, dtype=bool).reshape(-1, num_slots)
  return BigBirdLayout(
    num_global, blocks_NG, valid_NG, num_global + half, random_NR
  )


@registry.register('sparse')
class SparseAttention(decoding.KVCacheDecoding, nnx.Module):
  """Block-sparse softmax attention: Sparse Transformer 'fixed' or 'bigbird'.

  Notation: l = `block_size`, block b holds positions [b*l, (b+1)*l); i is
  the query position, j the key position. All heads share the pattern.

  - 'fixed' (Child et al. 2019, "fixed" pattern): query i attends to
    A1 = its own block, and A2 = the summary positions, j with
    j mod l >= l - c (c = `num_summary`, the last c positions of every
    block). Causal: both restricted to j <= i, so A2 holds the summaries of
    earlier blocks. Cost O(L * (l + c * L / l)).
  - 'bigbird' (Zaheer et al. 2020, block version): query block n attends to
    a window of `num_window_blocks` blocks centred on n, the first
    `num_global_blocks` blocks (global), and `num_random_blocks` random
    blocks drawn among the rest; the global blocks' queries attend to every
    key. Causal: only blocks <= n count (the window becomes the
    num_window_blocks // 2 previous blocks and n), keys j <= i, and the
    random blocks are drawn among earlier blocks. The random blocks are
    fixed by (`seed`, n): modules with the same seed share them.

  Any length works (blocks are padded internally). Padded keys (mask False)
  get zero weight; a query that sees no real key outputs zeros. The softmax
  runs in at least float32; the output has the dtype of q.

  Decoding (see `decoding`) keeps a full KV cache of `max_len` positions and
  masks it with the query block's row of `block_pattern(max_len)`: simple
  and exact, though the summaries ('fixed') or the gathered blocks
  ('bigbird') are all a query needs.
  """

  def __init__(
    self,
    *,
    head_dim: int,
    causal: bool,
    rngs: nnx.Rngs,
    pattern: str = 'fixed',
    block_size: int = 64,
    num_summary: int = 4,
    num_global_blocks: int = 2,
    num_window_blocks: int = 3,
    num_random_blocks: int = 3,
    seed: int = 0,
  ):
    """Builds the module.

    Args:
      head_dim: size of each head.
      causal: whether position i only attends to positions <= i.
      rngs: unused: the random blocks come from `seed`, a static int, so
        that the pattern is known at trace time and reproducible.
      pattern: 'fixed' or 'bigbird' (see the class docstring).
      block_size: the block length l.
      num_summary: 'fixed' only: summary positions per block, c <= l.
      num_global_blocks: 'bigbird' only: leading blocks that attend to and
        are attended by every position (>= 0).
      num_window_blocks: 'bigbird' only: the odd width of the block window.
      num_random_blocks: 'bigbird' only: random blocks per query block.
      seed: 'bigbird' only: the seed of the random blocks (>= 0).

    Raises:
      ValueError: naming any invalid option.
    """
    del rngs
    self.head_dim = head_dim
    self.causal = causal
    self.pattern = common.check_choice('pattern', pattern, PATTERNS)
    self.block_size = common.check_positive_int('block_size', block_size)
    self.num_summary = common.check_positive_int('num_summary', num_summary)
    if pattern == 'fixed' and num_summary > block_size:
      raise ValueError(
        f'num_summary must be <= block_size={block_size}, got {num_summary}'
      )
    self.num_global_blocks = common.check_positive_int(
      'num_global_blocks', num_global_blocks, minimum=0
    )
    self.num_window_blocks = common.check_positive_int(
      'num_window_blocks', num_window_blocks
    )
    if num_window_blocks % 2 == 0:
      raise ValueError(
        f'num_window_blocks must be odd (a window centred on the query '
        f'block), got {num_window_blocks}'
      )
    self.num_random_blocks = common.check_positive_int(
      'num_random_blocks', num_random_blocks, minimum=0
    )
    self.seed = common.check_positive_int('seed', seed, minimum=0)

  def _bigbird_layout(self, length: int) -> BigBirdLayout:
    return bigbird_layout(
      -(-length // self.block_size),
      self.num_global_blocks,
      self.num_window_blocks,
      self.num_random_blocks,
      self.causal,
      self.seed,
    )

  def random_blocks(self, length: int) -> np.ndarray:
    """'bigbird': each query block's random key blocks, [N, r], -1 = none."""
    return self._bigbird_layout(length).random_NR

  def pattern_mask(self, length: int) -> np.ndarray:
    """The dense bool [L, L] pattern (True = query i may see key j).

    Read off the same layout that `__call__` uses, for tests and figures;
    O(L^2), so small lengths only.
    """
    pos_L = np.arange(length)
    allowed_LL = self.block_pattern(length)[pos_L // self.block_size]
    if self.causal:
      allowed_LL &= pos_L[None, :] <= pos_L[:, None]
    return allowed_LL

  def block_pattern(self, length: int) -> np.ndarray:
    """Bool [N, L]: the keys that the queries of block n may see.

    Both patterns depend only on the query's block; causal attention in
    addition cuts keys j > i. Read off the same layout that `__call__` uses.
    """
    c = self.block_size
    n = -(-length // c)
    block_L = np.arange(length) // c
    if self.pattern == 'fixed':
      _, summary_NK, summary_K = _fixed_summary(
        n, c, self.num_summary, self.causal
      )
      allowed_NL = block_L[None, :] == np.arange(n)[:, None]
      inside_K = summary_K < length
      allowed_NL[:, summary_K[inside_K]] |= summary_NK[:, inside_K]
      return allowed_NL
    layout = self._bigbird_layout(length)
    g = layout.num_global
    allowed_NL = np.zeros((n, length), bool)
    allowed_NL[:g] = True
    gathered_NGL = layout.blocks_NG[..., None] == block_L
    allowed_NL[g:] = np.any(gathered_NGL & layout.valid_NG[..., None], axis=1)
    return allowed_NL

  def __call__(
    self,
    q_BLHD: jax.Array,
    k_BSHD: jax.Array,
    v_BSHD: jax.Array,
    mask: jax.Array | None = None,
  ) -> jax.Array:
    """Attends each query to the keys its pattern allows.

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
    c = self.block_size
    key_mask_BS = common.key_mask_or_ones(mask, b, length)
    # Zeroed padded values keep even inf/NaN padding out of 0 * v.
    v_BSHD = jnp.where(key_mask_BS[:, :, None, None], v_BSHD, 0)
    q_BNCHD, k_BNCHD, v_BNCHD = (
      to_blocks(x, c) for x in (q_BLHD, k_BSHD, v_BSHD)
    )
    key_mask_BNC = to_blocks(key_mask_BS, c)
    if self.pattern == 'fixed':
      out_BNCHD = self._fixed(q_BNCHD, k_BNCHD, v_BNCHD, key_mask_BNC)
    else:
      out_BNCHD = self._bigbird(q_BNCHD, k_BNCHD, v_BNCHD, key_mask_BNC)
    return out_BNCHD.reshape(b, -1, h, d)[:, :length]

  def _allowed_slots(self, cache: decoding.Cache) -> jax.Array:
    # Causal layouts do not depend on the length, so the pattern of the
    # whole cache gives every prefix's pattern. Slot = position, and only
    # slots <= the query's position are filled.
    allowed_NT = jnp.asarray(self.block_pattern(cache['valid'].shape[1]))
    return allowed_NT[(cache['index'] - 1) // self.block_size]

  def _fixed(self, q_BNCHD, k_BNCHD, v_BNCHD, key_mask_BNC):
    b, n, c, h, d = q_BNCHD.shape
    s = self.num_summary
    within_CC = _causal_or_ones(c, c, self.causal)
    own = KeyGroup(k_BNCHD, v_BNCHD, key_mask_BNC[:, :, None, :] & within_CC)
    # One summary key set shared by every query block; each block sees the
    # summaries of the other blocks (earlier ones when causal), since its own
    # are already in its own-block group.
    sum_from, summary_NK, _ = _fixed_summary(n, c, s, self.causal)
    k_BKHD, v_BKHD = (
      x[:, :, sum_from:].reshape(b, n * s, h, d) for x in (k_BNCHD, v_BNCHD)
    )
    mask_BK = key_mask_BNC[:, :, sum_from:].reshape(b, n * s)
    summary_allowed = mask_BK[:, None, None, :] & summary_NK[None, :, None, :]
    return block_softmax(
      q_BNCHD, [own, KeyGroup(k_BKHD, v_BKHD, summary_allowed)]
    )

  def _bigbird(self, q_BNCHD, k_BNCHD, v_BNCHD, key_mask_BNC):
    b, n, c, h, d = q_BNCHD.shape
    layout = self._bigbird_layout(n * c)
    g = layout.num_global
    outs = []
    if g:
      # Global query blocks attend densely: to every key, or to j <= i (all
      # within the global blocks) when causal.
      s = g * c if self.causal else n * c
      k_BSHD, v_BSHD = (
        x.reshape(b, n * c, h, d)[:, :s] for x in (k_BNCHD, v_BNCHD)
      )
      mask_BS = key_mask_BNC.reshape(b, n * c)[:, :s]
      allowed = mask_BS[:, None, None, :]
      if self.causal:
        allowed = allowed & np.tri(s, dtype=bool).reshape(g, c, s)
      outs.append(
        block_softmax(q_BNCHD[:, :g], [KeyGroup(k_BSHD, v_BSHD, allowed)])
      )
    if g < n:
      mask_BNK = gathered_key_mask(
        key_mask_BNC, layout.blocks_NG, layout.valid_NG
      )
      # Every valid slot is <= the query block when causal; only the query's
      # own block needs j <= i inside it.
      within_CK = np.ones((c, layout.blocks_NG.shape[1] * c), bool)
      own = slice(layout.own_slot * c, (layout.own_slot + 1) * c)
      within_CK[:, own] = _causal_or_ones(c, c, self.causal)
      allowed = mask_BNK[:, :, None, :] & within_CK
      group = KeyGroup(k_BNCHD, v_BNCHD, allowed, layout.blocks_NG)
      outs.append(block_softmax(q_BNCHD[:, g:], [group]))
    return jnp.concatenate(outs, axis=1)


def _causal_or_ones(rows: int, cols: int, causal: bool) -> np.ndarray:
  """Bool [rows, cols]: j <= i when causal, else all True."""
  if causal:
    return np.tri(rows, cols, dtype=bool)
  return np.ones((rows, cols), bool)


def _fixed_summary(num_blocks: int, block: int, num_summary: int, causal: bool):
  """The fixed pattern's summary keys.

  Returns:
    The first summary offset in a block (block - num_summary); bool
    [N, N * num_summary], which summaries each query block sees through A2;
    and int [N * num_summary], the positions of the summaries.
  """
  sum_from = block - num_summary
  summary_block_K = np.repeat(np.arange(num_blocks), num_summary)
  query_block_N1 = np.arange(num_blocks)[:, None]
  if causal:
    summary_NK = summary_block_K[None, :] < query_block_N1
  else:
    summary_NK = summary_block_K[None, :] != query_block_N1
  summary_K = (
    summary_block_K * block
    + sum_from
    + np.tile(np.arange(num_summary), num_blocks)
  )
  return sum_from, summary_NK, summary_K
