"""Tests of the random projections and feature maps (features.py).

References are numpy formulas in float64 and the exact softmax attention of
tests/reference.py; statistical tests use fixed seeds, so they are
deterministic.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from performer.attention import features
from tests import reference


def _gram_blocks(w_MD):
  """Gram matrices of consecutive blocks of D rows (the last one shorter)."""
  w = np.asarray(w_MD, np.float64)
  d = w.shape[1]
  return [w[i : i + d] @ w[i : i + d].T for i in range(0, w.shape[0], d)]


def _chi_mean(d):
  """E|g| for g ~ N(0, I_d): the mean of a chi distribution with d dof."""
  return math.sqrt(2) * math.exp(
    special.gammaln((d + 1) / 2) - special.gammaln(d / 2)
  )


@pytest.mark.parametrize('row_norm', features.ROW_NORMS)
def test_orthogonal_blocks_are_orthogonal(row_norm):
  m, d = 40, 16  # Blocks of 16, 16 and a truncated 8 rows.
  w = features.orthogonal_projection(jax.random.key(0), m, d, row_norm)
  assert w.shape == (m, d) and w.dtype == jnp.float32
  grams = _gram_blocks(w)
  assert [g.shape[0] for g in grams] == [16, 16, 8]
  for gram in grams:
    off_diagonal = gram - np.diag(np.diag(gram))
    # float32 QR: inner products of unit rows are exact to ~1e-6; rows have
    # norm ~4 here, so 1e-4 on products of norm-4 rows.
    np.testing.assert_allclose(off_diagonal, 0.0, atol=1e-4)
  # Different blocks are independent draws, not orthogonal to each other.
  cross = np.asarray(w[:16], np.float64) @ np.asarray(w[16:32], np.float64).T
  assert np.abs(cross).max() > 1.0


def test_sqrt_d_rows_have_norm_sqrt_d():
  w = features.orthogonal_projection(jax.random.key(1), 100, 16, 'sqrt_d')
  np.testing.assert_allclose(np.linalg.norm(w, axis=1), 4.0, rtol=1e-5)


@pytest.mark.parametrize('projection', features.PROJECTIONS)
def test_chi_row_norms_follow_the_chi_distribution(projection):
  # 'chi' orthogonal rows and iid rows both have Gaussian-vector norms.
  m, d = 4096, 16
  w = features.draw_projection(jax.random.key(2), m, d, projection, 'chi')
  norms = np.linalg.norm(np.asarray(w, np.float64), axis=1)
  # chi_16: mean 3.94, std 0.70; the mean of 4096 norms has std 0.011, so
  # 0.05 is a 4.5-sigma band.
  assert abs(norms.mean() - _chi_mean(d)) < 0.05
  assert abs(norms.std() - math.sqrt(d - _chi_mean(d) ** 2)) < 0.05


def test_iid_rows_are_not_orthogonal():
  w = features.draw_projection(jax.random.key(3), 16, 16, 'iid')
  gram = _gram_blocks(w)[0]
  assert np.abs(gram - np.diag(np.diag(gram))).max() > 1.0


def test_projection_is_a_function_of_the_key():
  draw = features.draw_projection
  np.testing.assert_array_equal(
    draw(jax.random.key(4), 32, 8), draw(jax.random.key(4), 32, 8)
  )
  assert not np.allclose(
    draw(jax.random.key(4), 32, 8), draw(jax.random.key(5), 32, 8)
  )


def _numpy_inputs(d=8, n=6, m=24, scale=1.0):
  rng = np.random.default_rng(0)
  x = (scale * rng.standard_normal((n, d))).astype(np.float32)
  w = rng.standard_normal((m, d)).astype(np.float32)
  return x, w


def test_positive_features_match_formula():
  x, w = _numpy_inputs()
  xs = x.astype(np.float64) * 8**-0.25
  expected = np.exp(
    xs @ w.T.astype(np.float64) - 0.5 * (xs**2).sum(-1)[:, None]
  )
  expected /= math.sqrt(24)
  got = features.feature_map(x, w, 'softmax')
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_trig_features_match_formula():
  x, w = _numpy_inputs()
  xs = x.astype(np.float64) * 8**-0.25
  proj = xs @ w.T.astype(np.float64)
  expected = np.concatenate([np.sin(proj), np.cos(proj)], axis=-1)
  expected *= np.exp(0.5 * (xs**2).sum(-1))[:, None] / math.sqrt(24)
  got = features.feature_map(x, w, 'softmax_trig')
  assert got.shape == (6, 48)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


NUMPY_KERNELS = {
  'relu': lambda z: np.maximum(z, 0.0),
  'elu': lambda z: np.where(z > 0, z + 1.0, np.exp(z)),
  'exp': np.exp,
  'softplus': lambda z: np.log1p(np.exp(z)),
  'sigmoid': lambda z: 1.0 / (1.0 + np.exp(-z)),
  'abs': np.abs,
  'square': np.square,
}


def test_every_generalized_kernel_has_a_reference():
  assert set(NUMPY_KERNELS) == set(features.GENERALIZED_KERNELS)


@pytest.mark.parametrize('projected', [True, False])
@pytest.mark.parametrize('kernel', sorted(NUMPY_KERNELS))
def test_generalized_features_match_formula(kernel, projected):
  x, w = _numpy_inputs()
  xs = x.astype(np.float64) * 8**-0.25
  z = xs @ w.T.astype(np.float64) if projected else xs
  eps = 0.0 if kernel == 'exp' else 1e-3  # 'exp' is positive: no eps.
  expected = NUMPY_KERNELS[kernel](z) + eps
  got = features.feature_map(x, w if projected else None, kernel, 1e-3)
  assert got.shape == expected.shape  # [n, M] or, deterministic, [n, D].
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('kernel', ['softmax', 'softmax_trig', 'exp'])
def test_feature_parts_stay_bounded_for_large_inputs(kernel):
  # Norms 10x typical: the features themselves overflow float32, the split
  # base * exp(log_scale) does not.
  x, w = _numpy_inputs(d=64, m=256, scale=10.0)
  base, log_scale = features.feature_parts(x, w, kernel)
  assert np.all(np.isfinite(base)) and np.all(np.isfinite(log_scale))
  assert np.abs(np.asarray(base)).max() <= 1.0 + 1e-6
  if kernel != 'softmax_trig':  # The largest base entry is the reference.
    np.testing.assert_allclose(
      np.abs(base).max(-1) * (math.sqrt(256) if kernel == 'softmax' else 1),
      1.0,
      rtol=1e-6,
    )


@pytest.mark.parametrize('kernel', features.SOFTMAX_KERNELS)
def test_softmax_features_are_unbiased(kernel):
  # With iid rows, phi(q) . phi(k) is the mean of M independent one-row
  # estimates z_m; their sample mean must be within 5 standard errors of
  # exp(q . k / sqrt(D)).
  d, m = 4, 1 << 16
  rng = np.random.default_rng(1)
  q, k = (0.7 * rng.standard_normal((2, d))).astype(np.float32)
  exact = math.exp(float(np.dot(q.astype(np.float64), k)) / math.sqrt(d))
  w = features.draw_projection(jax.random.key(6), m, d, 'iid')
  # FAVOR++ / FAVOR#: A and Psi from this q and k, a fixed choice.
  phi_q, phi_k = (
    np.asarray(x, np.float64)
    for x in features.pair_feature_maps(q, k, w, kernel)
  )
  z = m * phi_q * phi_k
  if kernel == 'softmax_trig':  # A sin and a cos term per row.
    z = z[:m] + z[m:]
  stderr = z.std() / math.sqrt(m)
  assert abs(z.mean() - exact) < 5 * stderr
  assert stderr < 0.05 * exact  # The test has power.


def _attention_matrix_mse(projection, q, k, m, seeds=400):
  """Mean over seeds of the MSE of the approximate attention matrix."""
  d = q.shape[-1]
  onehot_v = np.eye(q.shape[0])[None, :, None, :]
  exact = reference.masked_softmax_attention(
    q[None, :, None], k[None, :, None], onehot_v
  )[0, :, 0]

  def approx(key):
    w = features.draw_projection(key, m, d, projection)
    a = features.feature_map(q, w) @ features.feature_map(k, w).T
    return a / a.sum(-1, keepdims=True)

  keys = jax.random.split(jax.random.key(7), seeds)
  approx_SLL = np.asarray(jax.vmap(approx)(keys), np.float64)
  return np.mean((approx_SLL - exact) ** 2)


def test_orthogonal_features_beat_iid():
  # One block (M = D), where orthogonality matters most. Measured ratio of
  # the MSEs over these 400 seeds: 0.77, standard error 0.03 (from the
  # spread over seeds); the bound 0.9 is 4.5 standard errors away.
  l, d = 32, 16
  rng = np.random.default_rng(2)
  q, k = (0.5 * rng.standard_normal((2, l, d))).astype(np.float32)
  mse_orthogonal = _attention_matrix_mse('orthogonal', q, k, m=d)
  mse_iid = _attention_matrix_mse('iid', q, k, m=d)
  assert mse_orthogonal < 0.9 * mse_iid


def test_positive_features_beat_trig_where_kernel_is_small():
  # Negatively correlated q, k: exp(q . k / sqrt(D)) ~ 0.02. Positive
  # features' variance vanishes with the kernel value; trigonometric ones
  # keep a variance of order exp(|q'|^2 + |k'|^2).
  n, d, m = 256, 16, 64
  rng = np.random.default_rng(3)
  q = rng.standard_normal((n, d)).astype(np.float32)
  k = (-q + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
  exact = np.exp(np.sum(q.astype(np.float64) * k, -1) / math.sqrt(d))
  assert np.median(exact) < 0.05
  mse = {}
  for kernel in features.SOFTMAX_KERNELS:
    errors = []
    for seed in range(4):
      w = features.draw_projection(jax.random.key(seed), m, d, 'iid')
      phi_q, phi_k = (
        np.asarray(x, np.float64)
        for x in features.pair_feature_maps(q, k, w, kernel)
      )
      errors.append(np.mean((np.sum(phi_q * phi_k, -1) - exact) ** 2))
    mse[kernel] = np.mean(errors)
  # Measured: 3e-5 vs 1e4; demand a factor 100.
  assert mse['softmax'] < 0.01 * mse['softmax_trig']


@pytest.mark.parametrize(
  'call, match',
  [
    (
      lambda: features.draw_projection(jax.random.key(0), 8, 4, 'gauss'),
      r"projection 'gauss'.*orthogonal",
    ),
    (
      lambda: features.orthogonal_projection(jax.random.key(0), 8, 4, 'unit'),
      r"row_norm 'unit'.*chi.*sqrt_d",
    ),
    (
      lambda: features.feature_map(jnp.ones((2, 4)), jnp.ones((8, 4)), 'tanh'),
      r"kernel 'tanh'.*relu",
    ),
    (
      lambda: features.feature_map(jnp.ones((2, 4)), None, 'softmax'),
      r"'softmax' needs a random projection",
    ),
  ],
)
def test_bad_arguments_raise(call, match):
  with pytest.raises(ValueError, match=match):
    call()
