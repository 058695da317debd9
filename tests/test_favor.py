"""Tests of FAVOR+ attention (favor.py).

The outputs are compared with tests/reference.py: dense softmax attention and
naive O(L^2) linear attention on the module's own feature maps, both in
float64. Generic contract tests (shapes, jit, padding, exact causality) live
in test_attention_interface.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from performer import attention
from performer.attention import favor, features
from tests import reference

B, L, H, D = 2, 29, 2, 8  # L is not a multiple of the chunk size 8.
M = 16
TOL = 1e-5  # float32 against a float64 reference.


def _create(causal, name='favor', seed=0, **opts):
  opts = {'num_features': M, 'chunk_size': 8, **opts}
  return attention.create(
    name,
    head_dim=opts.pop('head_dim', D),
    causal=causal,
    rngs=nnx.Rngs(seed),
    **opts,
  )


def _inputs(shape=(B, L, H, D), seed=0, scale=1.0, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [scale * jax.random.normal(k, shape, dtype) for k in keys]


def _mask(length=L):
  """Batch 0: a hole and a padded tail (position 0 real); batch 1: none."""
  mask = np.ones((B, length), bool)
  mask[0, 3] = False
  mask[0, length - 6 :] = False
  return jnp.asarray(mask)


def _linear_reference(attn, q, k, v, causal, mask=None):
  """Naive linear attention on the module's feature maps (float64)."""
  w = None if attn.projection is None else attn.projection[...]

  def phi(x):
    return features.feature_map(x, w, attn.kernel, attn.kernel_eps)

  return reference.linear_attention(phi(q), phi(k), v, causal, mask)


def test_registered_with_documented_defaults():
  assert {'favor', 'favor_scan'} <= set(attention.names())
  assert attention.defaults('favor') == {
    'num_features': 256,
    'kernel': 'softmax',
    'projection': 'orthogonal',
    'row_norm': 'chi',
    'kernel_eps': 1e-3,
    'redraw_interval': 0,
    'chunk_size': 64,
    'num_heads': None,
    'stats_momentum': 0.99,
    'a_scale': 1.0,
  }
  assert attention.defaults('favor_scan') == attention.defaults('favor')


@pytest.mark.parametrize('causal', [False, True])
def test_many_features_approximate_exact_softmax(causal):
  # Monte Carlo error decays as 1/sqrt(M). Small inputs (scale 0.5, D=4)
  # keep each kernel estimate's relative variance, expm1(|q'+k'|^2) / M,
  # small. Over 8 seeds the max abs error was 0.005-0.017 at M=2^16 (and
  # 4x that at M=2^12, as 1/sqrt(M) predicts); 0.03 is ~2x the worst seen
  # and 30x below the spread of the outputs (~1), so a biased estimator or a
  # wrong temperature fails.
  d = 4
  q, k, v = _inputs((1, 16, 2, d))
  q, k = 0.5 * q, 0.5 * k
  attn = _create(causal, head_dim=d, num_features=1 << 16, chunk_size=128)
  pattern = reference.causal_pattern(16) if causal else None
  expected = reference.masked_softmax_attention(q, k, v, pattern)
  np.testing.assert_allclose(attn(q, k, v), expected, rtol=0, atol=0.03)


# Trigonometric features can have near-zero denominators, which amplify
# rounding; small inputs keep them well away from zero.
KERNEL_SCALES = [
  ('softmax', 1.0),
  ('softmax_trig', 0.3),
  ('relu', 1.0),
  ('elu', 1.0),
  ('exp', 1.0),
]


@pytest.mark.parametrize('kernel,scale', KERNEL_SCALES)
def test_bidirectional_equals_linear_attention_reference(kernel, scale):
  attn = _create(False, kernel=kernel)
  q = _inputs(scale=scale)[0]
  # Cross attention: 21 keys for 29 queries.
  k, v = _inputs((B, 21, H, D), seed=1, scale=scale)[1:]
  for mask in (None, _mask(21)):
    expected = _linear_reference(attn, q, k, v, False, mask)
    np.testing.assert_allclose(
      attn(q, k, v, mask=mask), expected, rtol=TOL, atol=TOL
    )


@pytest.mark.parametrize('kernel,scale', KERNEL_SCALES)
def test_causal_equals_linear_attention_reference(kernel, scale):
  attn = _create(True, kernel=kernel)
  q, k, v = _inputs(scale=scale)
  for mask in (None, _mask()):
    expected = _linear_reference(attn, q, k, v, True, mask)
    np.testing.assert_allclose(
      attn(q, k, v, mask=mask), expected, rtol=TOL, atol=TOL
    )


def test_causal_result_independent_of_chunk_size():
  q, k, v = _inputs()
  mask = _mask()
  expected = _linear_reference(_create(True), q, k, v, True, mask)
  outs = []
  for chunk_size in (1, 3, 8, 29, 64):
    attn = _create(True, chunk_size=chunk_size)  # Same seed: same features.
    outs.append(np.asarray(attn(q, k, v, mask=mask)))
    np.testing.assert_allclose(outs[-1], expected, rtol=TOL, atol=TOL)
  for out in outs[1:]:
    np.testing.assert_allclose(out, outs[0], rtol=TOL, atol=TOL)


@pytest.mark.parametrize('causal', [True, False])
def test_favor_scan_equals_reference_and_favor(causal):
  q, k, v = _inputs()
  mask = _mask()
  scan = _create(causal, name='favor_scan')
  chunked = _create(causal)
  np.testing.assert_array_equal(scan.projection[...], chunked.projection[...])
  out = scan(q, k, v, mask=mask)
  expected = _linear_reference(scan, q, k, v, causal, mask)
  np.testing.assert_allclose(out, expected, rtol=TOL, atol=TOL)
  np.testing.assert_allclose(
    out, chunked(q, k, v, mask=mask), rtol=TOL, atol=TOL
  )


@pytest.mark.parametrize('name', ['favor', 'favor_scan'])
def test_query_without_real_keys_outputs_zeros(name):
  q, k, v = _inputs()
  mask = jnp.ones((B, L), bool).at[0, :4].set(False)
  out = np.asarray(_create(True, name=name)(q, k, v, mask=mask))
  np.testing.assert_array_equal(out[0, :4], 0.0)
  assert np.all(np.isfinite(out)) and np.all(out[0, 4:] != 0.0)
  # Bidirectional: batch 0 has no real key at all.
  mask = jnp.ones((B, L), bool).at[0].set(False)
  out = np.asarray(_create(False, name=name)(q, k, v, mask=mask))
  np.testing.assert_array_equal(out[0], 0.0)
  assert np.all(out[1] != 0.0)


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('kernel', ['softmax', 'softmax_trig'])
def test_stabilizer_ignores_huge_padded_keys(causal, kernel):
  # Padded keys with 100x norms would dominate a key stabilizer that looked
  # at them (their log scales are ~1e4 away), underflowing every real key.
  scale = 0.3 if kernel == 'softmax_trig' else 1.0
  q, k, v = _inputs(scale=scale)
  mask = _mask()
  k_huge = jnp.where(mask[:, :, None, None], k, 100.0 * k)
  attn = _create(causal, kernel=kernel)
  expected = _linear_reference(attn, q, k, v, causal, mask)
  np.testing.assert_allclose(
    attn(q, k_huge, v, mask=mask), expected, rtol=TOL, atol=TOL
  )


def test_huge_future_key_leaves_past_bit_identical():
  # A global stabilizer would shift with this key and change every output
  # in rounding; the running maximum does not look ahead.
  q, k, v = _inputs()
  attn = _create(True)
  k_future = k.at[:, -1].multiply(30.0)
  out = np.asarray(attn(q, k, v))
  out_future = np.asarray(attn(q, k_future, v))
  np.testing.assert_array_equal(out_future[:, :-1], out[:, :-1])
  assert np.all(np.isfinite(out_future))


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize(
  'name,kernel',
  [
    ('favor', 'softmax'),
    ('favor', 'softmax_trig'),
    ('favor', 'exp'),
    ('favor', 'relu'),
    ('favor_scan', 'softmax'),
  ],
)
def test_large_norm_inputs_stay_finite(name, kernel, causal):
  # q, k at 10x typical norms: the raw features would overflow float32.
  shape = (1, 40, 2, 64)
  q, k, v = _inputs(shape)
  q, k = 10.0 * q, 10.0 * k
  attn = _create(
    causal, name=name, kernel=kernel, head_dim=64, num_features=256
  )
  out = attn(q, k, v, mask=jnp.ones((1, 40), bool).at[0, 5].set(False))
  assert np.all(np.isfinite(np.asarray(out)))
  if kernel == 'softmax':
    grads = jax.grad(lambda q, k, v: attn(q, k, v).sum(), (0, 1, 2))(q, k, v)
    for g in grads:
      assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize(
  'kernel', ['softmax', 'softmax_trig', 'favorpp', 'favorsharp', 'exp', 'relu']
)
def test_gradients_finite_up_to_100x_norms_at_4096(kernel, causal, dtype):
  # Before the floored derivative (favor._tangent_den) the causal softmax
  # gradients were NaN from L = 256 on at std 10, the bidirectional ones
  # from std 30. Loss sum(out^2), q and k entries N(0, s^2), v N(0, 1).
  length, d = 4096, 64
  attn = _create(
    causal,
    kernel=kernel,
    head_dim=d,
    num_features=64,
    chunk_size=64,
    num_heads=1,
  )
  q, k, v = _inputs((1, length, 1, d), dtype=dtype)
  if causal:  # Running statistics of 10x inputs (FAVOR++ / FAVOR# only).
    attn.update_statistics(10 * q, 10 * k)
  grad_fn = jax.jit(
    jax.value_and_grad(
      lambda q, k, v: jnp.sum(attn(q, k, v).astype(jnp.float32) ** 2),
      (0, 1, 2),
    )
  )
  for scale in (10.0, 100.0):
    s = jnp.asarray(scale, dtype)
    loss, grads = grad_fn(s * q, s * k, v)
    assert np.isfinite(float(loss)), scale
    for g in grads:
      assert np.all(np.isfinite(np.asarray(g, np.float32))), scale


@pytest.mark.parametrize('causal', [True, False])
def test_bf16_inputs_accumulate_in_fp32(causal):
  q, k, v = _inputs(dtype=jnp.bfloat16)
  mask = _mask()
  attn = _create(causal)
  out = attn(q, k, v, mask=mask)
  assert out.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(out, np.float32)))
  # Computed in float32 from the bf16 values, then rounded once to bf16
  # (relative error <= 2^-9); 2^-8 allows that plus float32 rounding.
  q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
  expected = _linear_reference(attn, q, k, v, causal, mask)
  np.testing.assert_allclose(
    np.asarray(out, np.float32), expected, rtol=2**-8, atol=TOL
  )


@pytest.mark.parametrize('kernel', ['relu', 'elu', 'sigmoid'])
def test_deterministic_generalized_kernels(kernel):
  attn = _create(True, kernel=kernel, projection='none')
  assert attn.projection is None
  attn.redraw(100)  # Nothing to redraw; must not fail.
  q, k, v = _inputs()
  mask = _mask()
  f = {
    'relu': lambda z: np.maximum(z, 0.0),
    'elu': lambda z: np.where(z > 0, z + 1.0, np.exp(z)),
    'sigmoid': lambda z: 1.0 / (1.0 + np.exp(-z)),
  }[kernel]

  def phi(x):  # f(x / D^(1/4)) + eps, written out independently.
    return f(np.asarray(x, np.float64) * D**-0.25) + 1e-3

  expected = reference.linear_attention(phi(q), phi(k), v, True, mask)
  np.testing.assert_allclose(
    attn(q, k, v, mask=mask), expected, rtol=TOL, atol=TOL
  )


def _projection(attn):
  return np.asarray(attn.projection[...])


def test_redraw_is_reproducible():
  a = _create(True, redraw_interval=10)
  b = _create(True, redraw_interval=10)
  initial = _projection(a)
  np.testing.assert_array_equal(_projection(b), initial)
  assert not np.allclose(_projection(_create(True, seed=1)), initial)
  a.redraw(9)  # Same window as step 0.
  np.testing.assert_array_equal(_projection(a), initial)
  a.redraw(25)
  b.redraw(29)  # Same window (step // 10 == 2): same draw.
  np.testing.assert_array_equal(_projection(a), _projection(b))
  assert not np.allclose(_projection(a), initial)
  b.redraw(30)
  assert not np.allclose(_projection(b), _projection(a))
  a.redraw(0)
  np.testing.assert_array_equal(_projection(a), initial)


def test_redraw_interval_zero_keeps_projection():
  attn = _create(True)
  initial = _projection(attn)
  attn.redraw(12345)
  np.testing.assert_array_equal(_projection(attn), initial)


class _TwoLayers(nnx.Module):
  def __init__(self):
    self.redrawn = _create(True, redraw_interval=10)
    self.fixed = _create(False, seed=1)
    self.deterministic = _create(True, kernel='relu', projection='none')
    self.exact = attention.create(
      'softmax', head_dim=D, causal=True, rngs=nnx.Rngs(0)
    )
    self.dense = nnx.Linear(D, D, rngs=nnx.Rngs(0))


def test_redraw_features_works_inside_nnx_jit():
  model = _TwoLayers()
  fixed = _projection(model.fixed)

  @nnx.jit
  def redraw(model, step):
    attention.redraw_features(model, step)

  redraw(model, jnp.int32(35))
  expected = _create(True, redraw_interval=10)
  expected.redraw(35)
  # The same draw; jit and eager QR may differ in float rounding only.
  np.testing.assert_allclose(
    _projection(model.redrawn), _projection(expected), rtol=1e-6, atol=1e-6
  )
  np.testing.assert_array_equal(_projection(model.fixed), fixed)
  # The module computes with the new projection.
  q, k, v = _inputs()
  np.testing.assert_allclose(
    model.redrawn(q, k, v),
    _linear_reference(expected, q, k, v, True),
    rtol=TOL,
    atol=TOL,
  )


def test_projection_is_one_shared_non_trainable_variable():
  attn = _create(True)
  assert isinstance(attn.projection, favor.FeatureProjection)
  assert not isinstance(attn.projection, nnx.Param)
  assert jax.tree.leaves(nnx.state(attn, nnx.Param)) == []
  # One [M, D] matrix for both q and k.
  leaves = jax.tree.leaves(nnx.state(attn, favor.FeatureProjection))
  assert len(leaves) == 1 and leaves[0].shape == (M, D)
  # The full state (what a checkpoint saves) holds projection and seed.
  restored = _create(True, seed=5, redraw_interval=3)
  nnx.update(restored, nnx.state(attn))
  np.testing.assert_array_equal(_projection(restored), _projection(attn))
  attn.redraw_interval = 3
  attn.redraw(7)
  restored.redraw(7)
  np.testing.assert_array_equal(_projection(restored), _projection(attn))


def test_optimizer_leaves_projection_alone():
  model = _TwoLayers()
  before = _projection(model.fixed), np.asarray(model.dense.kernel[...])
  optimizer = nnx.Optimizer(model, optax.sgd(1.0), wrt=nnx.Param)
  q, k, v = _inputs()

  def loss(model):
    x = model.dense(q)
    return jnp.sum(model.fixed(x, k, v) ** 2)

  grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.Param))(model)
  optimizer.update(model, grads)
  np.testing.assert_array_equal(_projection(model.fixed), before[0])
  assert not np.allclose(np.asarray(model.dense.kernel[...]), before[1])


@pytest.mark.parametrize(
  'opts,match',
  [
    ({'kernel': 'softmx'}, r"kernel 'softmx'.*'relu'.*'softmax_trig'"),
    (
      {'projection': 'gaussian'},
      r"projection 'gaussian'.*'iid'.*'none'.*'orthogonal'",
    ),
    ({'row_norm': 'unit'}, r"row_norm 'unit'.*'chi'.*'sqrt_d'"),
    ({'num_features': 0}, r'num_features must be an int >= 1, got 0'),
    ({'num_features': 2.5}, r'num_features must be an int >= 1, got 2.5'),
    ({'chunk_size': 0}, r'chunk_size must be an int >= 1'),
    ({'redraw_interval': -1}, r'redraw_interval must be an int >= 0'),
    ({'kernel_eps': -1.0}, r'kernel_eps must be a float >= 0'),
    (
      {'projection': 'none'},
      r"projection 'none' needs a generalized kernel.*'softmax'.*'relu'",
    ),
  ],
)
def test_bad_options_name_parameter_and_valid_values(opts, match):
  with pytest.raises(ValueError, match=match):
    _create(True, **opts)


def test_output_is_linear_in_length():
  # No L x S tensor: the compiled causal and bidirectional forward passes
  # need far less than one [B, H, L, L] float32 buffer at L = 4096.
  shape = jax.ShapeDtypeStruct((1, 4096, 2, 16), jnp.float32)
  for causal in (True, False):
    attn = _create(causal, head_dim=16, num_features=32, chunk_size=64)
    graphdef, state = nnx.split(attn)

    def run(q, k, v, graphdef=graphdef, state=state):
      return nnx.merge(graphdef, state)(q, k, v)

    compiled = jax.jit(run).lower(shape, shape, shape).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < 2 * 4096 * 4096 * 4 / 32, temp


@pytest.mark.parametrize('causal', [True, False])
def test_gradients_match_finite_differences_of_reference(causal):
  q, k, v = _inputs((1, 11, 1, D))
  mask = jnp.ones((1, 11), bool).at[0, 4].set(False)
  attn = _create(causal, chunk_size=4)
  cot = np.asarray(_inputs((1, 11, 1, D), seed=3)[0], np.float64)

  w = np.asarray(attn.projection[...], np.float64)

  def phi(x):  # Positive features written out in float64.
    x = x * D**-0.25
    return np.exp(x @ w.T - 0.5 * np.sum(x**2, -1, keepdims=True)) / 4.0

  def reference_loss(q, k, v):
    out = reference.linear_attention(phi(q), phi(k), v, causal, mask)
    return float(np.sum(out * cot))

  grads = jax.grad(
    lambda q, k, v: jnp.sum(attn(q, k, v, mask=mask) * cot), (0, 1, 2)
  )(q, k, v)
  args = [np.asarray(x, np.float64) for x in (q, k, v)]
  rng = np.random.default_rng(0)
  # float64 central differences with step 1e-5 are exact to ~1e-9; the
  # float32 gradients to ~1e-6.
  h = 1e-5
  for arg, grad in enumerate(grads):
    for _ in range(4):
      idx = tuple(rng.integers(0, n) for n in args[arg].shape)
      plus = [a.copy() for a in args]
      minus = [a.copy() for a in args]
      plus[arg][idx] += h
      minus[arg][idx] -= h
      fd = (reference_loss(*plus) - reference_loss(*minus)) / (2 * h)
      np.testing.assert_allclose(grad[idx], fd, rtol=1e-4, atol=TOL)
