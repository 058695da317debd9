"""Synthesizer attention against a numpy float64 dense reference.

The reference reads the module's parameters and rebuilds the synthetic
logits from their definition (dense: relu(q W1 + b1) W2 + b2 per head;
random: the first rows and columns of R; factorized: A1 A2^T), adds
q . k / sqrt(D) with vanilla, and takes the masked softmax over the keys
(key padding, and j <= i when causal; a query with no visible key outputs
zeros). fp32 against float64, 1e-5.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import attention
from performer.attention import synthesizer
from tests import test_model

B, L, H, D = 2, 21, 2, 8
MAX_LEN = 32
RTOL, ATOL = 1e-5, 1e-5
MODES = synthesizer.MODES
MODE_VANILLA = list(itertools.product(MODES, [False, True]))
MODE_VANILLA_IDS = [f'{m}{"+vanilla" if v else ""}' for m, v in MODE_VANILLA]


def _create(causal=False, **opts):
  opts = {'max_len': MAX_LEN, 'num_heads': H, **opts}
  return attention.create(
    'synthesizer', head_dim=D, causal=causal, rngs=nnx.Rngs(0), **opts
  )


def _inputs(seed=0, length=L, key_length=None):
  keys = jax.random.split(jax.random.key(seed), 3)
  lengths = (length, key_length or length, key_length or length)
  return [
    jax.random.normal(key, (B, n, H, D), jnp.float32)
    for key, n in zip(keys, lengths, strict=True)
  ]


def _mask(length=L):
  """Batch 0: positions 0 and 3 and the tail padded; batch 1: none."""
  mask = np.ones((B, length), bool)
  mask[0, length - 5 :] = False
  mask[0, [0, 3]] = False
  return jnp.asarray(mask)


def _np(x):
  return np.asarray(x[...], np.float64)


def _synthetic_logits(attn, q, s):
  """[B, H, L, S] float64 synthetic logits from the module's parameters."""
  q = np.asarray(q, np.float64)
  b, l, h, _ = q.shape
  if attn.mode == 'dense':
    hidden = np.einsum('blhd,hde->blhe', q, _np(attn.hidden_HDD))
    hidden = np.maximum(hidden + _np(attn.hidden_bias_HD), 0.0)
    logits = np.einsum('blhe,hen->bhln', hidden, _np(attn.out_HDN))
    logits = logits + _np(attn.out_bias_HN)[None, :, None, :]
    return logits[..., :s]
  if attn.mode == 'random':
    table = _np(attn.logits_HNN)
  else:
    table = np.einsum('hnk,hmk->hnm', _np(attn.left_HNK), _np(attn.right_HNK))
  return np.broadcast_to(table[None, :, :l, :s], (b, h, l, s))


def _reference(attn, q, k, v, mask, causal):
  """softmax(synthetic (+ q.k / sqrt(D)) logits, masked) @ v in float64."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  l, s = q.shape[1], k.shape[1]
  logits = _synthetic_logits(attn, q, s)
  if attn.vanilla:
    logits = logits + np.einsum('blhd,bshd->bhls', q, k) / np.sqrt(D)
  allowed = np.ones((B, H, l, s), bool)
  if mask is not None:
    allowed &= np.asarray(mask)[:, None, None, :]
  if causal:
    allowed &= np.tril(np.ones((l, s), bool))
  out = np.zeros((B, l, H, D))
  for bi, hi, i in itertools.product(range(B), range(H), range(l)):
    seen = allowed[bi, hi, i]
    if not seen.any():
      continue  # No visible key: zeros.
    row = logits[bi, hi, i, seen]
    w = np.exp(row - row.max())
    out[bi, i, hi] = (w / w.sum()) @ v[bi, seen, hi]
  return out


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('mode,vanilla', MODE_VANILLA, ids=MODE_VANILLA_IDS)
def test_matches_dense_reference(mode, vanilla, causal):
  attn = _create(causal, mode=mode, vanilla=vanilla)
  q, k, v = _inputs()
  mask = _mask()
  expected = _reference(attn, q, k, v, mask, causal)
  got = attn(q, k, v, mask=mask)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
  if causal:  # Query 0 of batch 0 sees no real key.
    np.testing.assert_array_equal(np.asarray(got[0, 0]), 0.0)
  # Without a mask, too.
  np.testing.assert_allclose(
    attn(q, k, v), _reference(attn, q, k, v, None, causal), rtol=RTOL, atol=ATOL
  )


@pytest.mark.parametrize('mode', ['random', 'factorized'])
def test_shorter_inputs_use_first_rows_and_columns(mode):
  # Bidirectional, 13 queries over 21 keys: R[:13, :21].
  attn = _create(False, mode=mode)
  q, k, v = _inputs(length=13, key_length=L)
  mask = _mask()
  out = attn(q, k, v, mask=mask)
  np.testing.assert_allclose(
    out, _reference(attn, q, k, v, mask, False), rtol=RTOL, atol=ATOL
  )
  # Whatever lies outside the first rows and columns is never read.
  if mode == 'random':
    table = attn.logits_HNN[...]
    attn.logits_HNN[...] = table.at[:, 13:].set(1e30).at[:, :, L:].set(1e30)
  else:
    attn.left_HNK[...] = attn.left_HNK[...].at[:, 13:].set(jnp.nan)
    attn.right_HNK[...] = attn.right_HNK[...].at[:, L:].set(jnp.nan)
  np.testing.assert_array_equal(attn(q, k, v, mask=mask), out)


def test_dense_reads_the_first_key_logits_only():
  attn = _create(False, mode='dense')
  q, k, v = _inputs()
  out = attn(q, k, v)
  attn.out_HDN[...] = attn.out_HDN[...].at[:, :, L:].set(jnp.nan)
  attn.out_bias_HN[...] = attn.out_bias_HN[...].at[:, L:].set(jnp.nan)
  np.testing.assert_array_equal(attn(q, k, v), out)


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('mode,vanilla', MODE_VANILLA, ids=MODE_VANILLA_IDS)
def test_padded_keys_change_nothing(mode, vanilla, causal):
  attn = _create(causal, mode=mode, vanilla=vanilla)
  q, k, v = _inputs()
  k2, v2 = _inputs(seed=1)[1:]
  mask = _mask()
  pad = ~mask[:, :, None, None]
  out = attn(q, k, v, mask=mask)
  changed = attn(
    q, jnp.where(pad, 5.0 * k2, k), jnp.where(pad, 100.0 * v2, v), mask=mask
  )
  np.testing.assert_allclose(changed, out, rtol=0, atol=1e-6)
  # Not even inf or NaN in the padding reaches the outputs or gradients.
  k_bad, v_bad = jnp.where(pad, jnp.inf, k), jnp.where(pad, jnp.nan, v)
  np.testing.assert_allclose(
    attn(q, k_bad, v_bad, mask=mask), out, rtol=0, atol=1e-6
  )
  grads = jax.grad(
    lambda q, k, v: attn(q, k, v, mask=mask).sum(), argnums=(0, 1, 2)
  )(q, k_bad, v_bad)
  for g in grads:
    assert np.all(np.isfinite(np.asarray(g)))


def test_uses_follows_mode_and_inputs_outside_it_are_ignored():
  expected = {
    ('dense', False): ('q', 'v'),
    ('random', False): ('v',),
    ('factorized', False): ('v',),
  }
  q, k, v = _inputs()
  q2, k2 = _inputs(seed=4)[:2]
  for mode, vanilla in MODE_VANILLA:
    attn = _create(True, mode=mode, vanilla=vanilla)
    used = expected.get((mode, vanilla), ('q', 'k', 'v'))
    assert attention.uses(attn) == used
    out = attn(q, k, v)
    other = attn(q if 'q' in used else q2, k if 'k' in used else k2, v)
    if len(used) < 3:
      np.testing.assert_array_equal(other, out)
    # What it uses matters.
    for name, x in (('q', q2), ('k', k2)):
      if name in used:
        args = {'q': q, 'k': k, 'v': v, name: x}
        assert not np.allclose(attn(*(args[n] for n in 'qkv')), out)


def _call(attn, q, k, v, mask=None):
  return attn(q, k, v, mask=mask)


@pytest.mark.parametrize('mode,vanilla', MODE_VANILLA, ids=MODE_VANILLA_IDS)
def test_causal_gradient_from_future_is_exactly_zero(mode, vanilla):
  attn = _create(True, mode=mode, vanilla=vanilla)
  q, k, v = _inputs()
  mask = _mask()
  # Random weights over (B, H, D) per position: one row of the Jacobian per
  # output position, no cancellation by accident.
  w_BLHD = jax.random.normal(jax.random.key(9), (B, L, H, D))

  def outputs_L(q, k, v):
    return jnp.einsum('blhd,blhd->l', attn(q, k, v, mask=mask), w_BLHD)

  jac = jax.jacrev(outputs_L, argnums=(0, 1, 2))(q, k, v)
  future_LL = np.triu(np.ones((L, L), bool), k=1)
  past_LL = np.tril(np.ones((L, L), bool), k=-1)
  # The test could fail: what the output reads does matter. Every earlier
  # value (and key, with vanilla) of the unpadded batch row 1; the query
  # only at its own position, and not at 0 (one visible key, weight 1).
  own_LL = np.eye(L, dtype=bool)
  own_LL[0, 0] = False
  matters = {'q': own_LL, 'k': past_LL, 'v': past_LL}
  for name, j_LBLHD in zip('qkv', jac, strict=True):
    norm_LL = np.abs(np.asarray(j_LBLHD)).sum(axis=(1, 3, 4))
    np.testing.assert_array_equal(norm_LL[future_LL], 0.0)
    if name in attention.uses(attn):
      assert np.all(norm_LL[matters[name]] > 0), name


@pytest.mark.parametrize('mode,vanilla', MODE_VANILLA, ids=MODE_VANILLA_IDS)
def test_causal_outputs_ignore_changed_future(mode, vanilla):
  attn = _create(True, mode=mode, vanilla=vanilla)
  q, k, v = _inputs()
  i = 13
  future = (jnp.arange(L) > i)[None, :, None, None]
  changed = [
    jnp.where(future, 10.0 * b, a)
    for a, b in zip((q, k, v), _inputs(seed=2), strict=True)
  ]
  out = np.asarray(attn(q, k, v))
  out_changed = np.asarray(attn(*changed))
  np.testing.assert_array_equal(out_changed[:, : i + 1], out[:, : i + 1])
  assert np.any(out_changed[:, i + 1 :] != out[:, i + 1 :])


def test_bidirectional_sees_the_future():
  attn = _create(False, mode='random')
  q, k, v = _inputs()
  grad_v = jax.grad(lambda v: attn(q, k, v)[:, 0].sum())(v)
  assert np.all(np.abs(np.asarray(grad_v[:, 1:])).sum(axis=(0, 2, 3)) > 0)


_forward = nnx.jit(_call)
_prefill = nnx.jit(lambda m, q, k, v, c, mask: m.prefill(q, k, v, c, mask=mask))
_decode = nnx.jit(lambda m, q, k, v, c: m.decode(q, k, v, c))


@pytest.mark.parametrize('mode,vanilla', MODE_VANILLA, ids=MODE_VANILLA_IDS)
def test_prefill_and_decode_equal_parallel_pass(mode, vanilla):
  attn = _create(True, mode=mode, vanilla=vanilla)
  q, k, v = _inputs()
  # A padded first prompt position must stay invisible to later queries.
  mask = jnp.ones((B, L), bool).at[0, 0].set(False)
  expected = _forward(attn, q, k, v, mask)
  for prompt in (1, 13):
    cache = attn.init_cache(B, H, L, jnp.float32)
    p = slice(0, prompt)
    out, cache = _prefill(attn, q[:, p], k[:, p], v[:, p], cache, mask[:, p])
    outs = [out]
    for i in range(prompt, L):
      s = slice(i, i + 1)
      out, cache = _decode(attn, q[:, s], k[:, s], v[:, s], cache)
      outs.append(out)
    assert int(cache['index']) == L
    got = jnp.concatenate(outs, axis=1)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_decoding_refused_when_bidirectional_or_too_long():
  attn = _create(False)
  with pytest.raises(ValueError, match='causal=False'):
    attn.init_cache(B, H, L)
  causal = _create(True)
  with pytest.raises(ValueError, match=rf'max_len={MAX_LEN + 1} exceeds'):
    causal.init_cache(B, H, MAX_LEN + 1)


@pytest.mark.parametrize('mode', ['random', 'factorized'])
def test_fixed_table_gets_no_gradient_and_is_not_a_param(mode):
  names = {'random': ('logits_HNN',), 'factorized': ('left_HNK', 'right_HNK')}
  q, k, v = _inputs()

  def loss(m):
    return jnp.sum(m(q, k, v, mask=_mask()) ** 2)

  fixed = _create(True, mode=mode, trainable=False)
  assert not jax.tree.leaves(nnx.state(fixed, nnx.Param))
  assert not jax.tree.leaves(nnx.grad(loss)(fixed))
  for name in names[mode]:
    var = getattr(fixed, name)
    assert isinstance(var, synthesizer.FixedLogits)
    assert name in nnx.state(fixed)  # Still checkpointed.
  # Random, not constant; the trainable module draws the same numbers.
  trained = _create(True, mode=mode)
  grads = nnx.grad(loss)(trained)
  for name in names[mode]:
    value = np.asarray(getattr(fixed, name)[...])
    assert np.std(value) > 0.1
    np.testing.assert_array_equal(getattr(trained, name)[...], value)
    assert isinstance(getattr(trained, name), nnx.Param)
    assert np.any(np.asarray(grads[name][...]) != 0)
  # The fixed table is not learned but still used.
  np.testing.assert_array_equal(fixed(q, k, v), trained(q, k, v))


@pytest.mark.parametrize(
  'opts,words',
  [
    ({'mode': 'x'}, r"unknown mode 'x'; valid: \['dense', 'factorized'"),
    ({'k': 0}, 'k must be an int >= 1, got 0'),
    ({'vanilla': 'yes'}, "vanilla must be True or False, got 'yes'"),
    ({'trainable': 1}, 'trainable must be True or False, got 1'),
    ({'trainable': False}, "trainable=False needs mode .* got mode='dense'"),
    ({'max_len': None}, 'option max_len is required'),
    ({'num_heads': None}, 'option num_heads is required'),
    ({'max_len': 0}, 'max_len must be an int >= 1, got 0'),
    ({'num_heads': -2}, 'num_heads must be an int >= 1, got -2'),
  ],
)
def test_bad_options_are_named(opts, words):
  with pytest.raises(ValueError, match=words):
    _create(**opts)


def test_standalone_create_without_sizes_says_required():
  for missing in ('max_len', 'num_heads'):
    sizes = {'max_len': MAX_LEN, 'num_heads': H}
    del sizes[missing]
    with pytest.raises(ValueError, match=f'{missing} is required'):
      attention.create(
        'synthesizer', head_dim=D, causal=False, rngs=nnx.Rngs(0), **sizes
      )


@pytest.mark.parametrize('mode', MODES)
def test_too_long_inputs_and_wrong_heads_are_named(mode):
  attn = _create(True, mode=mode, max_len=L - 1)
  q, k, v = _inputs()
  with pytest.raises(ValueError, match=rf'length {L} exceeds max_len={L - 1}'):
    attn(q, k, v)
  attn = _create(True, mode=mode)
  with pytest.raises(ValueError, match=f'inputs have 1 heads.*num_heads={H}'):
    attn(q[:, :, :1], k[:, :, :1], v[:, :, :1])


def test_dense_takes_more_queries_than_max_len():
  # The MLP has no per-query-position parameters; only keys are bounded.
  attn = _create(False, mode='dense', max_len=L)
  q, k, v = _inputs(length=L + 6, key_length=L)
  np.testing.assert_allclose(
    attn(q, k, v), _reference(attn, q, k, v, None, False), rtol=RTOL, atol=ATOL
  )
  random = _create(False, mode='random', max_len=L)
  with pytest.raises(ValueError, match=rf'query length {L + 6} exceeds'):
    random(q, k, v)


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('mode', MODES)
def test_jit_matches_eager(mode, causal):
  attn = _create(causal, mode=mode, vanilla=mode == 'dense')
  q, k, v = _inputs()
  eager = attn(q, k, v, mask=_mask())
  jitted = _forward(attn, q, k, v, _mask())
  # Only float rounding may differ (fusion order).
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('mode,vanilla', MODE_VANILLA, ids=MODE_VANILLA_IDS)
def test_bfloat16(mode, vanilla):
  attn = _create(True, mode=mode, vanilla=vanilla)
  q, k, v = (x.astype(jnp.bfloat16) for x in _inputs())
  out = attn(q, k, v, mask=_mask())
  assert out.dtype == jnp.bfloat16
  # The inputs are rounded to bf16 and the output too (8 bits of mantissa):
  # against the float64 reference on the same rounded inputs, 2e-2.
  expected = _reference(attn, q, k, v, _mask(), True)
  np.testing.assert_allclose(
    np.asarray(out, np.float32), expected, rtol=2e-2, atol=2e-2
  )


# One model per mode, and each set of projections: q and v (dense), v only
# (random), all three (vanilla). A model compiles in seconds on a CPU.
@pytest.mark.parametrize(
  'mode,vanilla,head',
  [
    ('dense', False, 'lm'),
    ('random', False, 'classifier'),
    ('factorized', True, 'lm'),
  ],
)
def test_model_every_parameter_gets_a_gradient(mode, vanilla, head):
  config = test_model.small_config('synthesizer', head, pool='cls')
  config.attention_options.synthesizer.mode = mode
  config.attention_options.synthesizer.vanilla = vanilla
  net = test_model.build(config)
  block = net.encoder.blocks[0]
  attn = block.attention
  assert (attn.mode, attn.vanilla) == (mode, vanilla)
  # The model filled the sizes in (the classifier's CLS token: one more).
  assert attn.max_len == config.max_len + (head == 'classifier')
  assert attn.num_heads == config.num_heads
  # Only the projections the mode reads are built.
  used = attention.uses(attn)
  for name, proj in (('q', block.query), ('k', block.key), ('v', block.value)):
    assert (proj is not None) == (name in used), name
  toks = test_model.tokens(0)

  def loss(net):
    logits = test_model.call(net, head, toks, test_model.padding_mask())
    return jnp.sum(logits**2)

  grads = nnx.grad(loss)(net)
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  assert any('attention' in jax.tree_util.keystr(p) for p, _ in leaves)
  for path, g in leaves:
    assert np.any(np.asarray(g) != 0), jax.tree_util.keystr(path)
