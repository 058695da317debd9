"""Reformer attention: shared-QK attention over LSH buckets (Kitaev et al.
2020, "Reformer: The Efficient Transformer").

Queries and keys are shared: key j is query j normalized to unit length, and
the logit of query i for key j is q_i . k_j / sqrt(D). Each of `n_hashes`
rounds hashes every position with angular LSH, h(x) = argmax([x R, -x R])
for a random [D, n_buckets / 2] rotation R (one per round and head), so that
similar vectors tend to share a bucket. Within a round the positions are
sorted by (bucket, position); each bucket's run is cut into chunks of
`bucket_size`, and a chunk attends to itself and to the previous chunk of
the same bucket. So query i sees key j in round r when both hash to the same
bucket and, with rank(x) the number of earlier positions in x's bucket,
rank(j) // C is rank(i) // C or one less (C = bucket_size).

- A token attends to itself only when nothing else is visible (then its
  output is its own value), as in the paper: its key is its own query, which
  would otherwise dominate.
- Rounds are combined by their log-sum-exp weights, with each key's weight
  divided by the number of rounds that found it (the paper's N_ij), so the
  result is exactly the softmax over the union of the keys found in any
  round. A key found twice does not count twice.
- Causal and key-padding masks apply by original position. Padded positions
  are hashed into no bucket and ranked nowhere: they change no other
  position's chunks, so their values change nothing.
- The rotations are drawn from (the module's seed, step // redraw_interval)
  by `redraw(step)`, as FAVOR+'s features are: the same on any number of
  devices, new at each step by default (the paper hashes anew at every
  pass); `attention.redraw_features` calls it in the train step.

Chunking each bucket's run separately differs from the paper, which chunks
the concatenated sorted sequence: there a chunk may straddle two buckets
(whose keys the same-bucket rule then hides), and a token's chunk depends on
how many tokens of lower buckets exist anywhere, including later ones,
which is not causal. Per-bucket chunks make a token's visible set depend
only on the tokens before it (causal attention is exact, and decoding is
possible) at the price of at most C - 1 empty slots per bucket.

Cost: O(n_hashes L C D) time and memory for the attention (never L x L),
plus O(L log L) sorting and the O(L D n_buckets) hash.

Tensor names: B batch, H heads, R hash rounds, L length, T slots of the
bucket-chunked layout, N chunks, C chunk (= bucket_size), D head dim,
U buckets.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from performer.attention import common, decoding, registry

# Keys are unit vectors: no key's norm may be zero.
_NORM_EPS = 1e-6


class HashSeed(nnx.Variable):
  """Raw key data of the per-module seed the rotations are drawn from."""


class HashDraw(nnx.Variable):
  """The index of the current rotations' draw (step // redraw_interval)."""


def _gather_rows(x_BHLX: jax.Array, idx_BHRT: jax.Array) -> jax.Array:
  """x[b, h, idx[b, h, r, t]] for every round r: [B, H, R, T, ...]."""
  extra = x_BHLX.ndim - 3
  idx = idx_BHRT.reshape(*idx_BHRT.shape[:2], -1, *([1] * extra))
  out = jnp.take_along_axis(x_BHLX, idx, axis=2, mode='clip')
  return out.reshape(*idx_BHRT.shape, *x_BHLX.shape[3:])


@registry.register('reformer')
class ReformerAttention(nnx.Module):
  """Shared-QK LSH attention; O(n_hashes L bucket_size) time and memory.

  The keys are the queries (normalized): `uses` tells the transformer block
  to build no key projection, and the `k` argument is ignored.

  Example:
    attn = attention.create('reformer', head_dim=64, causal=True,
                            rngs=nnx.Rngs(0), bucket_size=64, n_hashes=2)
    out_BLHD = attn(q_BLHD, q_BLHD, v_BLHD, mask=mask_BL)
  """

  uses = ('q', 'v')

  def __init__(
    self,
    *,
    head_dim: int,
    causal: bool,
    rngs: nnx.Rngs,
    bucket_size: int = 64,
    n_buckets: int | None = None,
    n_hashes: int = 2,
    redraw_interval: int = 1,
  ):
    """Builds the module.

    Args:
      head_dim: D, size of each head.
      causal: whether position i only attends to positions <= i.
      rngs: draws the module's seed (`rngs.params()`).
      bucket_size: C, the chunk length; each query sees at most 2C - 1
        keys per round.
      n_buckets: buckets per round: 1 (no hashing: chunks of the plain
        sequence) or an even number. None: the paper's L / bucket_size,
        rounded down to an even number, for each sequence length L (a
        decoding cache uses its max_len); give a number to hash the same
        way at every length.
      n_hashes: hash rounds R (the paper used 1 to 8; more rounds miss
        fewer neighbours and cost R times as much).
      redraw_interval: `redraw(step)` draws new rotations every this many
        steps; 0 keeps the first draw.

    Raises:
      ValueError: for an option out of range.
    """
    self.head_dim = head_dim
    self.causal = causal
    self.bucket_size = common.check_positive_int('bucket_size', bucket_size)
    if n_buckets is not None:
      common.check_positive_int('n_buckets', n_buckets)
      if n_buckets > 1 and n_buckets % 2:
        raise ValueError(
          f'n_buckets must be 1 or even (angular LSH takes the argmax over '
          f'[xR, -xR]), got {n_buckets}'
        )
    self.n_buckets = n_buckets
    self.n_hashes = common.check_positive_int('n_hashes', n_hashes)
    self.redraw_interval = common.check_positive_int(
      'redraw_interval', redraw_interval, minimum=0
    )
    self.seed = HashSeed(jax.random.key_data(rngs.params()))
    self.draw = HashDraw(jnp.zeros((), jnp.int32))

  def redraw(self, step) -> None:
    """Selects the rotations of `step` (see the module docstring); jittable."""
    if self.redraw_interval == 0:
      return
    self.draw[...] = jnp.asarray(step // self.redraw_interval, jnp.int32)

  def buckets_for(self, length: int) -> int:
    """The buckets per round for sequences of `length` positions.

    Raises:
      ValueError: n_buckets=None and a bucket size that does not fit: the
        sequence holds fewer than two buckets of `bucket_size`.
    """
    if self.n_buckets is not None:
      return self.n_buckets
    if length < 2 * self.bucket_size:
      raise ValueError(
        f'bucket_size={self.bucket_size} does not fit a sequence of '
        f'{length} positions: n_buckets=None needs at least two buckets '
        f'(length >= {2 * self.bucket_size}); give a smaller bucket_size or '
        'set n_buckets'
      )
    return 2 * (length // (2 * self.bucket_size))

  def rotations(self, heads: int, n_buckets: int) -> jax.Array:
    """The current random rotations, float32 [H, R, D, n_buckets // 2]."""
    key = jax.random.fold_in(
      jax.random.wrap_key_data(self.seed[...]), self.draw[...]
    )
    shape = (heads, self.n_hashes, self.head_dim, max(n_buckets // 2, 1))
    return jax.random.normal(key, shape, jnp.float32)

  def hash(self, q_BLHD: jax.Array, n_buckets: int | None = None) -> jax.Array:
    """Each position's bucket in each round, int32 [B, H, R, L].

    Args:
      q_BLHD: the queries (= unnormalized keys).
      n_buckets: defaults to `buckets_for(L)`.
    """
    if n_buckets is None:
      n_buckets = self.buckets_for(q_BLHD.shape[1])
    b, length, h, _ = q_BLHD.shape
    if n_buckets == 1:
      return jnp.zeros((b, h, self.n_hashes, length), jnp.int32)
    rot_HRDU = self.rotations(h, n_buckets)
    proj_BHRLU = jnp.einsum(
      'blhd,hrdu->bhrlu',
      q_BLHD.astype(jnp.float32),
      rot_HRDU,
      preferred_element_type=jnp.float32,
    )
    both_BHRLU = jnp.concatenate([proj_BHRLU, -proj_BHRLU], axis=-1)
    return jnp.argmax(both_BHRLU, axis=-1).astype(jnp.int32)

  def __call__(
    self,
    q_BLHD: jax.Array,
    k_BSHD: jax.Array,
    v_BSHD: jax.Array,
    mask: jax.Array | None = None,
  ) -> jax.Array:
    """Shared-QK LSH attention.

    Args:
      q_BLHD: queries [batch, length, heads, head_dim]; also the keys.
      k_BSHD: ignored (the keys are the normalized queries); same shape.
      v_BSHD: values, same shape.
      mask: optional bool [batch, length]; False marks padded keys.

    Returns:
      [batch, length, heads, head_dim] in the dtype of q.
    """
    common.check_inputs(q_BLHD, k_BSHD, v_BSHD, mask, self.head_dim)
    n_buckets = self.buckets_for(q_BLHD.shape[1])
    out_BLHD, _ = self._attend(q_BLHD, v_BSHD, mask, n_buckets)
    return out_BLHD

  def _attend(self, q_BLHD, v_BLHD, mask_BL, n_buckets):
    """The outputs and each position's (bucket, chunk) per round."""
    dtype = q_BLHD.dtype
    acc = common.compute_dtype(dtype)
    b, length, h, d = q_BLHD.shape
    c = self.bucket_size
    real_BL = common.key_mask_or_ones(mask_BL, b, length)
    q_BHLD = jnp.swapaxes(q_BLHD.astype(acc), 1, 2)
    v_BHLD = jnp.swapaxes(v_BLHD.astype(acc), 1, 2)
    v_BHLD = jnp.where(real_BL[:, None, :, None], v_BHLD, 0.0)
    k_BHLD = _normalize(q_BHLD)

    # Padded positions go to bucket U, after every real one, unranked.
    bucket_BHRL = jnp.where(
      real_BL[:, None, None, :],
      jax.lax.stop_gradient(self.hash(q_BLHD, n_buckets)),
      n_buckets,
    )
    rank_BHRL, counts_BHRU = _ranks(bucket_BHRL, n_buckets)
    chunk_BHRL = rank_BHRL // c
    # Each bucket's run starts at a chunk boundary.
    chunks_BHRU = -(-counts_BHRU // c)
    start_BHRU = c * (jnp.cumsum(chunks_BHRU, axis=-1) - chunks_BHRU)
    num_chunks = min(length, (length + n_buckets * (c - 1)) // c)
    t = num_chunks * c
    start_BHRL = jnp.take_along_axis(
      start_BHRU, jnp.minimum(bucket_BHRL, n_buckets - 1), axis=-1
    )
    slot_BHRL = jnp.where(
      bucket_BHRL < n_buckets, start_BHRL + rank_BHRL, t
    )  # t: dropped.
    token_BHRT = _scatter_positions(slot_BHRL, t)
    filled_BHRT = token_BHRT >= 0

    qs_BHRTD = _gather_rows(q_BHLD, token_BHRT)
    ks_BHRTD = _gather_rows(k_BHLD, token_BHRT)
    vs_BHRTD = _gather_rows(v_BHLD, token_BHRT)
    # Every round's (bucket, chunk) of each slot's token, for N_ij.
    bucket_BHLR = jnp.moveaxis(bucket_BHRL, 2, 3)
    chunk_BHLR = jnp.moveaxis(chunk_BHRL, 2, 3)
    codes_BHRTQ = _gather_rows(
      jnp.stack([bucket_BHLR, chunk_BHLR], axis=-1), token_BHRT
    )  # Q = (R, 2).
    own_bucket_BHRT = jnp.where(
      filled_BHRT, jnp.take_along_axis(bucket_BHRL, token_BHRT, -1, 'clip'), -1
    )

    def chunked(x):
      return x.reshape(b, h, self.n_hashes, num_chunks, c, *x.shape[4:])

    # Rematerialized: the backward pass keeps no [.., C, 2C] logits alive.
    attend = jax.checkpoint(
      functools.partial(_chunk_attention, causal=self.causal)
    )
    out_BHRTD, lse_BHRT = attend(
      chunked(qs_BHRTD),
      chunked(ks_BHRTD),
      chunked(vs_BHRTD),
      chunked(token_BHRT),
      chunked(own_bucket_BHRT),
      chunked(codes_BHRTQ),
    )
    out_BHRTD = out_BHRTD.reshape(b, h, self.n_hashes, t, d)
    lse_BHRT = lse_BHRT.reshape(b, h, self.n_hashes, t)
    # Back to positions: round r's output of position p sits in its slot.
    slot_BHRL = jnp.minimum(slot_BHRL, t - 1)
    out_BHRLD = jnp.take_along_axis(out_BHRTD, slot_BHRL[..., None], axis=3)
    lse_BHRL = jnp.take_along_axis(lse_BHRT, slot_BHRL, axis=3)
    # Log-sum-exp weights of the rounds; -inf for a round with no key.
    top_BHL = jax.lax.stop_gradient(jnp.max(lse_BHRL, axis=2))
    top_BHL = jnp.where(jnp.isfinite(top_BHL), top_BHL, 0.0)
    w_BHRL = jnp.exp(lse_BHRL - top_BHL[:, :, None])
    total_BHL = jnp.sum(w_BHRL, axis=2)
    # A padded query sees nothing either: it outputs its zeroed value.
    alone_BHL = (total_BHL == 0) | ~real_BL[:, None, :]
    out_BHLD = jnp.einsum('bhrl,bhrld->bhld', w_BHRL, out_BHRLD)
    out_BHLD = out_BHLD / jnp.where(alone_BHL, 1.0, total_BHL)[..., None]
    # Nothing else visible: the token attends to itself.
    out_BHLD = jnp.where(alone_BHL[..., None], v_BHLD, out_BHLD)
    out_BLHD = jnp.swapaxes(out_BHLD, 1, 2).astype(dtype)
    return out_BLHD, (bucket_BHRL, chunk_BHRL, counts_BHRU)

  # Decoding: a KV cache of the normalized keys and values, with each
  # position's bucket and chunk per round and the count of each bucket.

  def init_cache(
    self, batch: int, heads: int, max_len: int, dtype=jnp.float32
  ) -> decoding.Cache:
    """An empty cache for `max_len` positions (see `decoding`).

    Returns:
      {'k', 'v': [B, T, H, D]; 'valid': bool [B, T]; 'bucket', 'chunk':
      int32 [B, T, H, R]; 'counts': int32 [B, H, R, U]; 'index'}, with
      T = max_len and U = `buckets_for(max_len)`.
    """
    decoding.require_causal(self, 'init_cache')
    cache = decoding.init_kv_cache(batch, max_len, heads, self.head_dim, dtype)
    n_buckets = self.buckets_for(max_len)
    codes = jnp.zeros((batch, max_len, heads, self.n_hashes), jnp.int32)
    counts = jnp.zeros((batch, heads, self.n_hashes, n_buckets), jnp.int32)
    return {**cache, 'bucket': codes, 'chunk': codes, 'counts': counts}

  def prefill(
    self,
    q_BLHD: jax.Array,
    k_BLHD: jax.Array,
    v_BLHD: jax.Array,
    cache: decoding.Cache,
    mask: jax.Array | None = None,
  ) -> tuple[jax.Array, decoding.Cache]:
    """The prompt's outputs and the cache after it (see `decoding`)."""
    decoding.require_causal(self, 'prefill')
    common.check_inputs(q_BLHD, k_BLHD, v_BLHD, mask, self.head_dim)
    n_buckets = cache['counts'].shape[-1]
    out_BLHD, (bucket_BHRL, chunk_BHRL, counts_BHRU) = self._attend(
      q_BLHD, v_BLHD, mask, n_buckets
    )
    keys_BLHD = jnp.swapaxes(_normalize(jnp.swapaxes(q_BLHD, 1, 2)), 1, 2)
    kv = decoding.fill_kv_cache(cache, keys_BLHD, v_BLHD, mask, ring=False)
    t, length = cache['bucket'].shape[1], q_BLHD.shape[1]

    def to_slots(x_BHRL):
      x_BLHR = jnp.transpose(x_BHRL, (0, 3, 1, 2))
      return common.pad_axis(x_BLHR, t, axis=1)[:, :t]

    return out_BLHD, {
      **kv,
      'bucket': to_slots(bucket_BHRL),
      'chunk': to_slots(chunk_BHRL),
      'counts': counts_BHRU.astype(jnp.int32),
      'index': jnp.asarray(length, jnp.int32),
    }

  def decode(
    self,
    q_B1HD: jax.Array,
    k_B1HD: jax.Array,
    v_B1HD: jax.Array,
    cache: decoding.Cache,
  ) -> tuple[jax.Array, decoding.Cache]:
    """One new position's output and the updated cache (see `decoding`).

    The new query sees the cached keys that share its bucket and its chunk
    or the previous one in some round: the union that the parallel pass's
    deduplicated rounds attend to. O(max_len) per token, like a KV cache.
    """
    decoding.require_causal(self, 'decode')
    decoding.check_step(q_B1HD, k_B1HD, v_B1HD, self.head_dim)
    n_buckets = cache['counts'].shape[-1]
    acc = common.compute_dtype(q_B1HD.dtype)
    b, _, h, d = q_B1HD.shape
    bucket_BHR = self.hash(q_B1HD, n_buckets)[..., 0]
    rank_BHR = jnp.take_along_axis(
      cache['counts'], bucket_BHR[..., None], axis=-1
    )[..., 0]
    chunk_BHR = rank_BHR // self.bucket_size
    seen_BTHR = (cache['bucket'] == bucket_BHR[:, None]) & (
      cache['chunk'] >= chunk_BHR[:, None] - 1
    )
    allowed_BTH = jnp.any(seen_BTHR, axis=-1) & cache['valid'][..., None]
    q_BHD = q_B1HD[:, 0].astype(acc)
    logits_BHT = jnp.einsum(
      'bhd,bthd->bht', q_BHD, cache['k'].astype(acc)
    ) / jnp.sqrt(jnp.asarray(d, acc))
    allowed_BHT = jnp.swapaxes(allowed_BTH, 1, 2)
    logits_BHT = jnp.where(allowed_BHT, logits_BHT, -jnp.inf)
    top_BH = jnp.max(logits_BHT, axis=-1)
    alone_BH = ~jnp.isfinite(top_BH)
    weights_BHT = jnp.exp(
      logits_BHT - jnp.where(alone_BH, 0.0, top_BH)[..., None]
    )
    total_BH = jnp.sum(weights_BHT, axis=-1)
    out_BHD = (
      jnp.einsum('bht,bthd->bhd', weights_BHT, cache['v'].astype(acc))
      / jnp.where(alone_BH, 1.0, total_BH)[..., None]
    )
    out_BHD = jnp.where(alone_BH[..., None], v_B1HD[:, 0].astype(acc), out_BHD)

    key_B1HD = jnp.swapaxes(_normalize(jnp.swapaxes(q_B1HD, 1, 2)), 1, 2)
    slot = cache['index']
    kv = decoding.append_kv(cache, key_B1HD, v_B1HD)

    def put(x_BTHR, new_BHR):
      return jax.lax.dynamic_update_slice_in_dim(
        x_BTHR, new_BHR[:, None], slot, axis=1
      )

    counts = cache['counts'] + jax.nn.one_hot(
      bucket_BHR, n_buckets, dtype=jnp.int32
    )
    new_cache = {
      **kv,
      'bucket': put(cache['bucket'], bucket_BHR),
      'chunk': put(cache['chunk'], chunk_BHR),
      'counts': counts,
    }
    return out_BHD[:, None].astype(q_B1HD.dtype), new_cache


def _normalize(x_BHLD: jax.Array) -> jax.Array:
  """Unit-length vectors (the shared-QK keys)."""
  norm_BHL1 = jnp.linalg.norm(x_BHLD, axis=-1, keepdims=True)
  return x_BHLD / jnp.maximum(norm_BHL1, _NORM_EPS)


def _ranks(bucket_BHRL: jax.Array, n_buckets: int):
  """Each position's rank in its bucket and the size of each real bucket.

  Args:
    bucket_BHRL: buckets in [0, U], U for padded positions.
    n_buckets: U.

  Returns:
    rank_BHRL (the number of earlier positions in the same bucket) and
    counts_BHRU (positions per real bucket).
  """
  length = bucket_BHRL.shape[-1]
  pos_L = jnp.arange(length, dtype=jnp.int32)
  order_BHRL = jnp.argsort(bucket_BHRL * length + pos_L, axis=-1)
  sorted_BHRL = jnp.take_along_axis(bucket_BHRL, order_BHRL, axis=-1)
  edges_U1 = jnp.arange(n_buckets + 1, dtype=jnp.int32)
  starts_BHRU1 = jnp.vectorize(
    lambda s: jnp.searchsorted(s, edges_U1, side='left'),
    signature='(l)->(u)',
  )(sorted_BHRL).astype(jnp.int32)
  counts_BHRU = jnp.diff(starts_BHRU1, axis=-1)
  rank_sorted_BHRL = pos_L - jnp.take_along_axis(
    starts_BHRU1, sorted_BHRL, axis=-1
  )
  # Undo the sort: position order_BHRL[t] has rank rank_sorted[t].
  inverse_BHRL = jnp.argsort(order_BHRL, axis=-1)
  rank_BHRL = jnp.take_along_axis(rank_sorted_BHRL, inverse_BHRL, axis=-1)
  return rank_BHRL, counts_BHRU


def _scatter_positions(slot_BHRL: jax.Array, t: int) -> jax.Array:
  """The position held by each slot, int32 [B, H, R, T]; -1 if empty."""
  pos_L = jnp.arange(slot_BHRL.shape[-1], dtype=jnp.int32)
  empty_BHRT = jnp.full((*slot_BHRL.shape[:3], t), -1, jnp.int32)
  return jax.vmap(
    jax.vmap(jax.vmap(lambda e, s: e.at[s].set(pos_L, mode='drop')))
  )(empty_BHRT, slot_BHRL)


def _with_previous(x_BHRNC):
  """Each chunk's keys: the previous chunk's and its own, [.., N, 2C, ..]."""
  pad = [(0, 0)] * x_BHRNC.ndim
  pad[3] = (1, 0)
  fill = -1 if jnp.issubdtype(x_BHRNC.dtype, jnp.integer) else 0
  prev = jnp.pad(x_BHRNC, pad, constant_values=fill)[:, :, :, :-1]
  return jnp.concatenate([prev, x_BHRNC], axis=4)


def _chunk_attention(
  q_BHRNCD,
  k_BHRNCD,
  v_BHRNCD,
  token_BHRNC,
  bucket_BHRNC,
  codes_BHRNCQ,
  *,
  causal,
):
  """Each chunk's queries over its own and the previous chunk's keys.

  Returns the unnormalized-free outputs (softmax-weighted values) and the
  log-sum-exp of each query's logits (-inf: no key visible).
  """
  d = q_BHRNCD.shape[-1]
  kk_BHRNKD = _with_previous(k_BHRNCD)
  vk_BHRNKD = _with_previous(v_BHRNCD)
  tok_k_BHRNK = _with_previous(token_BHRNC)
  bucket_k_BHRNK = _with_previous(bucket_BHRNC)
  codes_k_BHRNKQ = _with_previous(codes_BHRNCQ)
  logits = jnp.einsum('bhrncd,bhrnkd->bhrnck', q_BHRNCD, kk_BHRNKD)
  logits = logits / jnp.sqrt(jnp.asarray(d, logits.dtype))
  tok_q = token_BHRNC[..., :, None]
  tok_k = tok_k_BHRNK[..., None, :]
  allowed = (
    (bucket_BHRNC[..., :, None] == bucket_k_BHRNK[..., None, :])
    & (tok_q >= 0)
    & (tok_k >= 0)
    & (tok_q != tok_k)
  )
  if causal:
    allowed &= tok_k <= tok_q
  # N_ij: the rounds in which i finds j (same bucket, j's chunk i's or the
  # one before); dividing by it makes the rounds' union count each key once.
  bq, cq = codes_BHRNCQ[..., 0], codes_BHRNCQ[..., 1]
  bk, ck = codes_k_BHRNKQ[..., 0], codes_k_BHRNKQ[..., 1]
  behind = cq[..., :, None, :] - ck[..., None, :, :]
  found = (bq[..., :, None, :] == bk[..., None, :, :]) & (
    (behind == 0) | (behind == 1)
  )
  n_found = jnp.sum(found, axis=-1).astype(logits.dtype)
  logits = jnp.where(
    allowed, logits - jnp.log(jnp.maximum(n_found, 1.0)), -jnp.inf
  )
  top = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  weights = jnp.exp(logits - top)
  total = jnp.sum(weights, axis=-1)
  out = jnp.einsum('bhrnck,bhrnkd->bhrncd', weights, vk_BHRNKD)
  out = out / jnp.where(total > 0, total, 1.0)[..., None]
  lse = jnp.where(
    total > 0, jnp.log(jnp.where(total > 0, total, 1.0)) + top[..., 0], -jnp.inf
  )
  return out, lse
