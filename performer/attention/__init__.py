"""Registry of attention variants behind one interface.

Every variant is a Flax NNX module built by `create` and called as
`attn(q, k, v, mask=None)` with q, k, v of shape [batch, length, heads,
head_dim] and `mask` a [batch, length] key-padding mask (True = real token).
The shared transformer picks a variant by name; nothing else changes.

Example:
  attn = attention.create('favor', head_dim=64, causal=True,
                          rngs=nnx.Rngs(0), num_features=256)
  out_BLHD = attn(q_BLHD, k_BLHD, v_BLHD, mask=mask_BL)

Causal variants also decode autoregressively with an explicit cache pytree
(the protocol is documented in `decoding`):

  cache = attn.init_cache(batch, heads, max_len, dtype)
  out_BLHD, cache = attn.prefill(q_BLHD, k_BLHD, v_BLHD, cache, mask=None)
  out_B1HD, cache = attn.decode(q_B1HD, k_B1HD, v_B1HD, cache)
"""

from performer.attention.registry import (
  create,
  defaults,
  names,
  option_hints,
  options,
  redraw_features,
  register,
  unregister,
  uses,
  with_sizes,
)

__all__ = [
  'create',
  'defaults',
  'names',
  'option_hints',
  'options',
  'redraw_features',
  'register',
  'unregister',
  'uses',
  'with_sizes',
]

# Importing the families registers them.
# ruff: noqa: E402, F401, I001
from performer.attention import favor, linear, linformer, local, longformer
from performer.attention import reformer, sinkhorn, softmax, sparse, synthesizer
