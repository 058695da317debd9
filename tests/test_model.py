"""Tests of the shared transformer with every registered attention variant.

Sizes are tiny so that each test runs in seconds on a CPU. Tolerances are
stated where they are used; exact zeros are asserted where the maths gives
exact zeros (causality).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from performer import attention, model, validate
from tests.test_attention_interface import BIDIRECTIONAL_ONLY

# Small values for options that some variants have; a variant only gets the
# ones it accepts (see `attention.options`).
SMALL_OPTIONS = {
  'k': 8,
  'num_features': 16,
  'chunk_size': 8,
  'window': 8,
  'window_size': 8,
  'block_size': 8,
  'bucket_size': 4,
}
LENGTH = 16
BATCH = 2
VOCAB = 32
HEADS = ('lm', 'classifier', 'dual_encoder')


def small_config(
  name: str = 'softmax', head: str = 'lm', **overrides
) -> ml_collections.ConfigDict:
  """A tiny model config using attention variant `name`."""
  config = model.default_config()
  config.head = head
  config.attention = name
  config.causal = head == 'lm'
  config.vocab_size = VOCAB
  config.max_len = 4 * LENGTH
  config.emb_dim = 16
  config.num_heads = 2
  config.num_layers = 1
  config.qkv_dim = 16
  config.mlp_dim = 32
  config.num_classes = 3
  config.dropout_rate = 0.0
  valid = attention.options(name)
  for key, value in SMALL_OPTIONS.items():
    if key in valid:
      config.attention_options[name][key] = value
  for key, value in overrides.items():
    config[key] = value
  return config


def build(config: ml_collections.ConfigDict, seed: int = 0) -> nnx.Module:
  return model.create_model(config, rngs=nnx.Rngs(seed))


def tokens(seed: int, length: int = LENGTH, batch: int = BATCH) -> jax.Array:
  return jax.random.randint(jax.random.key(seed), (batch, length), 0, VOCAB)


def padding_mask(length: int = LENGTH) -> jax.Array:
  """Batch row 0 is full; row 1 has its last 5 tokens padded."""
  lengths = jnp.array([length, length - 5])
  return jnp.arange(length)[None] < lengths[:, None]


@nnx.jit(static_argnames=('head', 'train'))
def call(net, head, toks, mask=None, *, train=False, rngs=None) -> jax.Array:
  """Runs any head (the dual encoder on (toks, reversed toks)), jitted.

  One compiled program is much faster on a CPU than the op-by-op calls.
  """
  if head == 'dual_encoder':
    return net(toks, toks[::-1], mask, None, train=train, rngs=rngs)
  return net(toks, mask, train=train, rngs=rngs)


@pytest.mark.parametrize('head', HEADS)
@pytest.mark.parametrize('name', attention.names())
def test_every_variant_and_head_runs(name, head):
  if head == 'lm' and name in BIDIRECTIONAL_ONLY:
    with pytest.raises(ValueError, match='causal'):
      build(small_config(name, head))
    return
  net = build(small_config(name, head))
  logits = call(net, head, tokens(0), padding_mask())
  expected = (BATCH, LENGTH, VOCAB) if head == 'lm' else (BATCH, 3)
  assert logits.shape == expected
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


def test_default_config_has_options_for_every_variant():
  config = model.default_config()
  assert set(config.attention_options) == set(attention.names())
  for name in attention.names():
    for key, value in attention.defaults(name).items():
      if value is not None:
        assert config.attention_options[name][key] == value


def test_options_override_on_locked_config():
  config = small_config('softmax')
  config.lock()
  # What `--config.model.attention_options.softmax.implementation=xla` does.
  config.attention_options.softmax.implementation = 'xla'
  net = build(config)
  assert net.encoder.blocks[0].attention.implementation == 'xla'
  with pytest.raises(AttributeError):
    config.attention_options.softmax.no_such_option = 1


class _ProbeAttention(nnx.Module):
  """Softmax attention with an int option whose default is None."""

  def __init__(
    self, *, head_dim: int, causal: bool, rngs, depth: int | None = None
  ):
    self.inner = attention.create(
      'softmax', head_dim=head_dim, causal=causal, rngs=rngs
    )
    self.depth = depth

  def __call__(self, q, k, v, mask=None):
    return self.inner(q, k, v, mask=mask)


@pytest.fixture
def probe_variant():
  """Registers `_ProbeAttention` as 'probe' for one test only."""
  attention.register('probe')(_ProbeAttention)
  try:
    yield 'probe'
  finally:
    attention.unregister('probe')


def test_none_default_becomes_typed_placeholder(probe_variant):
  config = small_config(probe_variant)
  assert config.attention_options.probe.depth is None
  config.lock()
  built = build(config)
  assert built.encoder.blocks[0].attention.depth is None
  config.attention_options.probe.depth = 3
  with pytest.raises(TypeError):
    config.attention_options.probe.depth = 'three'
  built = build(config)
  assert built.encoder.blocks[0].attention.depth == 3


def _output_jacobian(net, toks, filter_):
  """d(logits . w)[i] / d(params selected by filter_), for batch row 0."""
  graphdef, selected, rest = nnx.split(net, filter_, ...)
  w_V = jax.random.normal(jax.random.key(7), (VOCAB,))

  def out_L(selected):
    logits_BLV = nnx.merge(graphdef, selected, rest)(toks)
    return logits_BLV[0] @ w_V

  return jax.jit(jax.jacrev(out_L))(selected)


@pytest.mark.parametrize(
  'name', [n for n in attention.names() if n not in BIDIRECTIONAL_ONLY]
)
def test_language_model_is_causal_end_to_end(name):
  # Two layers: the second one must not undo the first one's causality.
  net = build(small_config(name, 'lm', position='learned', num_layers=2))
  # Distinct tokens, so row t of the embedding table is the input at t.
  toks = jnp.stack([jnp.arange(LENGTH), jnp.arange(LENGTH)[::-1]])
  # The learned position table is an input of position j too.
  inputs = nnx.Any(
    nnx.PathContains('token_embed'), nnx.PathContains('pos_embed_PE')
  )
  jac = _output_jacobian(net, toks, inputs)
  jac_LVE = jac['encoder']['token_embed']['embedding'][...]
  jac_LPE = jac['encoder']['pos_embed_PE'][...]
  future = np.triu(np.ones((LENGTH, LENGTH), bool), k=1)
  for jac_LLE in (jac_LVE[:, toks[0]], jac_LPE[:, :LENGTH]):
    jac_norm_LL = np.asarray(jnp.abs(jac_LLE).sum(-1))
    assert np.all(jac_norm_LL[future] == 0.0)
    assert np.all(np.diag(jac_norm_LL) > 0)


@pytest.mark.parametrize('head', ['lm', 'classifier'])
@pytest.mark.parametrize('name', attention.names())
def test_every_parameter_gets_a_gradient(name, head):
  # A parameter without a gradient is dead weight (e.g. a key projection
  # that a shared-QK variant never reads).
  if head == 'lm' and name in BIDIRECTIONAL_ONLY:
    return
  net = build(small_config(name, head, pool='cls'))
  toks = tokens(0)

  def loss(net):
    return jnp.sum(call(net, head, toks, padding_mask()) ** 2)

  grads = nnx.grad(loss)(net)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.any(np.asarray(g) != 0), jax.tree_util.keystr(path)


@pytest.mark.parametrize('pool', ['mean', 'cls'])
@pytest.mark.parametrize('name', attention.names())
def test_classifier_ignores_padded_tokens(name, pool):
  net = build(small_config(name, 'classifier', pool=pool))
  mask = padding_mask()
  toks = tokens(0)
  other = jnp.where(mask, toks, (toks + 7) % VOCAB)
  assert not np.array_equal(toks, other)
  # Tolerance 1e-5: the padded keys are removed, the rest is identical.
  np.testing.assert_allclose(
    call(net, 'classifier', toks, mask),
    call(net, 'classifier', other, mask),
    rtol=0,
    atol=1e-5,
  )
  # A change at the real positions does change the logits. (All of them:
  # with one layer, Reformer's CLS token sees only its bucket-mates.)
  changed = jnp.where(mask, (toks + 1) % VOCAB, toks)
  assert not np.allclose(
    call(net, 'classifier', toks, mask)[1],
    call(net, 'classifier', changed, mask)[1],
  )


def test_dual_encoder_padding_and_unequal_lengths():
  net = build(small_config('softmax', 'dual_encoder', pool='mean'))
  toks1, toks2 = tokens(0), tokens(1, length=LENGTH - 4)
  # Unequal lengths take two encoder passes; padding the second sequence to
  # the first's length (one stacked pass) must give the same logits.
  padded2 = jnp.pad(toks2, ((0, 0), (0, 4)), constant_values=3)
  mask2 = jnp.arange(LENGTH)[None] < LENGTH - 4
  mask2 = jnp.broadcast_to(mask2, padded2.shape)
  pair = nnx.jit(lambda net, *args: net(*args))
  np.testing.assert_allclose(
    pair(net, toks1, toks2),
    pair(net, toks1, padded2, None, mask2),
    rtol=0,
    atol=1e-5,
  )


@pytest.mark.parametrize('position', model.POSITIONS)
@pytest.mark.parametrize('head', ['lm', 'classifier'])
def test_every_position_type_runs(position, head):
  # The dual encoder shares the encoder, so two heads cover every path: the
  # classifier's prepended CLS slot meets each position scheme.
  net = build(small_config('softmax', head, position=position))
  logits = call(net, head, tokens(0), padding_mask())
  assert np.all(np.isfinite(logits))


def test_position_none_is_permutation_equivariant():
  # Without position information a bidirectional encoder cannot tell order
  # apart: a mean-pooled classifier gives the same logits for any order.
  config = small_config('softmax', 'classifier', position='none', pool='mean')
  net = build(config)
  toks = tokens(0)
  np.testing.assert_allclose(
    call(net, 'classifier', toks),
    call(net, 'classifier', toks[:, ::-1]),
    rtol=0,
    atol=1e-5,
  )


def test_sinusoidal_matches_formula():
  positions = np.arange(11)
  dim = 8
  got = model.sinusoidal_positions(jnp.asarray(positions), dim)
  want = np.zeros((11, dim))
  for i in range(dim // 2):
    angle = positions / 10000.0 ** (2 * i / dim)
    want[:, 2 * i] = np.sin(angle)
    want[:, 2 * i + 1] = np.cos(angle)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def _rotary_numpy(x_LD, positions_L, base):
  """Channel pairs (i, i + D/2) as complex numbers times exp(i p theta_i)."""
  half = x_LD.shape[-1] // 2
  theta = base ** (-2.0 * np.arange(half) / x_LD.shape[-1])
  z = x_LD[:, :half] + 1j * x_LD[:, half:]
  z = z * np.exp(1j * positions_L[:, None] * theta[None])
  return np.concatenate([z.real, z.imag], axis=-1)


def test_rotary_matches_formula_and_is_relative():
  base, dim, length = 10000.0, 8, 12
  rng = np.random.default_rng(0)
  q_LD = rng.normal(size=(length, dim))
  k_LD = rng.normal(size=(length, dim))
  positions = np.arange(length)
  got_q = model.apply_rotary(
    jnp.asarray(q_LD, jnp.float32)[None, :, None], jnp.asarray(positions), base
  )[0, :, 0]
  got_k = model.apply_rotary(
    jnp.asarray(k_LD, jnp.float32)[None, :, None], jnp.asarray(positions), base
  )[0, :, 0]
  np.testing.assert_allclose(
    got_q, _rotary_numpy(q_LD, positions, base), rtol=0, atol=1e-5
  )
  # <R_p q, R_s k> = Re(sum_i zq_i conj(zk_i) exp(i (p - s) theta_i)).
  half = dim // 2
  theta = base ** (-2.0 * np.arange(half) / dim)
  zq = q_LD[:, :half] + 1j * q_LD[:, half:]
  zk = k_LD[:, :half] + 1j * k_LD[:, half:]
  offsets = positions[:, None] - positions[None, :]
  want_LL = np.einsum(
    'pi,si,psi->ps', zq, zk.conj(), np.exp(1j * offsets[..., None] * theta)
  ).real
  np.testing.assert_allclose(got_q @ got_k.T, want_LL, rtol=0, atol=1e-5)
  # Shifting every position by the same amount leaves the scores alone.
  shifted = jnp.asarray(positions + 1000)
  sq = model.apply_rotary(
    jnp.asarray(q_LD, jnp.float32)[None, :, None], shifted
  )
  sk = model.apply_rotary(
    jnp.asarray(k_LD, jnp.float32)[None, :, None], shifted
  )
  np.testing.assert_allclose(
    sq[0, :, 0] @ sk[0, :, 0].T, want_LL, rtol=0, atol=1e-4
  )


def test_learned_positions_reject_long_sequences():
  net = build(small_config('softmax', 'lm', max_len=LENGTH))
  with pytest.raises(ValueError, match='max_len'):
    net(tokens(0, length=LENGTH + 1))


@pytest.mark.parametrize(
  'field, value, words',
  [
    ('head', 'decoder', ['head', 'decoder', 'classifier', 'dual_encoder']),
    ('position', 'alibi', ['position', 'alibi', 'rotary', 'sinusoidal']),
    ('pool', 'max', ['pool', 'max', 'cls', 'mean']),
    ('dtype', 'float16', ['dtype', 'float16', 'bfloat16', 'float32']),
    ('attention', 'nope', ['attention', 'nope', 'softmax']),
    ('qkv_dim', 15, ['qkv_dim', 'num_heads']),
    ('num_layers', 0, ['num_layers']),
    ('dropout_rate', 1.0, ['dropout_rate']),
    ('causal', True, ['causal']),
  ],
)
def test_bad_config_raises(field, value, words):
  config = small_config('softmax', 'classifier')
  config[field] = value
  with pytest.raises(ValueError) as info:
    validate.check_model(config)
  for word in words:
    assert word in str(info.value)


def test_bad_attention_option_raises():
  config = small_config('softmax')
  config.attention_options.softmax.implementation = 'magic'
  with pytest.raises(ValueError, match='implementation'):
    build(config)
  config = small_config('softmax')
  config.attention_options.softmax['no_such_option'] = 1
  with pytest.raises(ValueError, match='no_such_option'):
    build(config)


class _DtypeSpy(nnx.Module):
  """Wraps an attention module and records the dtype of its queries."""

  def __init__(self, inner: nnx.Module):
    self.inner = inner
    self.seen = []

  def __call__(self, q, k, v, mask=None):
    self.seen.append(str(q.dtype))  # Recorded while tracing.
    return self.inner(q, k, v, mask=mask)


@pytest.mark.parametrize('head', HEADS)
def test_bfloat16_compute_keeps_float32_params(head):
  config = small_config('softmax', head, dtype='bfloat16')
  net = build(config)
  params = nnx.state(net, nnx.Param)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  spy = _DtypeSpy(net.encoder.blocks[0].attention)
  net.encoder.blocks[0].attention = spy
  logits16 = call(net, head, tokens(0), padding_mask())
  assert spy.seen and set(spy.seen) == {'bfloat16'}
  assert logits16.dtype == jnp.float32
  assert np.all(np.isfinite(logits16))
  if head == 'lm':
    # Same seed, same parameters; bf16 keeps ~3 significant digits.
    config.dtype = 'float32'
    logits32 = call(build(config), head, tokens(0), padding_mask())
    np.testing.assert_allclose(logits16, logits32, rtol=0, atol=5e-2)


@nnx.jit(static_argnames='train')
def _step_forward(net, toks, key, step, *, train):
  """The trainer's pattern: dropout key folded with the step, under jit."""
  rngs = nnx.Rngs(dropout=jax.random.fold_in(key, step))
  return net(toks, train=train, rngs=rngs)


def test_dropout():
  net = build(small_config('softmax', 'lm', dropout_rate=0.5))
  toks, key = tokens(0), jax.random.key(0)
  eval0 = _step_forward(net, toks, key, 0, train=False)
  np.testing.assert_array_equal(
    eval0, _step_forward(net, toks, key, 1, train=False)
  )
  train0 = _step_forward(net, toks, key, 0, train=True)
  np.testing.assert_array_equal(
    train0, _step_forward(net, toks, key, 0, train=True)
  )
  assert not np.allclose(train0, _step_forward(net, toks, key, 1, train=True))
  assert not np.allclose(train0, eval0)


@pytest.mark.parametrize('head', HEADS)
def test_train_without_rngs_raises(head):
  net = build(small_config('softmax', head, dropout_rate=0.5))
  with pytest.raises(ValueError, match='rngs'):
    call(net, head, tokens(0), padding_mask(), train=True)


def test_zero_dropout_trains_without_rngs():
  net = build(small_config('softmax', 'lm', dropout_rate=0.0))
  # Tracing is enough: the call must not ask for rngs.
  out = jax.eval_shape(lambda t: net(t, train=True), tokens(0))
  assert out.shape == (BATCH, LENGTH, VOCAB)


def test_tied_embeddings():
  config = small_config('softmax', 'lm', tie_embeddings=True)
  net = build(config)
  assert net.output is None
  assert call(net, 'lm', tokens(0)).shape == (BATCH, LENGTH, VOCAB)
