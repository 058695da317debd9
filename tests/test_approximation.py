"""Tests of performer/approximation.py and scripts/approximation_error.py.

The error code is checked against plain numpy written from the formulas, the
exact ReLU kernel against a Monte Carlo average, and the paper's orderings
(orthogonal < iid, positive < trigonometric on small kernel values) over
fixed seeds at tiny sizes.
"""

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

from performer import approximation as ap

_SCRIPT = (
  pathlib.Path(__file__).resolve().parents[1] / 'scripts'
) / 'approximation_error.py'
_spec = importlib.util.spec_from_file_location('approximation_error', _SCRIPT)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)


def _np_features(x, w, kernel, eps):
  """Feature maps straight from the paper's formulas, in float64."""
  d = x.shape[-1]
  xs = x * d**-0.25
  proj = xs @ w.T
  m = w.shape[0]
  sq = 0.5 * np.sum(xs**2, axis=-1, keepdims=True)
  if kernel == 'softmax':
    return np.exp(proj - sq) / np.sqrt(m)
  if kernel == 'softmax_trig':
    return (
      np.concatenate([np.sin(proj), np.cos(proj)], -1)
      * np.exp(sq)
      / (np.sqrt(m))
    )
  assert kernel == 'relu'
  return np.maximum(proj, 0.0) + eps


def _np_errors(q, k, v, w, kernel, eps, exact):
  phi_q = _np_features(q, w, kernel, eps)
  phi_k = _np_features(k, w, kernel, eps)
  approx = phi_q @ phi_k.T
  if kernel == 'relu':
    approx = approx / w.shape[0]
  a = exact / exact.sum(-1, keepdims=True)
  a_hat = approx / approx.sum(-1, keepdims=True)
  sq = (approx - exact) ** 2
  # Tiny sizes: the quantile is taken over all entries.
  small = exact <= np.quantile(exact, 0.1)
  return {
    'kernel_mse': np.mean(sq),
    'small_kernel_mse': np.mean(sq[small]),
    'attention_mse': np.mean((a_hat - a) ** 2),
    'output_mse': np.mean((a_hat @ v - a @ v) ** 2),
  }


def _tiny_inputs(seed=0, length=8, dim=4, num_features=6):
  rng = np.random.default_rng(seed)
  q, k, v = (0.7 * rng.standard_normal((length, dim)) for _ in range(3))
  w = rng.standard_normal((num_features, dim))
  return q, k, v, w


@pytest.mark.parametrize('kernel', ['softmax', 'softmax_trig'])
def test_softmax_errors_match_numpy(kernel):
  q, k, v, w = _tiny_inputs()
  exact = np.exp(q @ k.T / np.sqrt(q.shape[-1]))
  want = _np_errors(q, k, v, w, kernel, 0.0, exact)
  got = ap.approximation_errors(*(np.float32(x) for x in (q, k, v, w)), kernel)
  for key, value in want.items():
    # float32 against float64: relative 1e-4 on squared errors.
    np.testing.assert_allclose(float(got[key]), value, rtol=1e-4, err_msg=key)


def test_relu_errors_match_numpy():
  q, k, v, w = _tiny_inputs(seed=1)
  eps = 1e-3
  exact = np.asarray(ap.exact_relu_kernel(np.float32(q), np.float32(k), eps))
  want = _np_errors(q, k, v, w, 'relu', eps, exact)
  got = ap.approximation_errors(
    *(np.float32(x) for x in (q, k, v, w)), 'relu', eps
  )
  for key, value in want.items():
    np.testing.assert_allclose(float(got[key]), value, rtol=1e-4, err_msg=key)


def test_exact_relu_kernel_matches_monte_carlo():
  rng = np.random.default_rng(0)
  d, eps = 4, 0.05
  q, k = rng.standard_normal((3, d)), rng.standard_normal((5, d))
  w = rng.standard_normal((1_000_000, d))
  f_q = np.maximum(q * d**-0.25 @ w.T, 0) + eps  # [3, N]
  f_k = np.maximum(k * d**-0.25 @ w.T, 0) + eps  # [5, N]
  mc = f_q @ f_k.T / w.shape[0]
  got = np.asarray(ap.exact_relu_kernel(np.float32(q), np.float32(k), eps))
  # A million samples: the Monte Carlo standard error is well under 1%.
  np.testing.assert_allclose(got, mc, rtol=1e-2)


def _mean_errors(kernel, projection, metric, *, qk_std, seeds=16):
  fn = jax.jit(
    ap.sample_errors,
    static_argnames=('length', 'dim', 'num_features', 'projection', 'kernel'),
  )
  return np.mean(
    [
      float(
        fn(
          jax.random.key(s),
          length=64,
          dim=16,
          num_features=16,
          projection=projection,
          kernel=kernel,
          qk_std=qk_std,
        )[metric]
      )
      for s in range(seeds)
    ]
  )


@pytest.mark.parametrize('kernel', ['softmax', 'relu'])
def test_orthogonal_beats_iid(kernel):
  # M = D = 16: one full orthogonal block, where the variance reduction of
  # the paper's Theorem 2 is largest.
  iid = _mean_errors(kernel, 'iid', 'kernel_mse', qk_std=0.5)
  orth = _mean_errors(kernel, 'orthogonal', 'kernel_mse', qk_std=0.5)
  assert orth < iid, (orth, iid)


def test_positive_beats_trigonometric_on_small_kernel_values():
  pos = _mean_errors('softmax', 'iid', 'small_kernel_mse', qk_std=1.0)
  trig = _mean_errors('softmax_trig', 'iid', 'small_kernel_mse', qk_std=1.0)
  assert pos < trig, (pos, trig)


def test_exact_kernel_rejects_unknown_kernel():
  x = np.ones((2, 4), np.float32)
  with pytest.raises(ValueError, match="'elu'.*valid"):
    ap.exact_kernel(x, x, 'elu')


def test_script_writes_json_and_png(tmp_path, capsys):
  out = tmp_path / 'ae.json'
  png = tmp_path / 'ae.png'
  result = script.main(
    [
      '--length=32',
      '--dim=8',
      '--samples=2',
      '--num_features=8',
      '--kernels=softmax_trig,relu',
      '--projections=orthogonal',
      f'--json={out}',
      f'--png={png}',
    ]
  )
  assert png.stat().st_size > 0
  saved = json.loads(out.read_text())
  assert saved['settings']['length'] == 32
  records = saved['records']
  assert [(r['kernel'], r['num_features']) for r in records] == [
    ('softmax_trig', 8),
    ('relu', 8),
  ]
  assert len(result['records']) == 2
  for r in records:
    for metric in ap.METRICS:
      assert len(r[f'{metric}_samples']) == 2
      assert r[f'{metric}_mean'] >= 0 and r[f'{metric}_std'] >= 0
  assert '| kernel |' in capsys.readouterr().out


@pytest.mark.parametrize(
  'flag, message',
  [
    ('--kernels=softmax,gauss', "unknown kernel 'gauss'; valid"),
    ('--projections=hadamard', "unknown projection 'hadamard'; valid"),
    ('--num_features=16,0', "--num_features: '0' is not a positive"),
    ('--length=-4', '--length: -4 is not a positive'),
    ('--qk_std=0.5,0', "--qk_std must be positive numbers, got '0'"),
    ('--qk_std=big', "--qk_std must be positive numbers, got 'big'"),
    ('--trained_index=-1', '--trained_index must be >= 0, got -1'),
    ('--a_scales=1,1.5', "--a_scales must be numbers in [0, 1], got '1.5'"),
    ('--small_quantile=2', '--small_quantile must be in'),
  ],
)
def test_bad_flags_name_the_value(flag, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    script.main([flag])
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
