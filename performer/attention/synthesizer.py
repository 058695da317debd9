"""Synthesizer attention (Tay et al. 2021, "Synthesizer: Rethinking
Self-Attention in Transformer Models").

The attention logits are not query-key dot products but synthesized: each
query position produces its logits over the key positions directly, and

  out_i = sum_j softmax_j(B_ij) v_j,   j < S (the key length),

with B one of the paper's synthesizers (`mode`), per head:

- 'dense' (the paper's main variant and the default): B_i = MLP(q_i), a
  two-layer MLP with a ReLU, W2 relu(W1 q_i + b1) + b2, from the head's D
  features to max_len logits, of which the first S are used: weights
  W1 [H, D, D], b1 [H, D], W2 [H, D, max_len], b2 [H, max_len]. The paper
  applies the MLP to the layer input X (width d_model); in our interface
  attention sees only the block's projections, so the MLP reads the query
  projection q, per head (q = X Wq is linear in X, so this is the paper's
  F(X) with a first layer factored as Wq W1; b1 and the ReLU are the
  paper's). The logits of query i depend on token i alone.
- 'random': B = R, a learned [H, max_len, max_len] table that depends on no
  token at all ("Random Synthesizer"); with `trainable=False` it stays at
  its random initialization ("Fixed Random").
- 'factorized': R = A1 A2^T with A1, A2 [H, max_len, k] ("Factorized
  Random"): 2 max_len k numbers per head instead of max_len^2.

`vanilla=True` adds the dot-product logits q_i . k_j / sqrt(D) to the
synthetic ones (the paper's "+ Vanilla" mixture). The paper mixes the
synthesizers with learned weights that sum to one; we add the two as they
are. Each term can scale itself (R or the MLP's last layer; the q and k
projections), so for learned synthesizers the weights add nothing; for a
fixed table they would set its temperature, which stays 1 here.

Which inputs are read depends on the mode, so `uses` is set per instance:
('q', 'v') for dense, ('v',) for random and factorized, ('q', 'k', 'v')
with vanilla. The transformer block builds no projection for the others,
and the module ignores what it receives for them.

- Sequences shorter than max_len use the first rows and columns of R (the
  first S logits of the MLP); longer ones are an error. The MLP works at any
  query length, so 'dense' bounds only the key length S.
- Causal: key j > i gets logit -inf and so exactly zero weight. Padded keys
  (mask False) likewise, with `jnp.where`, and their values (and keys) are
  zeroed so that inf or NaN there cannot leak. A query that sees no real
  key outputs zeros.
- The method is quadratic by nature: B is [L, S] per head, O(L S (H + D))
  time and memory. Computed in at least float32, returned in q's dtype.
- Decoding keeps a KV cache (`decoding.KVCacheDecoding`); the new position
  t's logits are row t of R (or MLP(q_t)) over the cached slots, plus
  q_t . k_j / sqrt(D) with vanilla.

Initialization: W1, W2 ~ N(0, 1/D) (LeCun normal; fan-in D) and zero
biases, so the dense logits start O(1); R ~ N(0, 1); A1, A2 ~ N(0, k^-1/2),
so that the entries of A1 A2^T also have unit variance.

Tensor names: B batch, L query length, S key length, H heads, D head dim,
N max_len, K the factorization rank `k`, T cache slots.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from performer.attention import common, decoding, registry

MODES = ('dense', 'random', 'factorized')


class FixedLogits(nnx.Variable):
  """Synthetic logits (or their factors) kept at their random init.

  Not an `nnx.Param`: optimizers built with `wrt=nnx.Param` and `nnx.grad`
  leave it alone, while `nnx.state(model)` (and so every checkpoint) still
  holds it.
  """


def _check_bool(name: str, value) -> bool:
  if not isinstance(value, bool):
    raise ValueError(f'{name} must be True or False, got {value!r}')
  return value


@registry.register('synthesizer')
class SynthesizerAttention(decoding.KVCacheDecoding, nnx.Module):
  """Attention with synthesized (dense MLP or random table) logits.

  The model fills `max_len` and `num_heads`; standalone, give them.

  Example:
    attn = attention.create('synthesizer', head_dim=64, causal=False,
                            rngs=nnx.Rngs(0), mode='dense', max_len=1024,
                            num_heads=4)
    out_BLHD = attn(q_BLHD, k_BSHD, v_BSHD, mask=mask_BS)
  """

  def __init__(
    self,
    *,
    head_dim: int,
    causal: bool,
    rngs: nnx.Rngs,
    mode: str = 'dense',
    vanilla: bool = False,
    trainable: bool = True,
    k: int = 8,
    max_len: int | None = None,
    num_heads: int | None = None,
  ):
    """Builds the module.

    Args:
      head_dim: D, size of each head.
      causal: whether position i only attends to positions <= i.
      rngs: draws the parameters (`rngs.params()`).
      mode: 'dense' (logits from an MLP of each query), 'random' (a learned
        [max_len, max_len] table per head) or 'factorized' (the table as a
        rank-k product).
      vanilla: also add the dot-product logits q . k / sqrt(D).
      trainable: whether the random table ('random') or its factors
        ('factorized') are learned (nnx.Param) or fixed at their random
        initialization (`FixedLogits`). Must be True for 'dense'.
      k: K, the rank of 'factorized' (ignored by the other modes).
      max_len: N, the longest sequence; the parameters have N positions.
        Required.
      num_heads: H, the heads of the inputs; the parameters are per head.
        Required.

    Raises:
      ValueError: a missing max_len or num_heads, or an option out of range.
    """
    self.head_dim = head_dim
    self.causal = causal
    self.mode = common.check_choice('mode', mode, MODES)
    self.vanilla = _check_bool('vanilla', vanilla)
    self.trainable = _check_bool('trainable', trainable)
    self.k = common.check_positive_int('k', k)
    if mode == 'dense' and not trainable:
      raise ValueError(
        "trainable=False needs mode 'random' or 'factorized' (a fixed "
        "random table), got mode='dense': a fixed random MLP is not one of "
        "the paper's synthesizers"
      )
    self.max_len = common.required_size(
      'synthesizer',
      'max_len',
      max_len,
      'the synthetic logits have one column per position',
    )
    self.num_heads = common.required_size(
      'synthesizer',
      'num_heads',
      num_heads,
      'the synthesizer parameters are per head',
    )
    if vanilla:
      self.uses = ('q', 'k', 'v')
    elif mode == 'dense':
      self.uses = ('q', 'v')
    else:
      self.uses = ('v',)

    h, n, d = self.num_heads, self.max_len, head_dim
    normal = jax.nn.initializers.normal
    table = nnx.Param if trainable else FixedLogits
    if mode == 'dense':
      lecun = normal(stddev=d**-0.5)
      self.hidden_HDD = nnx.Param(lecun(rngs.params(), (h, d, d)))
      self.hidden_bias_HD = nnx.Param(jnp.zeros((h, d)))
      self.out_HDN = nnx.Param(lecun(rngs.params(), (h, d, n)))
      self.out_bias_HN = nnx.Param(jnp.zeros((h, n)))
    elif mode == 'random':
      self.logits_HNN = table(normal(stddev=1.0)(rngs.params(), (h, n, n)))
    else:
      factor = normal(stddev=self.k**-0.25)
      self.left_HNK = table(factor(rngs.params(), (h, n, self.k)))
      self.right_HNK = table(factor(rngs.params(), (h, n, self.k)))

  def table_rows(self, start, rows: int, s: int, dtype) -> jax.Array:
    """Rows start .. start + rows - 1 of R, first s columns: [H, rows, s].

    Only for modes 'random' and 'factorized'.

    Args:
      start: the first row (may be traced, as in decoding).
      rows: how many rows (static).
      s: how many columns (static).
      dtype: the dtype to compute and return in.
    """
    if self.mode == 'random':
      rows_HRN = jax.lax.dynamic_slice_in_dim(
        self.logits_HNN[...], start, rows, axis=1
      )
      return rows_HRN[:, :, :s].astype(dtype)
    left_HRK = jax.lax.dynamic_slice_in_dim(
      self.left_HNK[...], start, rows, axis=1
    )
    right_HSK = self.right_HNK[...][:, :s]
    return jnp.einsum(
      'hrk,hsk->hrs', left_HRK.astype(dtype), right_HSK.astype(dtype)
    )

  def _dense_logits(self, q_BLHD: jax.Array, s: int) -> jax.Array:
    """MLP(q_i), first s logits: [B, H, L, s], in q's (compute) dtype."""
    acc = q_BLHD.dtype
    hidden_BLHD = jnp.einsum(
      'blhd,hde->blhe', q_BLHD, self.hidden_HDD[...].astype(acc)
    )
    hidden_BLHD = jax.nn.relu(
      hidden_BLHD + self.hidden_bias_HD[...].astype(acc)
    )
    logits_BHLS = jnp.einsum(
      'blhe,hes->bhls', hidden_BLHD, self.out_HDN[...][:, :, :s].astype(acc)
    )
    return logits_BHLS + self.out_bias_HN[...][None, :, None, :s].astype(acc)

  def _logits(self, q_BLHD, k_BSHD, start, s):
    """All logits of queries at positions start.. over keys 0..s-1.

    q and k are already in the compute dtype (k with padded keys zeroed).

    Returns:
      [B, H, L, s], or [1, H, L, s] for a token-independent table.
    """
    acc = q_BLHD.dtype
    length = q_BLHD.shape[1]
    if self.mode == 'dense':
      logits_BHLS = self._dense_logits(q_BLHD, s)
    else:
      logits_BHLS = self.table_rows(start, length, s, acc)[None]
    if self.vanilla:
      scale = jnp.sqrt(jnp.asarray(q_BLHD.shape[-1], acc))
      logits_BHLS = (
        logits_BHLS + jnp.einsum('blhd,bshd->bhls', q_BLHD, k_BSHD) / scale
      )
    return logits_BHLS

  def _check_lengths(self, l: int, s: int) -> None:
    # 'dense' makes any number of query rows; the tables have max_len.
    checks = (
      [('key', s)] if self.mode == 'dense' else [('query', l), ('key', s)]
    )
    for what, length in checks:
      if length > self.max_len:
        raise ValueError(
          f'{what} length {length} exceeds max_len={self.max_len} of the '
          'synthesizer; build the module with max_len >= the longest '
          'sequence'
        )

  def __call__(
    self,
    q_BLHD: jax.Array,
    k_BSHD: jax.Array,
    v_BSHD: jax.Array,
    mask: jax.Array | None = None,
  ) -> jax.Array:
    """Synthesizer attention.

    Args:
      q_BLHD: queries [batch, length, heads, head_dim]; read by 'dense' and
        vanilla, otherwise only its shape.
      k_BSHD: keys [batch, key_length, heads, head_dim]; read only with
        vanilla. key_length must equal length when causal.
      v_BSHD: values, same shape as the keys.
      mask: optional bool [batch, key_length]; False marks padded keys.

    Returns:
      [batch, length, heads, head_dim] in the dtype of q.

    Raises:
      ValueError: for mismatched inputs, a head count other than num_heads,
        or a length > max_len.
    """
    common.check_inputs(
      q_BLHD, k_BSHD, v_BSHD, mask, self.head_dim, same_length=self.causal
    )
    b, l, h, _ = q_BLHD.shape
    s = k_BSHD.shape[1]
    self._check_heads(h)
    self._check_lengths(l, s)
    dtype = q_BLHD.dtype
    acc = common.compute_dtype(dtype)
    real_BS = common.key_mask_or_ones(mask, b, s)
    k_BSHD = _zero_padded(k_BSHD.astype(acc), real_BS)
    v_BSHD = _zero_padded(v_BSHD.astype(acc), real_BS)
    logits_BHLS = self._logits(q_BLHD.astype(acc), k_BSHD, 0, s)
    allowed_BHLS = real_BS[:, None, None, :]
    if self.causal:
      allowed_BHLS = allowed_BHLS & (
        jnp.arange(l)[:, None] >= jnp.arange(s)[None, :]
      )
    out_BLHD = _softmax_values(logits_BHLS, allowed_BHLS, v_BSHD)
    return out_BLHD.astype(dtype)

  def _check_heads(self, h: int) -> None:
    if h != self.num_heads:
      raise ValueError(
        f'the inputs have {h} heads but the synthesizer was built with '
        f'num_heads={self.num_heads}'
      )

  # Decoding: the mixin's KV cache and prefill (the parallel pass); the
  # decode step has its own logits (not q . k).

  def init_cache(
    self, batch: int, heads: int, max_len: int, dtype=jnp.float32
  ) -> decoding.Cache:
    """An empty KV cache of `max_len` slots (see `decoding`).

    Raises:
      ValueError: max_len larger than the module's (no logits beyond it).
    """
    decoding.require_causal(self, 'init_cache')
    if isinstance(max_len, int) and max_len > self.max_len:
      raise ValueError(
        f'a cache of max_len={max_len} exceeds max_len={self.max_len} of the '
        'synthesizer, which has logits for that many positions only'
      )
    return super().init_cache(batch, heads, max_len, dtype)

  def decode(
    self,
    q_B1HD: jax.Array,
    k_B1HD: jax.Array,
    v_B1HD: jax.Array,
    cache: decoding.Cache,
  ) -> tuple[jax.Array, decoding.Cache]:
    """One new position's output and the updated cache (see `decoding`).

    Position t (= cache['index']) takes row t of the synthetic logits over
    the T cached slots (slot = position; empty and padded slots are
    invalid): O(T (H + D)) per token.
    """
    decoding.require_causal(self, 'decode')
    decoding.check_step(q_B1HD, k_B1HD, v_B1HD, self.head_dim)
    self._check_heads(q_B1HD.shape[2])
    t = cache['valid'].shape[1]
    position = cache['index']
    cache = decoding.append_kv(cache, k_B1HD, v_B1HD)
    acc = common.compute_dtype(q_B1HD.dtype)
    valid_BT = cache['valid']
    k_BTHD = _zero_padded(cache['k'].astype(acc), valid_BT)
    v_BTHD = _zero_padded(cache['v'].astype(acc), valid_BT)
    logits_BH1T = self._logits(q_B1HD.astype(acc), k_BTHD, position, t)
    out_B1HD = _softmax_values(logits_BH1T, valid_BT[:, None, None, :], v_BTHD)
    return out_B1HD.astype(q_B1HD.dtype), cache


def _zero_padded(x_BSHD: jax.Array, real_BS: jax.Array) -> jax.Array:
  """x with padded positions zeroed (where: inf/NaN there cannot leak)."""
  return jnp.where(real_BS[:, :, None, None], x_BSHD, 0.0)


def _softmax_values(logits_BHLS, allowed_BHLS, v_BSHD):
  """softmax over the allowed keys, times v: [B, L, H, D].

  A query with no allowed key outputs zeros. Disallowed keys get exactly
  zero weight and zero gradient.
  """
  logits_BHLS = jnp.where(allowed_BHLS, logits_BHLS, -jnp.inf)
  top_BHL1 = jax.lax.stop_gradient(jnp.max(logits_BHLS, axis=-1, keepdims=True))
  top_BHL1 = jnp.where(jnp.isfinite(top_BHL1), top_BHL1, 0.0)
  weights_BHLS = jnp.where(allowed_BHLS, jnp.exp(logits_BHLS - top_BHL1), 0.0)
  total_BHL1 = jnp.sum(weights_BHLS, axis=-1, keepdims=True)
  weights_BHLS = weights_BHLS / jnp.where(total_BHL1 > 0, total_BHL1, 1.0)
  return jnp.einsum('bhls,bshd->blhd', weights_BHLS, v_BSHD)
