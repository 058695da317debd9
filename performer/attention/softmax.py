"""Exact softmax attention.

The module calls `jax.nn.dot_product_attention`, so on a GPU with bf16 or
fp16 inputs it takes the cuDNN fused (flash) kernel. `softmax_reference` is a
plain einsum implementation kept as an independent reference.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from performer.attention import common, decoding, registry

IMPLEMENTATIONS = ('auto', 'xla', 'cudnn')


def softmax_reference(
  q_BLHD: jax.Array,
  k_BSHD: jax.Array,
  v_BSHD: jax.Array,
  mask_BS: jax.Array | None = None,
  causal: bool = False,
) -> jax.Array:
  """Dense masked softmax attention written with einsums, in float32.

  A query that sees no real key (all visible keys padded) outputs zeros.
  """
  dtype = q_BLHD.dtype
  q, k, v = (x.astype(jnp.float32) for x in (q_BLHD, k_BSHD, v_BSHD))
  b, l, _, d = q.shape
  s = k.shape[1]
  logits_BHLS = jnp.einsum('blhd,bshd->bhls', q, k) / jnp.sqrt(d)
  allowed_BLS = common.key_mask_or_ones(mask_BS, b, s)[:, None, :]
  if causal:
    allowed_BLS = allowed_BLS & jnp.tril(jnp.ones((l, s), bool))[None]
  allowed_B1LS = allowed_BLS[:, None]
  logits_BHLS = jnp.where(allowed_B1LS, logits_BHLS, -jnp.inf)
  max_BHL1 = jnp.max(logits_BHLS, axis=-1, keepdims=True)
  max_BHL1 = jnp.where(jnp.isfinite(max_BHL1), max_BHL1, 0.0)
  weights_BHLS = jnp.exp(logits_BHLS - max_BHL1)
  denom_BHL1 = jnp.sum(weights_BHLS, axis=-1, keepdims=True)
  weights_BHLS = weights_BHLS / jnp.where(denom_BHL1 > 0, denom_BHL1, 1.0)
  out_BLHD = jnp.einsum('bhls,bshd->blhd', weights_BHLS, v)
  return out_BLHD.astype(dtype)


def _pick_implementation(requested: str, dtype: jnp.dtype) -> str | None:
  if requested != 'auto':
    return requested
  # cuDNN's fused kernel takes only half-precision inputs.
  on_gpu = jax.default_backend() == 'gpu'
  if on_gpu and dtype in (jnp.bfloat16, jnp.float16):
    return 'cudnn'
  return 'xla'


@registry.register('softmax')
class SoftmaxAttention(decoding.KVCacheDecoding, nnx.Module):
  """Exact softmax attention, O(L^2) time and memory (O(L) with cuDNN).

  Decoding (see `decoding`) keeps a KV cache of `max_len` positions; its
  single-query step always uses the XLA implementation.
  """

  def __init__(
    self,
    *,
    head_dim: int,
    causal: bool,
    rngs: nnx.Rngs,
    implementation: str = 'auto',
  ):
    """Builds the module.

    Args:
      head_dim: size of each head.
      causal: whether position i only attends to positions <= i.
      rngs: unused; kept for the common interface.
      implementation: 'auto' (cuDNN on a GPU for bf16/fp16 inputs, XLA
        otherwise), 'xla' or 'cudnn'.
    """
    del rngs
    self.head_dim = head_dim
    self.causal = causal
    self.implementation = common.check_choice(
      'implementation', implementation, IMPLEMENTATIONS
    )

  def __call__(
    self,
    q_BLHD: jax.Array,
    k_BSHD: jax.Array,
    v_BSHD: jax.Array,
    mask: jax.Array | None = None,
  ) -> jax.Array:
    common.check_inputs(
      q_BLHD, k_BSHD, v_BSHD, mask, self.head_dim, same_length=self.causal
    )
    impl = _pick_implementation(self.implementation, q_BLHD.dtype)
    mask_B11S = None if mask is None else mask.astype(bool)[:, None, None, :]
    out_BLHD = jax.nn.dot_product_attention(
      q_BLHD,
      k_BSHD,
      v_BSHD,
      mask=mask_B11S,
      is_causal=self.causal,
      implementation=impl,
    )
    if mask is None:
      return out_BLHD
    # A query that sees no real key would otherwise average the padding.
    visible_BS = mask.astype(bool)
    if self.causal:
      visible_BS = jnp.cumsum(visible_BS, axis=1) > 0
    else:
      visible_BS = jnp.broadcast_to(
        visible_BS.any(axis=1, keepdims=True), (mask.shape[0], q_BLHD.shape[1])
      )
    return out_BLHD * visible_BS[:, :, None, None].astype(out_BLHD.dtype)

  def _allowed_slots(self, cache: decoding.Cache):
    return True  # Every filled slot holds a position <= the query's.
