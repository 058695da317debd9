"""Tests of FAVOR++ and FAVOR# (kernels 'favorpp' and 'favorsharp').

The references are written out here in numpy float64 from the papers'
formulas: the features, A* and Psi by their definitions (rho as the mean
over every query-key pair, not from the moments), the closed-form second
moment of one feature, and naive linear attention (tests/reference.py).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import attention
from performer.attention import favor, features
from tests import reference

B, L, H, D = 2, 29, 2, 8
M = 16
TOL = 1e-5  # float32 against a float64 reference.
DATA_KERNELS = ('favorpp', 'favorsharp')


def _scaled(x):
  return np.asarray(x, np.float64) * x.shape[-1] ** -0.25


def _reference_parameters(kernel, q_LD, k_SD):
  """A and Psi (or None) by their definitions, float64, from all pairs."""
  x, y = _scaled(q_LD), _scaled(k_SD)
  psi = None
  if kernel == 'favorsharp':
    psi = (np.sum(y**2, 0) / len(y) / (np.sum(x**2, 0) / len(x))) ** 0.25
    x, y = x * psi, y / psi
  d = x.shape[-1]
  rho = np.mean(np.sum((x[:, None] + y[None]) ** 2, -1)) / d
  a = (1 - 2 * rho - math.sqrt((2 * rho + 1) ** 2 + 8 * rho)) / 16
  return a, psi


def _reference_features(x_XD, w_MD, a, rescale=None):
  """(1 - 4A)^(D/4) exp(A |w|^2 + sqrt(1 - 4A) w.x' - |x'|^2 / 2) / sqrt(M)."""
  x = _scaled(x_XD)
  if rescale is not None:
    x = x * rescale
  w = np.asarray(w_MD, np.float64)
  d, m = x.shape[-1], w.shape[0]
  expo = (
    a * np.sum(w**2, -1)
    + math.sqrt(1 - 4 * a) * x @ w.T
    - 0.5 * np.sum(x**2, -1, keepdims=True)
  )
  return (1 - 4 * a) ** (d / 4) * np.exp(expo) / math.sqrt(m)


def _log_second_moment(x_XD, y_XD, a):
  """log E_w[(f(w, x) f(w, y))^2] of one feature (M = 1), w ~ N(0, I_D).

  From E[exp(c |w|^2 + b . w)] = (1 - 2c)^(-D/2) exp(|b|^2 / (2 (1 - 2c))).
  """
  d = x_XD.shape[-1]
  s = np.sum((x_XD + y_XD) ** 2, -1)
  return (
    d * math.log(1 - 4 * a)
    - d / 2 * math.log(1 - 8 * a)
    + 2 * (1 - 4 * a) / (1 - 8 * a) * s
    - np.sum(x_XD**2, -1)
    - np.sum(y_XD**2, -1)
  )


def _stats(q_LD, k_SD):
  return features.PairStatistics(
    *features.moments(jnp.asarray(q_LD), jnp.ones((len(q_LD), 1)), (0,)),
    *features.moments(jnp.asarray(k_SD), jnp.ones((len(k_SD), 1)), (0,)),
  )


def _golden_min(f, lo, hi, iters=200):
  """The minimizer of a unimodal f on [lo, hi] by golden-section search."""
  g = (math.sqrt(5) - 1) / 2
  a, b = lo, hi
  for _ in range(iters):
    c, d = b - g * (b - a), a + g * (b - a)
    if f(c) < f(d):
      b = d
    else:
      a = c
  return (a + b) / 2


@pytest.mark.parametrize('kernel', DATA_KERNELS)
def test_parameters_match_their_definitions(kernel):
  rng = np.random.default_rng(0)
  q = (0.8 * rng.standard_normal((40, 16))).astype(np.float32)
  k = (0.5 * rng.standard_normal((30, 16)) + 0.3).astype(np.float32)
  a, psi = features.data_parameters(kernel, _stats(q, k))
  a_ref, psi_ref = _reference_parameters(kernel, q, k)
  np.testing.assert_allclose(float(a), a_ref, rtol=1e-5)
  if kernel == 'favorsharp':
    np.testing.assert_allclose(psi, psi_ref, rtol=1e-5)


def test_optimal_a_minimizes_the_mean_log_second_moment():
  # The objective A* minimizes, evaluated in float64 over every pair and
  # minimized numerically: the two agree to 1e-6 (golden section converges
  # to ~1e-12 here; float32 statistics give A* to ~1e-7).
  rng = np.random.default_rng(1)
  for scale in (0.25, 0.5, 1.0, 1.5):
    q = (scale * rng.standard_normal((24, 16))).astype(np.float32)
    k = (scale * rng.standard_normal((20, 16))).astype(np.float32)
    x, y = _scaled(q)[:, None], _scaled(k)[None]

    def objective(a, x=x, y=y):
      return float(np.mean(_log_second_moment(x, y, a)))

    a_numeric = _golden_min(objective, -4.0, 0.124)
    a_formula = float(features.optimal_a(features.pair_rho(_stats(q, k))))
    assert a_formula < 0
    np.testing.assert_allclose(a_formula, a_numeric, atol=1e-6)


def test_sharp_scales_minimize_rho_over_diagonal_rescalings():
  # Anisotropic: queries large in the first half of the dimensions, keys in
  # the second. Any other positive diagonal rescaling gives a larger rho.
  rng = np.random.default_rng(2)
  spread = np.where(np.arange(16) < 8, 2.0, 0.3)
  q = (spread * rng.standard_normal((32, 16))).astype(np.float32)
  k = (spread[::-1] * rng.standard_normal((32, 16))).astype(np.float32)
  stats = _stats(q, k)
  psi = np.asarray(features.sharp_scales(stats), np.float64)
  x, y = _scaled(q), _scaled(k)

  def rho(p):
    return np.mean(np.sum((x[:, None] * p + y[None] / p) ** 2, -1))

  best = rho(psi)
  assert best < 0.5 * rho(np.ones(16))  # It matters on these inputs.
  for _ in range(50):
    assert rho(psi * np.exp(0.1 * rng.standard_normal(16))) > best


def test_closed_form_second_moment_matches_monte_carlo():
  # The variance statements below rest on this formula: check it against
  # 2^18 one-row estimates z = M phi_q phi_k (relative standard error of
  # the mean of z^2 at most 1% at these norms, measured 0.5-0.9%; bound: 5
  # standard errors).
  d, m = 8, 1 << 18
  rng = np.random.default_rng(3)
  q, k = (0.3 * rng.standard_normal((2, d))).astype(np.float32)
  w = np.asarray(features.draw_projection(jax.random.key(4), m, d, 'iid'))
  for a in (0.0, -0.1, -0.3):
    z = m * _reference_features(q, w, a) * _reference_features(k, w, a)
    z2 = z**2
    stderr = z2.std() / math.sqrt(m)
    expected = math.exp(_log_second_moment(_scaled(q), _scaled(k), a))
    assert abs(z2.mean() - expected) < 5 * stderr
    assert stderr < 0.01 * expected


@pytest.mark.parametrize('kernel', DATA_KERNELS)
@pytest.mark.parametrize('projection', ['iid', 'orthogonal'])
def test_unbiased_over_independent_projections(kernel, projection):
  # The kernel matrix estimate, averaged over 3000 independent draws of M =
  # D = 8 rows (one orthogonal block), equals exp(q . k / sqrt(D)) within 5
  # standard errors of that average, entry by entry (12 entries).
  d, draws = 8, 3000
  rng = np.random.default_rng(5)
  q = (0.7 * rng.standard_normal((3, d))).astype(np.float32)
  k = (0.7 * rng.standard_normal((4, d))).astype(np.float32)
  exact = np.exp(q.astype(np.float64) @ k.T.astype(np.float64) / math.sqrt(d))

  def estimate(key):
    w = features.draw_projection(key, d, d, projection)
    phi_q, phi_k = features.pair_feature_maps(q, k, w, kernel)
    return phi_q @ phi_k.T

  keys = jax.random.split(jax.random.key(6), draws)
  est = np.asarray(jax.vmap(estimate)(keys), np.float64)
  stderr = est.std(0) / math.sqrt(draws)
  assert np.all(np.abs(est.mean(0) - exact) < 5 * stderr)
  assert np.all(stderr < 0.05 * exact)  # The test has power.


def _variance(x, y, a):
  """Closed-form variance of one feature's estimate of exp(x . y)."""
  return math.exp(_log_second_moment(x, y, a)) - math.exp(2 * float(x @ y))


def _pair_parameters(kernel, q, k):
  a, psi = features.data_parameters(kernel, _stats(q[None], k[None]))
  return float(a), None if psi is None else np.asarray(psi, np.float64)


def test_favorpp_variance_below_favor_plus_on_every_pair():
  # Theory: for one pair, A* (from that pair's statistics) minimizes the
  # estimate's second moment, and the kernel value does not depend on A,
  # so the variance is at most FAVOR+'s (A = 0) for every pair, strictly
  # below when q' + k' != 0. Closed forms over 200 pairs at the sweep's
  # scales, and 2^18 sampled features on one pair at a scale where the
  # sample variance is reliable (closed-form ratio 0.68 there).
  rng = np.random.default_rng(8)
  for scale in (0.25, 0.5, 1.0, 1.5):
    for _ in range(50):
      q, k = (scale * rng.standard_normal((2, 16))).astype(np.float32)
      a, _ = _pair_parameters('favorpp', q, k)
      x, y = _scaled(q), _scaled(k)
      assert _variance(x, y, a) < _variance(x, y, 0.0)
  d, m = 8, 1 << 18
  q = (0.3 * rng.standard_normal(d)).astype(np.float32)
  k = (q + 0.1 * rng.standard_normal(d)).astype(np.float32)
  w = features.draw_projection(jax.random.key(7), m, d, 'iid')
  sample_var = {}
  for kernel in ('softmax', 'favorpp'):
    phi_q, phi_k = features.pair_feature_maps(q[None], k[None], w, kernel)
    z = m * np.asarray(phi_q[0], np.float64) * np.asarray(phi_k[0], np.float64)
    sample_var[kernel] = z.var()
  a, _ = _pair_parameters('favorpp', q, k)
  x, y = _scaled(q), _scaled(k)
  ratio = _variance(x, y, a) / _variance(x, y, 0.0)
  assert ratio < 0.9
  np.testing.assert_allclose(
    sample_var['favorpp'] / sample_var['softmax'], ratio, rtol=0.1
  )


def test_favorsharp_variance_below_favorpp_on_anisotropic_pairs():
  # Theory: Psi leaves q' . k' (so the kernel) unchanged and lowers
  # |q'|^2 + |k'|^2 and |q' + k'|^2, which the second moment increases
  # with for every A < 1/8; so FAVOR#'s variance is at most FAVOR++'s.
  # Anisotropic pairs: q large where k is small and the other way round.
  rng = np.random.default_rng(9)
  spread = np.where(np.arange(16) < 8, 1.6, 0.4)
  for _ in range(100):
    q = (spread * rng.standard_normal(16)).astype(np.float32)
    k = (spread[::-1] * rng.standard_normal(16)).astype(np.float32)
    x, y = _scaled(q), _scaled(k)
    a_pp, _ = _pair_parameters('favorpp', q, k)
    a_sharp, psi = _pair_parameters('favorsharp', q, k)
    np.testing.assert_allclose(
      float((x * psi) @ (y / psi)), float(x @ y), rtol=1e-6
    )
    assert _variance(x * psi, y / psi, a_sharp) < _variance(x, y, a_pp)


# Module tests: attention with the data kernels.


def _create(causal, kernel, **opts):
  opts = {'num_features': M, 'chunk_size': 8, 'num_heads': H, **opts}
  return attention.create(
    'favor', head_dim=D, causal=causal, rngs=nnx.Rngs(0), kernel=kernel, **opts
  )


def _inputs(shape=(B, L, H, D), seed=0, scale=1.0, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [scale * jax.random.normal(k, shape, dtype) for k in keys]


def _mask():
  mask = np.ones((B, L), bool)
  mask[0, 3] = False
  mask[0, L - 6 :] = False
  return jnp.asarray(mask)


def _trained(kernel, updates=3):
  """A causal module whose running statistics have seen some batches.

  Anisotropic queries and keys with a mean, so that A < 0 and Psi != 1.
  """
  attn = _create(True, kernel)
  spread = jnp.linspace(0.3, 2.0, D)
  for seed in range(updates):
    q, k, _ = _inputs(seed=10 + seed)
    attn.update_statistics(q * spread + 0.2, k * spread[::-1], mask=_mask())
  return attn


def _bidirectional_reference(kernel, q, k, v, mask, w, a_scale=1.0):
  """Float64 attention with A (times a_scale) and Psi per (batch, head)."""
  phi_q = np.zeros((B, L, H, M))
  phi_k = np.zeros((B, L, H, M))
  for b in range(B):
    real = np.asarray(mask[b])
    for h in range(H):
      qb, kb = np.asarray(q[b, :, h]), np.asarray(k[b, :, h])
      a, psi = _reference_parameters(kernel, qb[real], kb[real])
      phi_q[b, :, h] = _reference_features(qb, w, a_scale * a, psi)
      phi_k[b, :, h] = _reference_features(
        kb, w, a_scale * a, None if psi is None else 1 / psi
      )
  return reference.linear_attention(phi_q, phi_k, v, False, mask)


@pytest.mark.parametrize('kernel', DATA_KERNELS)
def test_bidirectional_equals_float64_reference(kernel):
  # A and Psi per (batch, head) from the real queries and keys only.
  q, k, v = _inputs(scale=1.5)
  mask = _mask()
  attn = _create(False, kernel)
  out = np.asarray(attn(q, k, v, mask=mask))
  expected = _bidirectional_reference(
    kernel, q, k, v, mask, attn.projection[...]
  )
  real = np.asarray(mask)
  np.testing.assert_allclose(out[real], expected[real], rtol=TOL, atol=TOL)


@pytest.mark.parametrize('kernel', DATA_KERNELS)
def test_causal_uses_the_running_statistics(kernel):
  attn = _trained(kernel)
  stats = attn.running_statistics()
  q, k, v = _inputs(seed=3)
  out = np.asarray(attn(q, k, v))
  a, psi = features.data_parameters(kernel, stats)
  w = attn.projection[...]
  phi_q = np.zeros((B, L, H, M))
  phi_k = np.zeros((B, L, H, M))
  for h in range(H):
    p = None if psi is None else np.asarray(psi[h], np.float64)
    phi_q[:, :, h] = _reference_features(q[:, :, h], w, float(a[h]), p)
    phi_k[:, :, h] = _reference_features(
      k[:, :, h], w, float(a[h]), None if p is None else 1 / p
    )
  assert np.all(np.asarray(a) < -0.01)
  expected = reference.linear_attention(phi_q, phi_k, v, True)
  np.testing.assert_allclose(out, expected, rtol=TOL, atol=TOL)


@pytest.mark.parametrize('kernel', DATA_KERNELS)
def test_a_scale_multiplies_a_star_and_zero_is_favor_plus(kernel):
  q, k, v = _inputs(scale=1.5)
  mask = _mask()
  half = _create(False, kernel, a_scale=0.5)
  out = np.asarray(half(q, k, v, mask=mask))
  w = half.projection[...]
  expected = _bidirectional_reference(kernel, q, k, v, mask, w, a_scale=0.5)
  real = np.asarray(mask)
  np.testing.assert_allclose(out[real], expected[real], rtol=TOL, atol=TOL)
  if kernel == 'favorpp':  # FAVOR# still rescales q and k at A = 0.
    plus = _create(False, 'softmax')
    zero = _create(False, kernel, a_scale=0.0)
    np.testing.assert_allclose(
      zero(q, k, v, mask=mask), plus(q, k, v, mask=mask), rtol=1e-5, atol=1e-6
    )


def test_running_statistics_are_bias_corrected_moving_averages():
  momentum = 0.9
  attn = _create(True, 'favorsharp', stats_momentum=momentum)
  before = attn.running_statistics()
  assert all(np.all(np.asarray(x) == 0) for x in before)
  batches = [_inputs(seed=20 + i) for i in range(3)]
  mask = np.asarray(_mask())
  ema = {name: np.zeros((H, D)) for name in features.PairStatistics._fields}
  for i, (q, k, _) in enumerate(batches):
    attn.update_statistics(q, k, mask=jnp.asarray(mask))
    x, y = (
      _scaled(np.asarray(q))[mask],
      _scaled(np.asarray(k))[mask],
    )  # [N, H, D]
    moments = {
      'mean_q': x.mean(0),
      'sq_q': (x**2).mean(0),
      'mean_k': y.mean(0),
      'sq_k': (y**2).mean(0),
    }
    for name, value in moments.items():
      ema[name] = momentum * ema[name] + (1 - momentum) * value
    got = attn.running_statistics()
    for name in ema:
      expected = ema[name] / (1 - momentum ** (i + 1))
      np.testing.assert_allclose(
        getattr(got, name), expected, rtol=1e-5, atol=1e-6
      )


def test_other_kernels_and_bidirectional_keep_no_statistics():
  for attn in (_create(False, 'favorpp'), _create(True, 'softmax')):
    assert not nnx.state(attn, nnx.BatchStat)
    q, k, _ = _inputs()
    attn.update_statistics(q, k)  # A no-op.
    assert not nnx.state(attn, nnx.BatchStat)


@pytest.mark.parametrize('kernel', DATA_KERNELS)
def test_causal_exact_by_gradients_with_learned_statistics(kernel):
  attn = _trained(kernel)
  q, k, v = _inputs(seed=4)
  i = 13

  def out_i(q, k, v):
    return jnp.sum(attn(q, k, v)[:, i] ** 2)

  grads = jax.grad(out_i, (0, 1, 2))(q, k, v)
  for g in grads:
    g = np.asarray(g)
    assert np.all(g[:, i + 1 :] == 0)
    assert np.any(g[:, : i + 1] != 0)


@pytest.mark.parametrize('kernel', DATA_KERNELS)
def test_padding_changes_nothing_in_the_statistics(kernel):
  # Bidirectional: the real part of a padded sequence gives what the
  # sequence alone gives, whatever the padded positions hold.
  q, k, v = _inputs((1, L, H, D), scale=1.5)
  real = 20
  mask = jnp.arange(L)[None] < real
  attn = _create(False, kernel)
  junk = [100.0 * x for x in _inputs((1, L, H, D), seed=9)]
  padded = [
    jnp.where(mask[..., None, None], x, j)
    for x, j in zip((q, k, v), junk, strict=True)
  ]
  out = attn(*padded, mask=mask)[:, :real]
  alone = attn(q[:, :real], k[:, :real], v[:, :real])
  np.testing.assert_allclose(out, alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('kernel', DATA_KERNELS)
def test_prefill_and_decode_equal_the_parallel_pass(kernel):
  attn = _trained(kernel)
  q, k, v = _inputs(seed=5)
  full = np.asarray(attn(q, k, v))
  split = 11
  cache = attn.init_cache(B, H, L)
  out, cache = attn.prefill(q[:, :split], k[:, :split], v[:, :split], cache)
  outs = [np.asarray(out)]
  for t in range(split, L):
    out, cache = attn.decode(
      q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], cache
    )
    outs.append(np.asarray(out))
  np.testing.assert_allclose(
    np.concatenate(outs, 1), full, rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize('kernel', DATA_KERNELS)
@pytest.mark.parametrize('causal', [True, False])
def test_finite_in_bf16_at_ten_times_the_norm(kernel, causal):
  attn = _trained(kernel) if causal else _create(False, kernel)
  q, k, v = _inputs(dtype=jnp.bfloat16)
  q, k = 10 * q, 10 * k
  out, grads = jax.value_and_grad(
    lambda q, k, v: jnp.sum(
      attn(q, k, v, mask=_mask()).astype(jnp.float32) ** 2
    ),
    (0, 1, 2),
  )(q, k, v)
  assert np.isfinite(float(out))
  for g in grads:
    assert g.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(g, np.float32)))


@pytest.mark.parametrize(
  'opts, match',
  [
    ({'num_heads': None}, r'num_heads.*None'),
    ({'num_heads': 0}, r'num_heads.*0'),
    ({'stats_momentum': 1.0}, r'stats_momentum.*\[0, 1\).*1\.0'),
    ({'projection': 'none'}, r"projection 'none'.*kernel 'favorpp'"),
    ({'a_scale': 1.5}, r'a_scale.*\[0, 1\].*1\.5'),
  ],
)
def test_bad_options_name_the_value(opts, match):
  with pytest.raises(ValueError, match=match):
    _create(True, 'favorpp', **opts)


def test_inputs_with_other_heads_than_the_statistics_are_refused():
  attn = _create(True, 'favorpp', num_heads=3)
  q, k, v = _inputs()  # H = 2.
  with pytest.raises(ValueError, match='inputs have 2 heads.*num_heads=3'):
    attn(q, k, v)


# The trainer: running statistics learned in training steps only.


def _favor_modules(model):
  return [
    m
    for _, m in nnx.iter_graph(model)
    if isinstance(m, favor.FavorAttention) and m.num_heads is not None
  ]


def _train_state(kernel):
  from performer.bench import training_throughput
  from tests import multiprocess_worker as worker

  # The data would fill in the vocabulary: bytes.
  config = worker.tiny_config(
    'unused.txt', **{'model.attention': kernel, 'model.vocab_size': 256}
  )
  return config, training_throughput.train_state(config)


@pytest.mark.parametrize('kernel', DATA_KERNELS)
def test_train_step_learns_the_statistics_and_micro_batches_agree(kernel):
  from performer import steps
  from performer.bench import training_throughput

  config, (graphdef, state) = _train_state(kernel)
  batch = training_throughput.lm_batch(4, 16, config.model.vocab_size)
  key = jax.random.key(0)
  learned = []
  for accum in (1, 2):
    options = steps.StepOptions(grad_accum_steps=accum)
    fresh = jax.tree.map(jnp.copy, state)  # The step donates its state.
    new_state, _ = steps.train_step(graphdef, fresh, batch, key, options)
    (module,) = _favor_modules(nnx.merge(graphdef, new_state).model)
    assert float(module.running_count[...]) == 1.0
    learned.append(module.running_statistics())
  # Every row counts (no padding), so the mean of two halves' moments is
  # the whole batch's.
  for one, two in zip(*learned, strict=True):
    assert np.any(np.asarray(one) != 0)
    np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-7)


def test_evaluation_and_decoding_leave_the_statistics_alone():
  _, (graphdef, state) = _train_state('favorpp')
  model = nnx.merge(graphdef, state).model
  (module,) = _favor_modules(model)
  tokens = jnp.ones((2, 8), jnp.int32)
  model(tokens, train=False)
  cache = model.init_cache(2, 8)
  _, cache = model.prefill(tokens[:, :4], cache)
  model.decode_step(tokens[:, 4:5], cache)
  assert float(module.running_count[...]) == 0.0
  model(tokens, train=True)
  assert float(module.running_count[...]) == 1.0
