"""Autoregressive decoding: the protocol every causal variant implements.

A causal attention module decodes with three methods and an explicit cache
(a pytree of arrays, never hidden module state, so that it can be jitted,
donated and carried by the caller):

  cache = attn.init_cache(batch, heads, max_len, dtype)
  out_BLHD, cache = attn.prefill(q_BLHD, k_BLHD, v_BLHD, cache, mask=None)
  out_B1HD, cache = attn.decode(q_B1HD, k_B1HD, v_B1HD, cache)

- `init_cache(batch, heads, max_len, dtype)`: an empty cache for sequences
  of at most `max_len` positions (prompt plus generated tokens). Variants
  with a constant-size state ignore `max_len`.
- `prefill(q, k, v, cache, mask=None)`: the prompt's L positions in one
  parallel pass (the same computation as `attn(q, k, v, mask)`, whose
  outputs it returns) plus the state after them. A sequence always starts
  with a prefill: it reads only the shapes of `cache`, never its contents.
  `mask` is the usual key-padding mask; padded prompt positions stay
  invisible to every later query.
- `decode(q, k, v, cache)`: one new position (always a real token); its
  output equals what the parallel pass over the whole sequence gives at that
  position.

Every cache holds 'index', an int32 scalar: the number of positions seen,
i.e. the position of the next token. Caches per variant:

- softmax, sparse: a KV cache of `max_len` slots (slot = position). Decode
  attends over the shortest power-of-two prefix of the slots that holds
  every position so far (one `lax.switch` branch per prefix length), so its
  cost grows with the position, as a KV cache's should, instead of being
  that of the whole cache from the first token. Decoding past `max_len`
  positions is not supported (slots would be overwritten).
- local: a ring buffer of the last W ('sliding') or 2W ('block') positions:
  constant memory, any length.
- favor, favor_scan: the running [M, D] state and [M] normalizer of FAVOR+
  plus the stabilizer's running maximum: constant memory and time per token.

Bidirectional modules raise ValueError from all three methods. This module
holds `KVCacheDecoding`, the three methods for the softmax-based variants.
"""

import jax
import jax.numpy as jnp
import numpy as np

from performer.attention import common

Cache = dict[str, jax.Array]


def require_causal(module, method: str) -> None:
  """Raises ValueError unless `module` was built with causal=True."""
  if not module.causal:
    raise ValueError(
      f'{method} needs a causal attention module: {type(module).__name__} '
      'was built with causal=False, and bidirectional attention cannot '
      'decode token by token'
    )


def check_step(
  q_B1HD: jax.Array, k_B1HD: jax.Array, v_B1HD: jax.Array, head_dim: int
) -> None:
  """Raises ValueError unless q, k, v are one position each, [B, 1, H, D]."""
  common.check_inputs(q_B1HD, k_B1HD, v_B1HD, None, head_dim)
  if q_B1HD.shape[1] != 1:
    raise ValueError(
      f'decode takes one position, [batch, 1, heads, head_dim], got q of '
      f'shape {tuple(q_B1HD.shape)}; use prefill for several'
    )


def init_kv_cache(
  batch: int, slots: int, heads: int, head_dim: int, dtype: jnp.dtype
) -> Cache:
  """An empty KV cache of `slots` positions.

  Returns:
    {'k', 'v': [B, T, H, D] zeros; 'valid': bool [B, T], False (empty or
    padded slot); 'index': int32 0}.
  """
  common.check_positive_int('batch', batch)
  common.check_positive_int('max_len', slots)
  common.check_positive_int('heads', heads)
  shape = (batch, slots, heads, head_dim)
  return {
    'k': jnp.zeros(shape, dtype),
    'v': jnp.zeros(shape, dtype),
    'valid': jnp.zeros((batch, slots), bool),
    'index': jnp.zeros((), jnp.int32),
  }


def fill_kv_cache(
  cache: Cache,
  k_BLHD: jax.Array,
  v_BLHD: jax.Array,
  mask_BL: jax.Array | None,
  *,
  ring: bool,
) -> Cache:
  """The cache after a prompt of L positions.

  Position p lives in slot p % T. A full cache (`ring=False`) must hold the
  whole prompt; a ring buffer keeps its last T positions.

  Args:
    cache: a cache from `init_kv_cache` (only its shapes are read).
    k_BLHD: the prompt's keys.
    v_BLHD: its values.
    mask_BL: optional key-padding mask; padded positions are stored invalid.
    ring: whether the cache is a ring buffer.

  Raises:
    ValueError: a prompt longer than a full cache.
  """
  b, t = cache['valid'].shape
  length = k_BLHD.shape[1]
  if not ring and length > t:
    raise ValueError(
      f'a prompt of {length} positions does not fit a KV cache of max_len='
      f'{t}; build the cache with a larger max_len'
    )
  # The latest position <= length - 1 that maps to each slot; < 0 if none.
  pos_T = length - 1 - (length - 1 - np.arange(t)) % t
  filled_T = pos_T >= 0
  take_T = np.maximum(pos_T, 0)
  mask_BL = common.key_mask_or_ones(mask_BL, b, length)
  k_BTHD, v_BTHD = (
    jnp.where(
      filled_T[None, :, None, None], jnp.take(x, take_T, axis=1), 0
    ).astype(cache['k'].dtype)
    for x in (k_BLHD, v_BLHD)
  )
  return {
    'k': k_BTHD,
    'v': v_BTHD,
    'valid': jnp.take(mask_BL, take_T, axis=1) & filled_T,
    'index': jnp.asarray(length, jnp.int32),
  }


def append_kv(cache: Cache, k_B1HD: jax.Array, v_B1HD: jax.Array) -> Cache:
  """Writes one real position into slot index % T and advances the index."""
  t = cache['valid'].shape[1]
  slot = cache['index'] % t
  k, v = (
    jax.lax.dynamic_update_slice_in_dim(
      cache[name], x.astype(cache[name].dtype), slot, axis=1
    )
    for name, x in (('k', k_B1HD), ('v', v_B1HD))
  )
  valid = jax.lax.dynamic_update_slice_in_dim(
    cache['valid'], jnp.ones((cache['valid'].shape[0], 1), bool), slot, axis=1
  )
  return {'k': k, 'v': v, 'valid': valid, 'index': cache['index'] + 1}


def slot_positions(cache: Cache) -> jax.Array:
  """int32 [T]: the position each slot holds (negative: never written)."""
  t = cache['valid'].shape[1]
  last = cache['index'] - 1
  return last - jnp.mod(last - jnp.arange(t, dtype=jnp.int32), t)


# The shortest prefix a full cache's decode step attends over.
_MIN_PREFIX = 16


def attend_kv(
  q_B1HD: jax.Array, cache: Cache, allowed_T, *, full: bool
) -> jax.Array:
  """Softmax attention of one query over the cached keys it may see.

  Args:
    q_B1HD: the query of the newest position, already in the cache.
    cache: the KV cache.
    allowed_T: bool [T] or [B, T] (or True), the variant's pattern over the
      slots; combined with the slots' validity. The newest position must be
      allowed, so that no query is left without a key.
    full: whether the cache is a full one (slot = position), whose slots
      from cache['index'] on are still empty and can be skipped.

  Returns:
    [B, 1, H, D] in the dtype of q, computed in at least float32.
  """
  compute = common.compute_dtype(q_B1HD.dtype)
  qc_B1HD = q_B1HD.astype(compute)
  allowed_BT = cache['valid'] & allowed_T

  def attend(n):
    out_B1HD = jax.nn.dot_product_attention(
      qc_B1HD,
      cache['k'][:, :n].astype(compute),
      cache['v'][:, :n].astype(compute),
      mask=allowed_BT[:, None, None, :n],
      implementation='xla',
    )
    return out_B1HD.astype(q_B1HD.dtype)

  t = cache['valid'].shape[1]
  if not full or t <= _MIN_PREFIX:
    return attend(t)
  # Slices need static sizes: one branch per power-of-two prefix.
  sizes = [min(_MIN_PREFIX << i, t) for i in range((t - 1).bit_length())]
  sizes = sorted(set(sizes))
  branch = jnp.searchsorted(jnp.asarray(sizes), cache['index'])
  return jax.lax.switch(branch, [lambda n=n: attend(n) for n in sizes])


class KVCacheDecoding:
  """The decoding methods of a softmax-based variant, over a KV cache.

  A mixin for attention modules (attributes `causal`, `head_dim`, and
  `__call__` as the parallel pass). A subclass sets `ring` (a ring buffer
  instead of a full cache) and defines `_cache_slots(max_len)` and
  `_allowed_slots(cache)`.
  """

  ring: bool = False

  def _cache_slots(self, max_len: int) -> int:
    """Slots of the cache for sequences of `max_len` positions."""
    return max_len

  def _allowed_slots(self, cache: Cache):
    """Bool [T] (or True for all): the slots the newest position may see.

    The newest position is cache['index'] - 1; empty and padded slots are
    excluded by `attend_kv` in any case.
    """
    raise NotImplementedError

  def init_cache(
    self, batch: int, heads: int, max_len: int, dtype=jnp.float32
  ) -> Cache:
    """An empty KV cache (see the module docstring)."""
    require_causal(self, 'init_cache')
    return init_kv_cache(
      batch, self._cache_slots(max_len), heads, self.head_dim, dtype
    )

  def prefill(
    self,
    q_BLHD: jax.Array,
    k_BLHD: jax.Array,
    v_BLHD: jax.Array,
    cache: Cache,
    mask: jax.Array | None = None,
  ) -> tuple[jax.Array, Cache]:
    """The prompt's outputs and its KV cache (see the module docstring)."""
    require_causal(self, 'prefill')
    out_BLHD = self(q_BLHD, k_BLHD, v_BLHD, mask=mask)
    return out_BLHD, fill_kv_cache(cache, k_BLHD, v_BLHD, mask, ring=self.ring)

  def decode(
    self,
    q_B1HD: jax.Array,
    k_B1HD: jax.Array,
    v_B1HD: jax.Array,
    cache: Cache,
  ) -> tuple[jax.Array, Cache]:
    """One new position's output and the updated cache (see the module)."""
    require_causal(self, 'decode')
    check_step(q_B1HD, k_B1HD, v_B1HD, self.head_dim)
    cache = append_kv(cache, k_B1HD, v_B1HD)
    allowed_T = self._allowed_slots(cache)
    return attend_kv(q_B1HD, cache, allowed_T, full=not self.ring), cache
