"""Linformer attention (Wang et al. 2020, "Linformer: Self-Attention with
Linear Complexity").

The keys and values are projected along the sequence axis to `k` slots by
learned matrices E and F, stored as [max_len, k] (the paper's E, F in
R^{k x n}, transposed): K' = E^T K and V' = F^T V are [k, D] per head, and
every query takes exact softmax attention over the k slots,

  out_i = softmax(q_i K'^T / sqrt(D)) V'.

The cost is O(L k D) time and O(L k) memory; nothing is L x L.

- E and F are shared by all heads (the paper's "headwise sharing");
  `share_kv=True` uses one matrix for both (the paper's "key-value
  sharing", which the Long Range Arena used). Each attention layer has its
  own (no layerwise sharing).
- A sequence of S < max_len positions uses the first S rows of E and F, as
  if it were padded to max_len with zero rows; S > max_len is an error.
- Padded keys (mask False) are removed before the projection: their rows of
  K and V are set to zero with `jnp.where`, so whatever they hold (even inf
  or NaN) changes no slot. The paper's code instead projects the pad
  tokens' vectors, so there the padding leaks into every slot. A query
  whose keys are all padded sees k zero slots and outputs zeros.
- Every slot mixes all positions, future ones included, so Linformer cannot
  be causal: causal=True is refused, and there is no decoding.

Initialization: E and F are drawn iid N(0, 1/k), the random projection of
the paper's Theorem 1 (Johnson-Lindenstrauss): E^T x then keeps the norm of
each length-S column x of K in expectation, so at initialization the
logits have the size of ordinary softmax attention's, and training starts
from the regime the paper's approximation argument is about.

Tensor names: B batch, L query length, S key length, H heads, D head dim,
K projected slots (the option `k`), N max_len.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from performer.attention import common, registry


@registry.register('linformer')
class LinformerAttention(nnx.Module):
  """Softmax attention over k learned projections of the sequence.

  Bidirectional only. The model fills `max_len` with the longest sequence
  its attention sees; standalone, give it.

  Example:
    attn = attention.create('linformer', head_dim=64, causal=False,
                            rngs=nnx.Rngs(0), k=256, max_len=4096)
    out_BLHD = attn(q_BLHD, k_BSHD, v_BSHD, mask=mask_BS)
  """

  def __init__(
    self,
    *,
    head_dim: int,
    causal: bool,
    rngs: nnx.Rngs,
    k: int = 256,
    max_len: int | None = None,
    share_kv: bool = False,
  ):
    """Builds the module.

    Args:
      head_dim: D, size of each head.
      causal: must be False (see the module docstring).
      rngs: draws E and F (`rngs.params()`).
      k: K, the projected length (the paper's default 256; the Long Range
        Arena used 16). May exceed max_len, though then nothing is saved.
      max_len: N, the longest key sequence; E and F have N rows. Required.
      share_kv: one projection for keys and values (E = F).

    Raises:
      ValueError: causal=True, a missing max_len, or an option out of range.
    """
    if causal:
      raise ValueError(
        'linformer cannot be causal (got causal=True): projecting along the '
        'sequence mixes every position, future ones included, into every '
        'slot; use causal=False'
      )
    common.required_size(
      'linformer', 'max_len', max_len, 'E and F have one row per key position'
    )
    if not isinstance(share_kv, bool):
      raise ValueError(f'share_kv must be True or False, got {share_kv!r}')
    self.head_dim = head_dim
    self.causal = causal
    self.k = common.check_positive_int('k', k)
    self.max_len = common.check_positive_int('max_len', max_len)
    self.share_kv = share_kv
    init = jax.nn.initializers.normal(stddev=1.0 / self.k**0.5)
    self.proj_key = nnx.Param(init(rngs.params(), (self.max_len, self.k)))
    self.proj_value = (
      None
      if share_kv
      else nnx.Param(init(rngs.params(), (self.max_len, self.k)))
    )

  def __call__(
    self,
    q_BLHD: jax.Array,
    k_BSHD: jax.Array,
    v_BSHD: jax.Array,
    mask: jax.Array | None = None,
  ) -> jax.Array:
    """Linformer attention; queries and keys may differ in length.

    Args:
      q_BLHD: queries [batch, length, heads, head_dim].
      k_BSHD: keys [batch, key_length, heads, head_dim], key_length <=
        max_len.
      v_BSHD: values, same shape as the keys.
      mask: optional bool [batch, key_length]; False marks padded keys.

    Returns:
      [batch, length, heads, head_dim] in the dtype of q.

    Raises:
      ValueError: for mismatched inputs or key_length > max_len.
    """
    common.check_inputs(
      q_BLHD, k_BSHD, v_BSHD, mask, self.head_dim, same_length=False
    )
    b, s, _, d = k_BSHD.shape
    if s > self.max_len:
      raise ValueError(
        f'key length {s} exceeds max_len={self.max_len} of the linformer '
        'projections; build the module with max_len >= the longest sequence'
      )
    dtype = q_BLHD.dtype
    acc = common.compute_dtype(dtype)
    real_BS11 = common.key_mask_or_ones(mask, b, s)[:, :, None, None]
    # where, not a product: inf or NaN in padding must not reach a slot.
    k_BSHD = jnp.where(real_BS11, k_BSHD.astype(acc), 0.0)
    v_BSHD = jnp.where(real_BS11, v_BSHD.astype(acc), 0.0)
    e_SK = self.proj_key[:s].astype(acc)
    f_SK = e_SK if self.share_kv else self.proj_value[:s].astype(acc)
    kp_BKHD = jnp.einsum('sk,bshd->bkhd', e_SK, k_BSHD)
    vp_BKHD = jnp.einsum('sk,bshd->bkhd', f_SK, v_BSHD)
    q_BLHD = q_BLHD.astype(acc) / jnp.sqrt(jnp.asarray(d, acc))
    logits_BHLK = jnp.einsum('blhd,bkhd->bhlk', q_BLHD, kp_BKHD)
    weights_BHLK = jax.nn.softmax(logits_BHLK, axis=-1)
    out_BLHD = jnp.einsum('bhlk,bkhd->blhd', weights_BHLK, vp_BKHD)
    return out_BLHD.astype(dtype)
