"""The shared transformer: embeddings, pre-LayerNorm blocks and task heads.

One encoder stack serves every task and every attention variant; the
variant is picked by name from the `performer.attention` registry and is the
only part that changes. Three heads sit on top of the encoder:

- `LanguageModel`: next-token logits for every position (causal by default).
- `Classifier`: one label per sequence, pooled with a CLS token or a masked
  mean (LRA ListOps, Text, Image, Pathfinder).
- `DualEncoder`: one label per pair of sequences, both encoded by the same
  encoder and combined as [u, v, u * v, u - v] (LRA Retrieval).

Dropout layers hold no random stream; randomness comes at call time:

  model = create_model(config.model, rngs=nnx.Rngs(0))
  logits_BLV = model(tokens_BL, mask_BL, train=True,
                     rngs=nnx.Rngs(dropout=jax.random.fold_in(key, step)))

Masks are [batch, length] with True for real tokens; they reach the
attention as key-padding masks and the mean pooling as weights.

Generation: `LanguageModel` decodes with an explicit cache (a pytree, see
`performer.attention.decoding`), jit-compilable step by step:

  cache = model.init_cache(batch, max_len)
  logits_BLV, cache = model.prefill(prompt_BL, cache)  # one parallel pass
  logits_B1V, cache = model.decode_step(next_B1, cache)  # one token

Mixed precision: parameters are always float32; activations use the
configured compute dtype; the final LayerNorm, the heads and the returned
logits are float32.
"""

import typing

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from performer import attention
from performer.attention import common

POSITIONS = ('learned', 'sinusoidal', 'rotary', 'none')
POOLS = ('cls', 'mean')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

# Option types that a ConfigDict placeholder (and so a command-line
# override) can carry.
_PLACEHOLDER_TYPES = (bool, int, float, str)


def default_config() -> ml_collections.ConfigDict:
  """Returns the model configuration with its defaults.

  Fields:
    head: 'lm', 'classifier' or 'dual_encoder'.
    vocab_size: number of token ids.
    max_len: size of the learned position table (only 'learned' positions
      limit the sequence length).
    emb_dim: width of the residual stream.
    num_heads: attention heads.
    num_layers: transformer blocks.
    qkv_dim: total width of the queries, keys and values (split evenly over
      the heads).
    mlp_dim: hidden width of the blocks' MLPs and of the classifier heads.
    dropout_rate: dropout on the embeddings and on each residual branch.
    position: 'learned' or 'sinusoidal' (added to the embeddings), 'rotary'
      (applied to queries and keys in every block) or 'none'.
    rotary_base: wavelength base of the rotary encoding.
    attention: a registered attention variant, one of
      `performer.attention.names()`.
    attention_options: one sub-dict per registered variant holding that
      variant's options; the model passes
      `attention_options[attention]` to `attention.create`. Options whose
      registry default is None become typed placeholders (None until set)
      when their annotation names one scalar type, so they can still be set
      from the command line; None is dropped before `create`, which then
      uses the variant's own default. Options of other types with a None
      default are left out; set them in a config file.
    causal: whether position i attends only to positions <= i. Must be
      False for the classifier heads.
    tie_embeddings: whether the LM's output projection reuses the token
      embedding table.
    num_classes: classes of the classifier heads.
    pool: 'cls' (a learned token prepended to the sequence) or 'mean'
      (average over real tokens).
    dtype: compute dtype, 'float32' or 'bfloat16'; parameters stay float32.
    remat: rematerialize each block in the backward pass (`nnx.remat`):
      only the blocks' inputs are kept from the forward pass, so
      activation memory holds one block's intermediates instead of every
      block's, for about one more forward pass of compute. The same loss
      and gradients either way.
  """
  config = ml_collections.ConfigDict()
  config.head = 'lm'
  config.vocab_size = 256
  config.max_len = 2048
  config.emb_dim = 256
  config.num_heads = 4
  config.num_layers = 4
  config.qkv_dim = 256
  config.mlp_dim = 1024
  config.dropout_rate = 0.1
  config.position = 'learned'
  config.rotary_base = 10000.0
  config.attention = 'favor'
  config.attention_options = default_attention_options()
  config.causal = True
  config.tie_embeddings = False
  config.num_classes = 2
  config.pool = 'cls'
  config.dtype = 'float32'
  config.remat = False
  return config


def default_attention_options() -> ml_collections.ConfigDict:
  """One sub-dict of registry defaults per registered attention variant."""
  options = ml_collections.ConfigDict()
  for name in attention.names():
    variant = ml_collections.ConfigDict()
    for key, value in attention.defaults(name).items():
      if value is None:
        field_type = _option_type(name, key)
        if field_type is None:
          continue
        value = ml_collections.config_dict.placeholder(field_type)
      variant[key] = value
    options[name] = variant
  return options


def attention_create_options(
  config: ml_collections.ConfigDict, name: str, *, cls_token: bool
) -> dict:
  """The options that the model passes to `attention.create(name, ...)`.

  None means "the variant's default" and is dropped, except for the sizes
  that only the model knows: a variant with a `max_len` option (learned
  [max_len, ...] parameters: Linformer, Synthesizer, Sinkhorn) gets the
  longest sequence its attention sees, `config.max_len` plus the CLS token,
  and one with a `num_heads` option gets `config.num_heads`.

  Args:
    config: a model config (`default_config()` fields).
    name: a registered attention variant.
    cls_token: whether the encoder prepends a CLS token.
  """
  options = config['attention_options'].get(name, {}) or {}
  if isinstance(options, ml_collections.ConfigDict):
    options = options.to_dict()
  options = {k: v for k, v in dict(options).items() if v is not None}
  max_len, num_heads = config['max_len'], config['num_heads']
  # An invalid size is reported by the model's own checks, not here.
  if isinstance(max_len, int) and isinstance(num_heads, int):
    options = attention.with_sizes(
      name, options, max_len=max_len + int(cls_token), num_heads=num_heads
    )
  return options


def _option_type(name: str, key: str) -> type | None:
  """The one scalar type that option `key` of variant `name` is declared as.

  Returns None when the annotation is missing, cannot be resolved, or allows
  several types.
  """
  hint = attention.option_hints(name).get(key)
  kinds = [t for t in typing.get_args(hint) or (hint,) if t is not type(None)]
  if len(kinds) == 1 and kinds[0] in _PLACEHOLDER_TYPES:
    return kinds[0]
  return None


def sinusoidal_positions(positions_L: jax.Array, dim: int) -> jax.Array:
  """Fixed sine/cosine position encodings (Vaswani et al., 2017).

  Args:
    positions_L: integer or float positions.
    dim: encoding width; must be even.

  Returns:
    [L, dim] float32 encodings; channel 2i is sin(p / base^(2i / dim)) and
    channel 2i + 1 the matching cosine, with base 10000.
  """
  inv_freq_F = 10000.0 ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  angles_LF = positions_L.astype(jnp.float32)[:, None] * inv_freq_F[None]
  enc_LF2 = jnp.stack([jnp.sin(angles_LF), jnp.cos(angles_LF)], axis=-1)
  return enc_LF2.reshape(positions_L.shape[0], dim)


def apply_rotary(
  x_BLHD: jax.Array, positions_L: jax.Array, base: float = 10000.0
) -> jax.Array:
  """Rotary position embedding (Su et al., RoFormer).

  Channel i and channel i + D/2 form a pair that is rotated by the angle
  p * base^(-2i / D) at position p, so the dot product of a rotated query at
  position p and a rotated key at position s depends on p - s only.

  Args:
    x_BLHD: queries or keys; the head dim D must be even.
    positions_L: integer positions of the L tokens.
    base: wavelength base.

  Returns:
    The rotated tensor, in the dtype of `x_BLHD` (the rotation itself runs
    in float32 so that long positions keep their angle precision).
  """
  half = x_BLHD.shape[-1] // 2
  inv_freq_F = base ** (-jnp.arange(half, dtype=jnp.float32) * 2.0 / (2 * half))
  angles_LF = positions_L.astype(jnp.float32)[:, None] * inv_freq_F[None]
  cos_1L1F = jnp.cos(angles_LF)[None, :, None, :]
  sin_1L1F = jnp.sin(angles_LF)[None, :, None, :]
  x = x_BLHD.astype(jnp.float32)
  x1_BLHF, x2_BLHF = x[..., :half], x[..., half:]
  out_BLHD = jnp.concatenate(
    [
      x1_BLHF * cos_1L1F - x2_BLHF * sin_1L1F,
      x2_BLHF * cos_1L1F + x1_BLHF * sin_1L1F,
    ],
    axis=-1,
  )
  return out_BLHD.astype(x_BLHD.dtype)


class Block(nnx.Module):
  """Pre-LayerNorm transformer block around a registered attention variant."""

  def __init__(
    self,
    *,
    emb_dim: int,
    num_heads: int,
    qkv_dim: int,
    mlp_dim: int,
    dropout_rate: float,
    attention_name: str,
    attention_options: dict,
    causal: bool,
    rotary: bool,
    rotary_base: float,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
  ):
    head_dim = qkv_dim // num_heads
    self.num_heads = num_heads
    self.rotary = rotary
    self.rotary_base = rotary_base
    self.dtype = dtype
    self.attn_norm = nnx.LayerNorm(emb_dim, dtype=dtype, rngs=rngs)
    self.query, self.key, self.value = (
      nnx.LinearGeneral(emb_dim, (num_heads, head_dim), dtype=dtype, rngs=rngs)
      for _ in range(3)
    )
    self.attention = attention.create(
      attention_name,
      head_dim=head_dim,
      causal=causal,
      rngs=rngs,
      **attention_options,
    )
    # A variant that ignores some of q, k, v (Reformer shares QK; a random
    # Synthesizer needs only v) gets no projection for them, so that no
    # parameter is left without a gradient. They are dropped after being
    # built so that every other parameter keeps its initial value for a
    # given seed.
    self.uses = attention.uses(self.attention)
    self.query, self.key, self.value = (
      proj if name in self.uses else None
      for name, proj in zip(
        'qkv', (self.query, self.key, self.value), strict=True
      )
    )
    self.attn_out = nnx.LinearGeneral(
      (num_heads, head_dim), emb_dim, axis=(-2, -1), dtype=dtype, rngs=rngs
    )
    self.attn_dropout = nnx.Dropout(dropout_rate)
    self.mlp_norm = nnx.LayerNorm(emb_dim, dtype=dtype, rngs=rngs)
    self.mlp_in = nnx.Linear(emb_dim, mlp_dim, dtype=dtype, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_dim, emb_dim, dtype=dtype, rngs=rngs)
    self.mlp_dropout = nnx.Dropout(dropout_rate)

  def __call__(
    self,
    x_BLE: jax.Array,
    mask_BL: jax.Array | None,
    positions_L: jax.Array,
    *,
    train: bool,
    rngs: nnx.Rngs | None,
  ) -> jax.Array:
    q_BLHD, k_BLHD, v_BLHD = self.qkv(x_BLE, positions_L)
    a_BLHD = self.attention(q_BLHD, k_BLHD, v_BLHD, mask=mask_BL)
    # Variants with running statistics of their inputs (causal FAVOR++ and
    # FAVOR#) learn them from training batches, after the batch's outputs.
    update_statistics = getattr(self.attention, 'update_statistics', None)
    if train and update_statistics is not None:
      update_statistics(q_BLHD, k_BLHD, mask=mask_BL)
    return self._residuals(x_BLE, a_BLHD, train=train, rngs=rngs)

  def prefill(
    self,
    x_BLE: jax.Array,
    mask_BL: jax.Array | None,
    positions_L: jax.Array,
    cache: dict,
  ) -> tuple[jax.Array, dict]:
    """The block over a prompt, filling its attention's decoding cache."""
    q_BLHD, k_BLHD, v_BLHD = self.qkv(x_BLE, positions_L)
    a_BLHD, cache = self.attention.prefill(
      q_BLHD, k_BLHD, v_BLHD, cache, mask=mask_BL
    )
    return self._residuals(x_BLE, a_BLHD, train=False, rngs=None), cache

  def decode_step(
    self, x_B1E: jax.Array, positions_1: jax.Array, cache: dict
  ) -> tuple[jax.Array, dict]:
    """The block at one new position, from and into its attention cache."""
    q_B1HD, k_B1HD, v_B1HD = self.qkv(x_B1E, positions_1)
    a_B1HD, cache = self.attention.decode(q_B1HD, k_B1HD, v_B1HD, cache)
    return self._residuals(x_B1E, a_B1HD, train=False, rngs=None), cache

  def qkv(self, x_BLE, positions_L):
    """The attention's q, k, v [B, L, H, D]; an unused one repeats another."""
    h_BLE = self.attn_norm(x_BLE)
    projected = {
      name: proj(h_BLE)
      for name, proj in zip(
        'qkv', (self.query, self.key, self.value), strict=True
      )
      if proj is not None
    }
    if self.rotary:
      for name in ('q', 'k'):
        if name in projected:
          projected[name] = apply_rotary(
            projected[name], positions_L, self.rotary_base
          )
    # Shared QK: the keys are the queries.
    fallback = {'q': ('k', 'v'), 'k': ('q', 'v'), 'v': ('q', 'k')}
    for name, others in fallback.items():
      if name not in projected:
        projected[name] = next(projected[o] for o in others if o in projected)
    return projected['q'], projected['k'], projected['v']

  def _residuals(self, x_BLE, a_BLHD, *, train, rngs):
    """Attention output projection, MLP and both residual branches."""
    a_BLE = self.attn_out(a_BLHD.astype(self.dtype))
    x_BLE = x_BLE + self.attn_dropout(a_BLE, deterministic=not train, rngs=rngs)

    h_BLE = self.mlp_norm(x_BLE)
    h_BLF = nnx.gelu(self.mlp_in(h_BLE))
    h_BLE = self.mlp_out(h_BLF)
    return x_BLE + self.mlp_dropout(h_BLE, deterministic=not train, rngs=rngs)


class Encoder(nnx.Module):
  """Token (+ position) embedding, a stack of blocks and a final LayerNorm.

  With `cls_token`, a learned vector is prepended to every sequence after
  the position embeddings are added (it carries no learned or sinusoidal
  position; under rotary it sits at position 0 and the tokens at 1..L, which
  leaves their relative offsets unchanged).
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    *,
    causal: bool,
    cls_token: bool,
    rngs: nnx.Rngs,
  ):
    """Builds the encoder from a validated model config (see `create_model`)."""
    self.dtype = DTYPES[config.dtype]
    self.position = config.position
    self.max_len = config.max_len
    self.emb_dim = config.emb_dim
    # .get: configs saved before the option existed.
    self.remat = config.get('remat', False)
    self.token_embed = nnx.Embed(
      config.vocab_size, config.emb_dim, dtype=self.dtype, rngs=rngs
    )
    init = nnx.initializers.normal(0.02)
    self.pos_embed_PE = (
      nnx.Param(init(rngs.params(), (config.max_len, config.emb_dim)))
      if self.position == 'learned'
      else None
    )
    self.cls_E = (
      nnx.Param(init(rngs.params(), (config.emb_dim,))) if cls_token else None
    )
    self.embed_dropout = nnx.Dropout(config.dropout_rate)
    options = attention_create_options(
      config, config.attention, cls_token=cls_token
    )
    self.blocks = nnx.List(
      [
        Block(
          emb_dim=config.emb_dim,
          num_heads=config.num_heads,
          qkv_dim=config.qkv_dim,
          mlp_dim=config.mlp_dim,
          dropout_rate=config.dropout_rate,
          attention_name=config.attention,
          attention_options=options,
          causal=causal,
          rotary=self.position == 'rotary',
          rotary_base=config.rotary_base,
          dtype=self.dtype,
          rngs=rngs,
        )
        for _ in range(config.num_layers)
      ]
    )
    # The heads and the loss read these features; float32 keeps the logits
    # precise under bf16 compute.
    self.final_norm = nnx.LayerNorm(
      config.emb_dim, dtype=jnp.float32, rngs=rngs
    )

  def __call__(
    self,
    tokens_BL: jax.Array,
    mask_BL: jax.Array | None = None,
    *,
    train: bool = False,
    rngs: nnx.Rngs | None = None,
  ) -> jax.Array:
    """Encodes a batch of token ids.

    Args:
      tokens_BL: int token ids.
      mask_BL: optional bool key-padding mask, True for real tokens.
      train: whether dropout is on.
      rngs: random streams with a 'dropout' stream (needed when `train`).

    Returns:
      float32 features [B, T, E]; T = L + 1 when the encoder has a CLS token
      (at index 0), else L.
    """
    x_BLE, mask_BL, positions_L = self._block_inputs(
      tokens_BL, mask_BL, train=train, rngs=rngs
    )

    def run_block(block, x_BLE, mask_BL, positions_L, rngs):
      return block(x_BLE, mask_BL, positions_L, train=train, rngs=rngs)

    if self.remat:
      # `train` stays a Python bool (closed over), so each mode traces
      # once; the block's variables (parameters, running statistics,
      # feature seeds) go through nnx's lifted checkpoint.
      run_block = nnx.remat(run_block)
    for block in self.blocks:
      x_BLE = run_block(block, x_BLE, mask_BL, positions_L, rngs)
    return self.final_norm(x_BLE)

  def _block_inputs(self, tokens_BL, mask_BL, *, train, rngs):
    """The first block's input, the mask and the positions (CLS included)."""
    b, l = tokens_BL.shape
    self._check_length(l, 'sequence length')
    x_BLE = self._embed(tokens_BL, jnp.arange(l))
    x_BLE = self.embed_dropout(x_BLE, deterministic=not train, rngs=rngs)
    if mask_BL is not None:
      mask_BL = mask_BL.astype(bool)
    if self.cls_E is not None:
      cls_B1E = jnp.broadcast_to(
        self.cls_E[...].astype(self.dtype), (b, 1, self.emb_dim)
      )
      x_BLE = jnp.concatenate([cls_B1E, x_BLE], axis=1)
      if mask_BL is not None:
        mask_BL = jnp.concatenate([jnp.ones((b, 1), bool), mask_BL], axis=1)
    return x_BLE, mask_BL, jnp.arange(x_BLE.shape[1])

  def attention_inputs(
    self, tokens_BL: jax.Array, mask_BL: jax.Array | None = None
  ) -> tuple[list[tuple[jax.Array, jax.Array, jax.Array]], jax.Array | None]:
    """What each block's attention sees, for analysis (no dropout).

    Args:
      tokens_BL: int token ids.
      mask_BL: optional bool key-padding mask, True for real tokens.

    Returns:
      ([(q, k, v) per block, each [B, T, H, D]], the mask [B, T] or None);
      T = L + 1 with a CLS token (at index 0), else L.
    """
    x_BLE, mask_BL, positions_L = self._block_inputs(
      tokens_BL, mask_BL, train=False, rngs=None
    )
    inputs = []
    for block in self.blocks:
      inputs.append(block.qkv(x_BLE, positions_L))
      x_BLE = block(x_BLE, mask_BL, positions_L, train=False, rngs=None)
    return inputs, mask_BL

  @property
  def max_decode_len(self) -> int | None:
    """The most positions a sequence may have (None: no limit).

    Only the learned position table limits the length.
    """
    return self.max_len if self.position == 'learned' else None

  def _check_length(self, length: int, what: str) -> None:
    limit = self.max_decode_len
    if limit is not None and length > limit:
      raise ValueError(
        f'{what} {length} exceeds max_len={limit} of the learned position table'
      )

  def _embed(self, tokens_BL: jax.Array, positions_L: jax.Array) -> jax.Array:
    """Token embeddings plus learned or sinusoidal position encodings."""
    x_BLE = self.token_embed(tokens_BL)
    if self.position == 'learned':
      pos_LE = jnp.take(self.pos_embed_PE[...], positions_L, axis=0)
      x_BLE = x_BLE + pos_LE.astype(self.dtype)[None]
    elif self.position == 'sinusoidal':
      enc_LE = sinusoidal_positions(positions_L, self.emb_dim)
      x_BLE = x_BLE + enc_LE.astype(self.dtype)[None]
    return x_BLE

  def init_cache(self, batch: int, max_len: int) -> dict:
    """An empty decoding cache for sequences of at most `max_len` tokens.

    Args:
      batch: sequences decoded together.
      max_len: prompt plus generated tokens; sizes the KV caches (variants
        with a constant-size state ignore it).

    Returns:
      {'index': int32 0, 'layers': one attention cache per block}.

    Raises:
      ValueError: `max_len` beyond the learned position table, or a
        bidirectional encoder.
    """
    if self.cls_E is not None:
      raise ValueError('an encoder with a CLS token cannot decode')
    common.check_positive_int('max_len', max_len)
    self._check_length(max_len, 'decoding max_len')
    layers = [
      block.attention.init_cache(batch, block.num_heads, max_len, self.dtype)
      for block in self.blocks
    ]
    return {'index': jnp.zeros((), jnp.int32), 'layers': layers}

  def prefill(
    self,
    tokens_BL: jax.Array,
    cache: dict,
    mask_BL: jax.Array | None = None,
  ) -> tuple[jax.Array, dict]:
    """Features of a prompt at positions 0 .. L - 1, and the filled cache."""
    l = tokens_BL.shape[1]
    self._check_length(l, 'prompt length')
    positions_L = jnp.arange(l)
    x_BLE = self._embed(tokens_BL, positions_L)
    if mask_BL is not None:
      mask_BL = mask_BL.astype(bool)
    layers = []
    for block, layer_cache in zip(self.blocks, cache['layers'], strict=True):
      x_BLE, layer_cache = block.prefill(
        x_BLE, mask_BL, positions_L, layer_cache
      )
      layers.append(layer_cache)
    new_cache = {'index': jnp.asarray(l, jnp.int32), 'layers': layers}
    return self.final_norm(x_BLE), new_cache

  def decode_step(
    self, tokens_B1: jax.Array, cache: dict
  ) -> tuple[jax.Array, dict]:
    """Features of one new token at position cache['index'], and the cache."""
    if tokens_B1.shape[1] != 1:
      raise ValueError(
        f'decode_step takes one token per sequence, [batch, 1], got shape '
        f'{tuple(tokens_B1.shape)}'
      )
    positions_1 = cache['index'] + jnp.arange(1)
    x_B1E = self._embed(tokens_B1, positions_1)
    layers = []
    for block, layer_cache in zip(self.blocks, cache['layers'], strict=True):
      x_B1E, layer_cache = block.decode_step(x_B1E, positions_1, layer_cache)
      layers.append(layer_cache)
    new_cache = {'index': cache['index'] + 1, 'layers': layers}
    return self.final_norm(x_B1E), new_cache


class LanguageModel(nnx.Module):
  """Encoder plus a projection to next-token logits."""

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    """Builds the model from a validated config (see `create_model`)."""
    self.dropout_rate = config.dropout_rate
    self.encoder = Encoder(
      config, causal=config.causal, cls_token=False, rngs=rngs
    )
    self.output = (
      None
      if config.tie_embeddings
      else nnx.Linear(
        config.emb_dim, config.vocab_size, dtype=jnp.float32, rngs=rngs
      )
    )

  def __call__(
    self,
    tokens_BL: jax.Array,
    mask_BL: jax.Array | None = None,
    *,
    train: bool = False,
    rngs: nnx.Rngs | None = None,
  ) -> jax.Array:
    """Returns float32 logits [B, L, V]; position i predicts token i + 1.

    Args:
      tokens_BL: int token ids.
      mask_BL: optional bool key-padding mask, True for real tokens.
      train: whether dropout is on.
      rngs: random streams with a 'dropout' stream (needed when `train` and
        the dropout rate is positive).
    """
    _check_rngs(train, rngs, self.dropout_rate)
    x_BLE = self.encoder(tokens_BL, mask_BL, train=train, rngs=rngs)
    return self._logits(x_BLE)

  def _logits(self, x_BLE: jax.Array) -> jax.Array:
    if self.output is None:
      table_VE = self.encoder.token_embed.embedding[...]
      return jnp.einsum('ble,ve->blv', x_BLE, table_VE.astype(jnp.float32))
    return self.output(x_BLE)

  @property
  def max_decode_len(self) -> int | None:
    """The most tokens (prompt plus generated) a sequence may have.

    max_len with learned positions, else None (no limit).
    """
    return self.encoder.max_decode_len

  def init_cache(self, batch: int, max_len: int) -> dict:
    """An empty decoding cache (see `Encoder.init_cache`).

    Args:
      batch: sequences decoded together.
      max_len: the most tokens (prompt plus generated) a sequence will
        have; sizes the softmax and sparse KV caches.

    Raises:
      ValueError: for a bidirectional model, or `max_len` beyond the
        learned position table.
    """
    return self.encoder.init_cache(batch, max_len)

  def prefill(
    self,
    tokens_BL: jax.Array,
    cache: dict,
    mask_BL: jax.Array | None = None,
  ) -> tuple[jax.Array, dict]:
    """Runs a prompt in one parallel pass; returns its logits and the cache.

    Args:
      tokens_BL: the prompts, positions 0 .. L - 1.
      cache: from `init_cache` (only its shapes are read: a prefill starts
        a new sequence).
      mask_BL: optional key-padding mask of the prompts.

    Returns:
      float32 logits [B, L, V], equal to `model(tokens_BL, mask_BL)`, and
      the cache holding L positions.
    """
    x_BLE, cache = self.encoder.prefill(tokens_BL, cache, mask_BL)
    return self._logits(x_BLE), cache

  def decode_step(
    self, tokens_B1: jax.Array, cache: dict
  ) -> tuple[jax.Array, dict]:
    """Feeds one token per sequence at position cache['index'].

    Args:
      tokens_B1: int token ids [B, 1].
      cache: the cache after the previous tokens.

    Returns:
      float32 logits [B, 1, V] (those the full forward pass gives at this
      position) and the cache holding one more position.
    """
    x_B1E, cache = self.encoder.decode_step(tokens_B1, cache)
    return self._logits(x_B1E), cache


class Classifier(nnx.Module):
  """Encoder, pooling and an MLP to class logits."""

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    """Builds the model from a validated config (see `create_model`)."""
    self.dropout_rate = config.dropout_rate
    self.pool = config.pool
    self.encoder = Encoder(
      config, causal=False, cls_token=config.pool == 'cls', rngs=rngs
    )
    self.head = _MlpHead(
      config.emb_dim, config.mlp_dim, config.num_classes, rngs=rngs
    )

  def __call__(
    self,
    tokens_BL: jax.Array,
    mask_BL: jax.Array | None = None,
    *,
    train: bool = False,
    rngs: nnx.Rngs | None = None,
  ) -> jax.Array:
    """Returns float32 class logits [B, C].

    Args:
      tokens_BL: int token ids.
      mask_BL: optional bool padding mask, True for real tokens.
      train: whether dropout is on.
      rngs: random streams with a 'dropout' stream (needed when `train` and
        the dropout rate is positive).
    """
    _check_rngs(train, rngs, self.dropout_rate)
    x_BTE = self.encoder(tokens_BL, mask_BL, train=train, rngs=rngs)
    return self.head(_pool(x_BTE, mask_BL, self.pool))


class DualEncoder(nnx.Module):
  """Two sequences through one shared encoder, pooled and compared.

  The pooled vectors u and v are combined as [u, v, u * v, u - v] (as in
  the LRA retrieval baseline) and classified by an MLP.
  """

  def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    """Builds the model from a validated config (see `create_model`)."""
    self.dropout_rate = config.dropout_rate
    self.pool = config.pool
    self.encoder = Encoder(
      config, causal=False, cls_token=config.pool == 'cls', rngs=rngs
    )
    self.head = _MlpHead(
      4 * config.emb_dim, config.mlp_dim, config.num_classes, rngs=rngs
    )

  def __call__(
    self,
    tokens1_BL: jax.Array,
    tokens2_BL: jax.Array,
    mask1_BL: jax.Array | None = None,
    mask2_BL: jax.Array | None = None,
    *,
    train: bool = False,
    rngs: nnx.Rngs | None = None,
  ) -> jax.Array:
    """Returns float32 class logits [B, C] for the pairs.

    Args:
      tokens1_BL: int token ids of the first sequences.
      tokens2_BL: int token ids of the second sequences (any length).
      mask1_BL: optional bool padding mask of the first sequences.
      mask2_BL: optional bool padding mask of the second sequences.
      train: whether dropout is on.
      rngs: random streams with a 'dropout' stream (needed when `train` and
        the dropout rate is positive).
    """
    _check_rngs(train, rngs, self.dropout_rate)
    b = tokens1_BL.shape[0]
    if tokens1_BL.shape == tokens2_BL.shape:
      # One pass over the stacked batch: half the traced graph of two calls.
      mask_2BL = None
      if mask1_BL is not None or mask2_BL is not None:
        ones_BL = jnp.ones(tokens1_BL.shape, bool)
        mask_2BL = jnp.concatenate(
          [
            ones_BL if m is None else m.astype(bool)
            for m in (mask1_BL, mask2_BL)
          ]
        )
      tokens_2BL = jnp.concatenate([tokens1_BL, tokens2_BL])
      x_2BTE = self.encoder(tokens_2BL, mask_2BL, train=train, rngs=rngs)
      pooled_2BE = _pool(x_2BTE, mask_2BL, self.pool)
      u_BE, v_BE = pooled_2BE[:b], pooled_2BE[b:]
    else:
      x1_BTE = self.encoder(tokens1_BL, mask1_BL, train=train, rngs=rngs)
      x2_BTE = self.encoder(tokens2_BL, mask2_BL, train=train, rngs=rngs)
      u_BE = _pool(x1_BTE, mask1_BL, self.pool)
      v_BE = _pool(x2_BTE, mask2_BL, self.pool)
    combined_BF = jnp.concatenate([u_BE, v_BE, u_BE * v_BE, u_BE - v_BE], -1)
    return self.head(combined_BF)


class _MlpHead(nnx.Module):
  """Linear -> gelu -> linear, in float32."""

  def __init__(self, in_dim: int, hidden: int, out_dim: int, *, rngs):
    self.hidden = nnx.Linear(in_dim, hidden, dtype=jnp.float32, rngs=rngs)
    self.out = nnx.Linear(hidden, out_dim, dtype=jnp.float32, rngs=rngs)

  def __call__(self, x_BF: jax.Array) -> jax.Array:
    return self.out(nnx.gelu(self.hidden(x_BF.astype(jnp.float32))))


def _pool(x_BTE: jax.Array, mask_BL: jax.Array | None, pool: str) -> jax.Array:
  """Pools encoder features to [B, E]: CLS slot or mean over real tokens."""
  if pool == 'cls':
    return x_BTE[:, 0]
  if mask_BL is None:
    return jnp.mean(x_BTE, axis=1)
  weights_BL1 = mask_BL.astype(x_BTE.dtype)[..., None]
  count_B1 = jnp.maximum(jnp.sum(weights_BL1, axis=1), 1.0)
  return jnp.sum(x_BTE * weights_BL1, axis=1) / count_B1


def _check_rngs(train: bool, rngs: nnx.Rngs | None, rate: float) -> None:
  if train and rate > 0 and rngs is None:
    raise ValueError(
      'train=True with dropout_rate > 0 needs rngs with a dropout stream, '
      'e.g. rngs=nnx.Rngs(dropout=key)'
    )


# The model class of each head; `model.head` names one.
MODELS = {
  'lm': LanguageModel,
  'classifier': Classifier,
  'dual_encoder': DualEncoder,
}
HEADS = tuple(MODELS)


def create_model(
  model_config: ml_collections.ConfigDict, *, rngs: nnx.Rngs
) -> nnx.Module:
  """Builds the model that `model_config.head` names.

  The config is taken as valid: `performer.validate.check_model` reports
  every problem of one (the trainer checks it with the whole config).

  Args:
    model_config: a config with the fields of `default_config()`.
    rngs: random streams for the parameters and the attention variants' own
      state.

  Returns:
    A `LanguageModel`, `Classifier` or `DualEncoder`.

  Raises:
    ValueError: an unknown head.
  """
  if model_config.head not in MODELS:
    raise ValueError(
      f'model.head must be one of {list(HEADS)}, got {model_config.head!r}'
    )
  return MODELS[model_config.head](model_config, rngs=rngs)
