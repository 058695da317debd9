"""How well random features approximate attention (paper, Fig. 4).

Dense L x L matrices on purpose: the point is to compare an estimate with the
exact quantity entry by entry, so nothing here is meant for long sequences.
The feature maps come from `performer.attention.features`; this module only
turns their dot products into kernel and attention estimates and measures
the error.

Conventions. Queries and keys are [L, D] and [S, D]; the softmax logit is
q . k / sqrt(D). For a projection with M rows:
  * softmax kernels ('softmax' positive, 'softmax_trig' trigonometric): the
    estimate of exp(q . k / sqrt(D)) is phi(q) . phi(k), as the features
    already carry their 1 / sqrt(M).
  * generalized kernels (e.g. 'relu'): the features f(w_m . q') + eps carry
    no 1 / sqrt(M), so the estimate of the kernel is phi(q) . phi(k) / M.
    Its exact value is the expectation over one Gaussian row w ~ N(0, I_D)
    (orthogonal rows with 'chi' norms are marginally Gaussian too, so both
    projections estimate the same kernel). Only 'relu' has a closed form
    here (`exact_relu_kernel`).
The attention matrix is the kernel matrix with each row divided by its sum;
the output is that matrix times the values. A kernel's scale cancels in
both. `error_sweep` evaluates a grid of kernels, projections and feature
counts over independent samples (scripts/approximation_error.py).
"""

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from performer.attention import features

# Kernels whose exact value `exact_kernel` knows.
EXACT_KERNELS = features.SOFTMAX_KERNELS + ('relu',)
# The errors `approximation_errors` returns.
METRICS = ('attention_mse', 'output_mse', 'kernel_mse', 'small_kernel_mse')


def exact_softmax_kernel(q_LD: jax.Array, k_SD: jax.Array) -> jax.Array:
  """exp(q . k / sqrt(D)) for every pair: [L, S]."""
  d = q_LD.shape[-1]
  return jnp.exp(q_LD @ k_SD.T / math.sqrt(d))


def exact_relu_kernel(
  q_LD: jax.Array, k_SD: jax.Array, eps: float = 0.0
) -> jax.Array:
  """E_w[(relu(w . q') + eps) (relu(w . k') + eps)], w ~ N(0, I_D): [L, S].

  q' = q D^-1/4 and k' = k D^-1/4 as in the feature maps. Without eps this
  is the first-order arc-cosine kernel (Cho and Saul, 2009),
    |q'| |k'| (sin t + (pi - t) cos t) / (2 pi),  t the angle of q and k,
  and eps adds eps E[relu(w . x')] = eps |x'| / sqrt(2 pi) per side plus
  eps^2.

  Args:
    q_LD: queries.
    k_SD: keys.
    eps: the features' additive constant (`feature_parts`' eps).

  Returns:
    The exact kernel matrix, float32.
  """
  d = q_LD.shape[-1]
  q_LD = q_LD * d**-0.25
  k_SD = k_SD * d**-0.25
  qn_L = jnp.linalg.norm(q_LD, axis=-1)
  kn_S = jnp.linalg.norm(k_SD, axis=-1)
  norms_LS = qn_L[:, None] * kn_S[None, :]
  cos_LS = jnp.clip(q_LD @ k_SD.T / jnp.maximum(norms_LS, 1e-30), -1.0, 1.0)
  theta_LS = jnp.arccos(cos_LS)
  arccos_LS = (
    norms_LS
    * (jnp.sin(theta_LS) + (math.pi - theta_LS) * cos_LS)
    / (2 * math.pi)
  )
  mean_relu = 1.0 / math.sqrt(2 * math.pi)
  return arccos_LS + eps * mean_relu * (qn_L[:, None] + kn_S[None, :]) + eps**2


def exact_kernel(
  q_LD: jax.Array, k_SD: jax.Array, kernel: str, eps: float = 1e-3
) -> jax.Array:
  """The kernel matrix that `kernel`'s random features estimate: [L, S].

  Args:
    q_LD: queries.
    k_SD: keys.
    kernel: one of `EXACT_KERNELS`; both softmax kernels estimate the same
      exp(q . k / sqrt(D)).
    eps: the generalized features' additive constant.

  Raises:
    ValueError: for a kernel without a known exact value.
  """
  if kernel in features.SOFTMAX_KERNELS:
    return exact_softmax_kernel(q_LD, k_SD)
  if kernel == 'relu':
    return exact_relu_kernel(q_LD, k_SD, eps)
  raise ValueError(
    f'no exact kernel for {kernel!r}; valid: {list(EXACT_KERNELS)}'
  )


def estimated_kernel(
  q_LD: jax.Array,
  k_SD: jax.Array,
  w_MD: jax.Array,
  kernel: str,
  eps: float = 1e-3,
  a_scale: float = 1.0,
) -> jax.Array:
  """The random-feature estimate of `exact_kernel`: [L, S].

  Args:
    q_LD: queries.
    k_SD: keys.
    w_MD: the projection (rows w_m).
    kernel: one of `features.KERNELS`; FAVOR++ and FAVOR# take A (and Psi)
      from the moments of these q and k.
    eps: the generalized features' additive constant.
    a_scale: FAVOR++ / FAVOR#'s A as a multiple of A*.
  """
  phi_LF, phi_SF = features.pair_feature_maps(
    q_LD, k_SD, w_MD, kernel, eps, a_scale=a_scale
  )
  k_LS = phi_LF @ phi_SF.T
  if kernel in features.SOFTMAX_KERNELS:
    return k_LS
  # Generalized features sum over the rows instead of averaging.
  return k_LS / w_MD.shape[0]


def attention_matrix(kernel_LS: jax.Array) -> jax.Array:
  """Rows normalized to sum to one: D^-1 K."""
  return kernel_LS / jnp.sum(kernel_LS, axis=-1, keepdims=True)


def approximation_errors(
  q_LD: jax.Array,
  k_SD: jax.Array,
  v_SD: jax.Array,
  w_MD: jax.Array,
  kernel: str,
  eps: float = 1e-3,
  small_quantile: float = 0.1,
  causal: bool = False,
  a_scale: float = 1.0,
) -> dict[str, jax.Array]:
  """Mean squared errors of one random-feature estimate.

  Args:
    q_LD: queries.
    k_SD: keys.
    v_SD: values.
    w_MD: the projection.
    kernel: one of `EXACT_KERNELS`.
    eps: the generalized features' additive constant.
    small_quantile: which entries count as small kernel values for
      'small_kernel_mse'.
    causal: keep only the entries j <= i (L == S), as a causal model
      attends: the kernel errors are over those entries, the attention rows
      normalized over them.
    a_scale: FAVOR++ / FAVOR#'s A as a multiple of A*.

  Returns:
    Scalars: 'kernel_mse' (of the unnormalized kernel matrix),
    'small_kernel_mse' (the same over the entries whose exact kernel value
    is at most its `small_quantile` quantile, taken over a strided subset
    of at most about 512 x 512 entries; where positive and trigonometric
    features differ most), 'attention_mse' (of the row-normalized attention
    matrix) and 'output_mse' (of attention times the values, the paper's
    Fig. 4 quantity), each a mean over entries.
  """
  exact_LS = exact_kernel(q_LD, k_SD, kernel, eps)
  approx_LS = estimated_kernel(q_LD, k_SD, w_MD, kernel, eps, a_scale)
  seen_LS = jnp.ones(exact_LS.shape, bool)
  if causal:
    seen_LS = jnp.tril(seen_LS)
    exact_LS = jnp.where(seen_LS, exact_LS, 0.0)
    approx_LS = jnp.where(seen_LS, approx_LS, 0.0)
  a_LS = attention_matrix(exact_LS)
  a_hat_LS = attention_matrix(approx_LS)
  sq_LS = jnp.square(approx_LS - exact_LS)
  # Entries a causal model never forms are exact zeros on both sides; the
  # means are over the entries it does.
  entries = jnp.sum(seen_LS)
  # The quantile of a strided subset: sorting all L x S entries would cost
  # more than the rest of the function.
  row_stride = max(1, exact_LS.shape[0] // 512)
  col_stride = max(1, exact_LS.shape[1] // 512)
  subset = exact_LS[::row_stride, ::col_stride]
  seen_subset = seen_LS[::row_stride, ::col_stride]
  threshold = jnp.nanquantile(
    jnp.where(seen_subset, subset, jnp.nan), small_quantile
  )
  small_LS = (exact_LS <= threshold) & seen_LS
  return {
    'kernel_mse': jnp.sum(sq_LS) / entries,
    'small_kernel_mse': jnp.sum(jnp.where(small_LS, sq_LS, 0.0))
    / jnp.sum(small_LS),
    'attention_mse': jnp.sum(jnp.square(a_hat_LS - a_LS)) / entries,
    'output_mse': jnp.mean(jnp.square(a_hat_LS @ v_SD - a_LS @ v_SD)),
  }


def draw_inputs(
  key: jax.Array, length: int, dim: int, qk_std: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """q, k ~ N(0, qk_std^2) and v ~ N(0, 1) entries, each [length, dim]."""
  kq, kk, kv = jax.random.split(key, 3)
  shape = (length, dim)
  q_LD = qk_std * jax.random.normal(kq, shape, jnp.float32)
  k_LD = qk_std * jax.random.normal(kk, shape, jnp.float32)
  v_LD = jax.random.normal(kv, shape, jnp.float32)
  return q_LD, k_LD, v_LD


def sample_errors(
  key: jax.Array,
  *,
  length: int,
  dim: int,
  num_features: int,
  projection: str,
  kernel: str,
  qk_std: float,
  eps: float = 1e-3,
  small_quantile: float = 0.1,
  a_scale: float = 1.0,
) -> dict[str, jax.Array]:
  """`approximation_errors` for one draw of inputs and one of the projection.

  The inputs depend on `key` only (not on the projection or kernel), so
  configurations evaluated with the same key see the same q, k, v.

  Args:
    key: a JAX random key.
    length: L = S.
    dim: D.
    num_features: M, rows of the projection.
    projection: 'iid' or 'orthogonal'.
    kernel: one of `EXACT_KERNELS`.
    qk_std: standard deviation of the query and key entries.
    eps: the generalized features' additive constant.
    small_quantile: see `approximation_errors`.
    a_scale: see `approximation_errors`.
  """
  input_key, proj_key = jax.random.split(key)
  q_LD, k_LD, v_LD = draw_inputs(input_key, length, dim, qk_std)
  w_MD = features.draw_projection(proj_key, num_features, dim, projection)
  return approximation_errors(
    q_LD, k_LD, v_LD, w_MD, kernel, eps, small_quantile, a_scale=a_scale
  )


def error_sweep(
  settings: dict[str, Any], log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
  """Evaluates every (q, k scale, kernel, projection, M); one record each.

  Sample i uses the key fold_in(key(seed), i) for every configuration, so
  all configurations see the same inputs in a sample (a paired comparison;
  inputs of another scale are the same draws rescaled).

  Args:
    settings: 'qk_stds', 'kernels', 'a_scales' (FAVOR++ / FAVOR#'s A as
      multiples of A*; each data kernel is run at each), 'projections',
      'num_features' (lists), 'samples', 'seed', and the keyword arguments
      of `sample_errors` ('length', 'dim', 'eps', 'small_quantile').
    log: receives one progress line per configuration.

  Returns:
    Records with 'source' ('random'), 'qk_std', 'kernel', 'a_scale',
    'label' (`label`), 'projection', 'num_features', 'seconds' and, for
    each metric of `METRICS`, the fields of `summarize_samples`.
  """
  fn = jax.jit(
    sample_errors,
    static_argnames=('length', 'dim', 'num_features', 'projection', 'kernel'),
  )
  base = jax.random.key(settings['seed'])
  keys = [jax.random.fold_in(base, i) for i in range(settings['samples'])]
  shared = {k: settings[k] for k in ('length', 'dim', 'eps', 'small_quantile')}
  records = []
  for qk_std in settings['qk_stds']:
    for kernel, a_scale, projection, m in _configurations(settings):
      start = time.perf_counter()
      per_sample = [
        fn(
          key,
          num_features=m,
          projection=projection,
          kernel=kernel,
          qk_std=qk_std,
          a_scale=a_scale or 1.0,
          **shared,
        )
        for key in keys
      ]
      record = _record(
        {'source': 'random', 'qk_std': qk_std},
        (kernel, a_scale, projection, m),
        jax.device_get(per_sample),
      )
      record['seconds'] = time.perf_counter() - start
      records.append(record)
      log(_progress(record))
  return records


def trained_error_sweep(
  layers: list[tuple[Any, Any, Any, Any]],
  settings: dict[str, Any],
  *,
  causal: bool,
  log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
  """The same errors on a trained model's own queries, keys and values.

  Sample i draws its projection from fold_in(key(seed), i) for every
  configuration; its error is the mean over all layers and heads, so the
  spread over samples is the spread over projections. FAVOR++ and FAVOR#
  take their statistics from each head's q and k (what the running
  statistics of a causal model estimate).

  Args:
    layers: per layer, (q [T, H, D], k, v, real [T]) from
      `performer.probe.attention_inputs`; padded positions are dropped.
    settings: 'kernels', 'a_scales', 'projections', 'num_features',
      'samples', 'seed', 'eps', 'small_quantile'.
    causal: whether the model attends causally (`approximation_errors`).
    log: receives one progress line per configuration.

  Returns:
    Records as `error_sweep`'s with 'source' 'trained' and, per metric,
    '<metric>_per_head': the mean over samples of each [layer][head].
  """

  def errors(
    q_LD, k_LD, v_LD, key, a_scale, *, num_features, projection, kernel
  ):
    w_MD = features.draw_projection(
      key, num_features, q_LD.shape[-1], projection
    )
    return approximation_errors(
      q_LD,
      k_LD,
      v_LD,
      w_MD,
      kernel,
      settings['eps'],
      settings['small_quantile'],
      causal,
      a_scale,
    )

  fn = jax.jit(errors, static_argnames=('num_features', 'projection', 'kernel'))
  heads = [
    (q[real][:, h], k[real][:, h], v[real][:, h])
    for q, k, v, real in layers
    for h in range(q.shape[1])
  ]
  base = jax.random.key(settings['seed'])
  keys = [jax.random.fold_in(base, i) for i in range(settings['samples'])]
  records = []
  for config in _configurations(settings):
    kernel, a_scale, projection, m = config
    start = time.perf_counter()
    # [samples][heads] of per-metric scalars.
    grid = jax.device_get(
      [
        [
          fn(
            q,
            k,
            v,
            key,
            a_scale or 1.0,
            num_features=m,
            projection=projection,
            kernel=kernel,
          )
          for q, k, v in heads
        ]
        for key in keys
      ]
    )
    per_sample = [
      {
        metric: statistics.fmean(float(h[metric]) for h in row)
        for metric in METRICS
      }
      for row in grid
    ]
    record = _record({'source': 'trained'}, config, per_sample)
    num_heads = layers[0][0].shape[1]
    for metric in METRICS:
      means = [
        statistics.fmean(float(row[i][metric]) for row in grid)
        for i in range(len(heads))
      ]
      record[f'{metric}_per_head'] = [
        means[i : i + num_heads] for i in range(0, len(means), num_heads)
      ]
    record['seconds'] = time.perf_counter() - start
    records.append(record)
    log(_progress(record))
  return records


def _configurations(settings):
  """(kernel, a_scale, projection, M); a_scale None for other kernels."""
  for kernel in settings['kernels']:
    scales = settings['a_scales'] if kernel in features.DATA_KERNELS else [None]
    for a_scale in scales:
      for projection in settings['projections']:
        for m in settings['num_features']:
          yield kernel, a_scale, projection, m


def label(kernel: str, a_scale: float | None) -> str:
  """'favorpp' for A = A*, 'favorpp@0.5' for A = 0.5 A*; others as named."""
  if a_scale is None or a_scale == 1.0:
    return kernel
  return f'{kernel}@{a_scale:g}'


def _record(fields, config, per_sample):
  """One record from a configuration and its per-sample {metric: value}."""
  kernel, a_scale, projection, m = config
  record = {**fields, 'kernel': kernel, 'a_scale': a_scale}
  record['label'] = label(kernel, a_scale)
  record['projection'] = projection
  record['num_features'] = m
  for metric in METRICS:
    values = [float(errors[metric]) for errors in per_sample]
    record.update(summarize_samples(metric, values))
  return record


def _progress(record):
  where = record.get('qk_std', record['source'])
  return (
    f'{where} {record["label"]} {record["projection"]} '
    f'M={record["num_features"]}: kernel_mse {record["kernel_mse_mean"]:.3e}, '
    f'output_mse {record["output_mse_mean"]:.3e} '
    f'({record["seconds"]:.1f} s)'
  )


def summarize_samples(metric: str, values: list[float]) -> dict[str, Any]:
  """<metric>_mean, _std (population), _ci95, _median, _nonfinite, _samples.

  _ci95 is the half-width of the 95% confidence interval of the mean
  (Student's t on the sample standard deviation; None with one sample). A
  trigonometric estimate can put a row sum at (or near) zero; such a sample
  is kept and counted (its value recorded as None), but mean and spread use
  the finite ones.
  """
  finite = [v for v in values if math.isfinite(v)]
  return {
    f'{metric}_mean': statistics.fmean(finite) if finite else None,
    f'{metric}_std': statistics.pstdev(finite) if finite else None,
    f'{metric}_ci95': _ci95(finite),
    f'{metric}_median': statistics.median(finite) if finite else None,
    f'{metric}_nonfinite': len(values) - len(finite),
    f'{metric}_samples': [v if math.isfinite(v) else None for v in values],
  }


# Two-sided 95% quantiles of Student's t by degrees of freedom (standard
# tables); from 30 on the normal's 1.96 is within 4%.
_T975 = {
  1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365,
  8: 2.306, 9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145,
  15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
  21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056,
  27: 2.052, 28: 2.048, 29: 2.045,
}  # fmt: skip


def _ci95(values: list[float]) -> float | None:
  """Half-width of the t interval of the mean of `values`."""
  n = len(values)
  if n < 2:
    return None
  return _T975.get(n - 1, 1.96) * statistics.stdev(values) / math.sqrt(n)


def paired_ratio(
  numerator: list[float | None], denominator: list[float | None]
) -> dict[str, Any] | None:
  """Geometric mean of per-sample ratios with its 95% interval.

  For errors of two configurations on the same samples (same inputs, same
  projection seed): the interval is Student's t on the logs of the ratios,
  so a ratio whose interval excludes 1 is resolved by these samples.

  Returns:
    {'ratio', 'low', 'high', 'samples'}, or None without two finite pairs.
  """
  logs = [
    math.log(a / b)
    for a, b in zip(numerator, denominator, strict=True)
    if a is not None and b is not None and a > 0 and b > 0
  ]
  half = _ci95(logs)
  if half is None:
    return None
  mean = statistics.fmean(logs)
  return {
    'ratio': math.exp(mean),
    'low': math.exp(mean - half),
    'high': math.exp(mean + half),
    'samples': len(logs),
  }


def closed_form_variances(
  q_LD: Any, k_SD: Any, a_scales: list[float]
) -> dict[str, Any]:
  """Exact variances of one positive feature's estimate, over all pairs.

  For w ~ N(0, I), E[exp(c |w|^2 + b . w)] = (1 - 2c)^(-D/2)
  exp(|b|^2 / (2 (1 - 2c))) gives the second moment of one FAVOR++ feature
  product at A,
    (1 - 4A)^D (1 - 8A)^(-D/2) exp(2 (1 - 4A) |x + y|^2 / (1 - 8A)
                                   - |x|^2 - |y|^2),
  x = q D^-1/4, y = k D^-1/4; minus exp(2 x . y), the variance (A = 0 is
  FAVOR+). The mean over pairs is what Monte-Carlo samples of M features
  estimate only slowly: it is dominated by rare, huge feature products.

  Args:
    q_LD: queries (numpy or jax), float64 is used.
    k_SD: keys.
    a_scales: multiples of A* (`features.optimal_a` of these q and k).

  Returns:
    {'a_star', 'favor_plus': {'mean', 'median'}, 'favorpp': [{'a_scale',
    'a', 'mean', 'median'}, ...]} of the per-pair variance of one feature.
  """
  x = np.asarray(q_LD, np.float64) * q_LD.shape[-1] ** -0.25
  y = np.asarray(k_SD, np.float64) * k_SD.shape[-1] ** -0.25
  d = x.shape[-1]
  s_LS = np.sum((x[:, None] + y[None]) ** 2, -1)
  norms_LS = np.sum(x**2, -1)[:, None] + np.sum(y**2, -1)[None]
  kernel2_LS = np.exp(2 * x @ y.T)
  rho = float(np.mean(s_LS) / d)
  a_star = float(features.optimal_a(rho))

  def variance(a):
    log_m2 = (
      d * math.log(1 - 4 * a)
      - d / 2 * math.log(1 - 8 * a)
      + 2 * (1 - 4 * a) / (1 - 8 * a) * s_LS
      - norms_LS
    )
    v = np.exp(log_m2) - kernel2_LS
    return {'mean': float(np.mean(v)), 'median': float(np.median(v))}

  return {
    'a_star': a_star,
    'favor_plus': variance(0.0),
    'favorpp': [
      {'a_scale': c, 'a': c * a_star, **variance(c * a_star)} for c in a_scales
    ],
  }


def head_statistics(
  layers: list[tuple[Any, Any, Any, Any]], *, causal: bool
) -> list[dict[str, Any]]:
  """Per layer and head of a trained model: what the kernels see.

  The entry standard deviations of q and k, the largest logit
  q . k / sqrt(D) over the pairs the model forms (j <= i when causal), rho
  and A* (`features.optimal_a`), and the range of FAVOR#'s Psi (1
  everywhere would make FAVOR# FAVOR++).
  """
  out = []
  for layer, (q, k, _, real) in enumerate(layers):
    for head in range(q.shape[1]):
      q_LD, k_LD = q[real][:, head], k[real][:, head]
      stats = features.pair_statistics(q_LD, k_LD)
      rho = features.pair_rho(stats)
      psi = np.asarray(features.sharp_scales(stats))
      logits = q_LD @ k_LD.T / math.sqrt(q_LD.shape[-1])
      if causal:
        logits = np.where(np.tri(len(q_LD), dtype=bool), logits, -np.inf)
      out.append(
        {
          'layer': layer,
          'head': head,
          'q_std': float(np.std(q_LD)),
          'k_std': float(np.std(k_LD)),
          'max_logit': float(np.max(logits)),
          'rho': float(rho),
          'a_star': float(features.optimal_a(rho)),
          'psi_min': float(psi.min()),
          'psi_max': float(psi.max()),
        }
      )
  return out
