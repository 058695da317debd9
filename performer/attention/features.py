"""Random projections and kernel feature maps for FAVOR+ (Performers).

Plain JAX functions, no module state. A feature map phi sends each query or
key vector x in R^D to phi(x) in R^F so that phi(q) . phi(k) approximates a
kernel K(q, k); attention with phi costs O(L F D) instead of O(L^2 D).

Projections (rows w_m of an [M, D] matrix):
  * 'iid': w_m ~ N(0, I_D) independently; rows keep their Gaussian norms.
  * 'orthogonal': rows orthogonal inside each block of D rows (Q of the QR
    decomposition of a Gaussian D x D matrix, sign-corrected so that Q is
    Haar distributed), blocks stacked up to M rows, the last block
    truncated. Rows are then rescaled ('chi': to the norms of independent
    D-dim Gaussian vectors, so each row is marginally N(0, I_D); 'sqrt_d':
    every row to norm sqrt(D)). Orthogonal rows lower the estimator's
    variance (Performer paper, Theorem 2).

Kernels (inputs are first scaled by D^-1/4, so that q' . k' = q . k / sqrt(D)
is the softmax logit):
  * 'softmax': positive random features (FAVOR+),
      phi(x) = exp(w_m . x' - |x'|^2 / 2) / sqrt(M), m = 1..M.
    Unbiased for exp(q . k / sqrt(D)) and always positive, so its variance
    vanishes where the kernel value is small.
  * 'softmax_trig': trigonometric features (the original Random Fourier
    construction), F = 2M,
      phi(x) = [sin(w . x'), cos(w . x')] exp(|x'|^2 / 2) / sqrt(M).
    Unbiased too, but can be negative, and its variance stays large where
    the kernel value is small.
  * 'favorpp': FAVOR++, the optimal positive random features of
    Likhosherstov et al. ("Chefs' Random Tables", NeurIPS 2022),
      phi(x) = (1 - 4A)^(D/4) exp(A |w|^2 + sqrt(1 - 4A) w . x' - |x'|^2/2)
               / sqrt(M),
    unbiased for exp(q' . k') for any fixed A < 1/4 when q and k use the
    same A and w ~ N(0, I) (its variance is finite for A < 1/8); A = 0 is
    FAVOR+. `optimal_a` gives the A that minimizes the mean over all
    query-key pairs of the log second moment of the estimate, from O(L D)
    statistics (`PairStatistics`).
  * 'favorsharp': FAVOR# in its practical SADERF form (Likhosherstov et
    al., arXiv 2302.00787): FAVOR++ on Psi q' and Psi^-1 k' with a diagonal
    Psi (`sharp_scales`), which leaves q' . k' unchanged and makes the
    rescaled queries and keys as small as possible in the variance's sense.
    `feature_parts` takes the rescaling as `rescale_XD` (Psi for queries,
    1 / Psi for keys).
    Both are unbiased with 'iid' projections and with 'orthogonal' ones
    with row_norm='chi' (each row marginally N(0, I)); 'sqrt_d' rows are
    not Gaussian, which biases them as it biases FAVOR+.
  * generalized kernels K(q, k) = sum_m f(w_m . q') f(w_m . k') with
    features f(w . x') + eps, or f(x') + eps without a projection (the
    deterministic form, F = D). `GENERALIZED_KERNELS` lists f. 'exp' is
    strictly positive and is stabilized in the log domain instead of
    getting eps.

Every kernel can be written as phi(x) = base(x) * exp(log_scale(x)) with
`base` bounded (entries at most about 1 in size) and `log_scale` a scalar per
vector. `feature_parts` returns that split, which is what the attention
module uses: the log scales of keys are combined with a running maximum so
nothing overflows for large inputs, and a query's log scale cancels in the
normalized attention and is dropped.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

PROJECTIONS = ('orthogonal', 'iid')
ROW_NORMS = ('chi', 'sqrt_d')
# Kernels estimating exp(q' . k') with random projections. The last two
# need data statistics (`PairStatistics`) as well.
DATA_KERNELS = ('favorpp', 'favorsharp')
SOFTMAX_KERNELS = ('softmax', 'softmax_trig') + DATA_KERNELS


def _elu_plus_one(x: jax.Array) -> jax.Array:
  return jax.nn.elu(x) + 1.0


# f for the generalized kernels. All are non-negative, so with eps > 0 the
# attention normalizer is positive. 'exp' is handled in the log domain.
GENERALIZED_KERNELS: dict[str, Callable[[jax.Array], jax.Array]] = {
  'relu': jax.nn.relu,  # Performer's ReLU kernel (paper, Sec. 4).
  'elu': _elu_plus_one,  # elu(x) + 1, Katharopoulos et al. (2020).
  'exp': jnp.exp,
  'softplus': jax.nn.softplus,
  'sigmoid': jax.nn.sigmoid,
  'abs': jnp.abs,
  'square': jnp.square,
}
KERNELS = SOFTMAX_KERNELS + tuple(GENERALIZED_KERNELS)


class PairStatistics(NamedTuple):
  """Per-dimension moments of the scaled queries and keys, [..., D] each.

  Of x' = x D^-1/4 (what the kernel sees): mean_q = mean_i q'_i, sq_q =
  mean_i q'_i ** 2 (elementwise), and the same for keys. They determine the
  mean over all query-key pairs of |q'_i + k'_j|^2, so FAVOR++'s A and
  FAVOR#'s rescaling cost O(L D) per (batch, head).
  """

  mean_q: jax.Array
  sq_q: jax.Array
  mean_k: jax.Array
  sq_k: jax.Array


def moments(
  x_XD: jax.Array, weight_X1: jax.Array, axes: tuple[int, ...]
) -> tuple[jax.Array, jax.Array]:
  """Weighted mean and mean square of x' = x D^-1/4 over `axes`.

  Args:
    x_XD: inputs [..., D].
    weight_X1: broadcastable to x, 1 for a position that counts and 0 for
      one that does not (padding); reduced over the same axes.
    axes: the axes reduced (positions, and batch for running statistics).

  Returns:
    (mean, mean square) with `axes` removed; zeros where nothing counts.
  """
  x_XD = x_XD * x_XD.shape[-1] ** -0.25
  weight_X1 = jnp.broadcast_to(weight_X1, x_XD.shape[:-1] + (1,))
  count = jnp.maximum(jnp.sum(weight_X1, axis=axes), 1.0)
  # where, not multiply: a padded position's value may be inf or NaN.
  x_XD = jnp.where(weight_X1 > 0, x_XD, 0.0)
  mean = jnp.sum(weight_X1 * x_XD, axis=axes) / count
  sq = jnp.sum(weight_X1 * jnp.square(x_XD), axis=axes) / count
  return mean, sq


def pair_statistics(q_ND: jax.Array, k_MD: jax.Array) -> PairStatistics:
  """`PairStatistics` [D] of every row of q [N, D] and k [M, D] (no mask)."""
  q_ND, k_MD = jnp.asarray(q_ND), jnp.asarray(k_MD)
  return PairStatistics(
    *moments(q_ND, jnp.ones((q_ND.shape[0], 1)), (0,)),
    *moments(k_MD, jnp.ones((k_MD.shape[0], 1)), (0,)),
  )


def pair_rho(stats: PairStatistics) -> jax.Array:
  """rho = mean over pairs (i, j) of |q'_i + k'_j|^2 / D, [...]."""
  d = stats.mean_q.shape[-1]
  total = jnp.sum(stats.sq_q + stats.sq_k + 2 * stats.mean_q * stats.mean_k, -1)
  return total / d


def optimal_a(rho: jax.Array) -> jax.Array:
  """FAVOR++'s A* = (1 - 2 rho - sqrt((2 rho + 1)^2 + 8 rho)) / 16.

  The minimizer over A < 1/8 of the mean over pairs of the log second moment
  of one feature's estimate, D log(1 - 4A) - (D/2) log(1 - 8A)
  + 2 (1 - 4A) / (1 - 8A) |q' + k'|^2 (its derivative is a quadratic in A
  whose smaller root this is). A* <= 0, and A* = 0 (FAVOR+) at rho = 0.
  """
  rho = jnp.maximum(rho, 0.0)
  return (
    1.0 - 2.0 * rho - jnp.sqrt(jnp.square(2.0 * rho + 1.0) + 8.0 * rho)
  ) / 16.0


def sharp_scales(stats: PairStatistics) -> jax.Array:
  """FAVOR#'s diagonal Psi, Psi_l = (mean_j k'_jl^2 / mean_i q'_il^2)^(1/4).

  The minimizer over positive diagonal Psi of the mean over pairs of
  |Psi q'_i + Psi^-1 k'_j|^2 (each dimension's term is
  Psi_l^2 sq_q_l + Psi_l^-2 sq_k_l + 2 mean_q_l mean_k_l). A dimension
  without signal on one side keeps Psi_l = 1.
  """
  ok = (stats.sq_q > 0) & (stats.sq_k > 0)
  ratio = jnp.where(ok, stats.sq_k, 1.0) / jnp.where(ok, stats.sq_q, 1.0)
  return jnp.sqrt(jnp.sqrt(ratio))


def data_parameters(
  kernel: str, stats: PairStatistics, a_scale: float = 1.0
) -> tuple[jax.Array, jax.Array | None]:
  """(A [...], Psi [..., D] or None) of a data kernel for these statistics.

  A = a_scale * A* (`optimal_a`): 1 is the paper's choice, 0 FAVOR+; the
  estimate stays unbiased for any of them. FAVOR# computes A from the
  statistics of the rescaled Psi q' and Psi^-1 k'.
  """
  if kernel not in DATA_KERNELS:
    raise ValueError(f'unknown data kernel {kernel!r}; valid: {DATA_KERNELS}')
  psi = None
  if kernel == 'favorsharp':
    psi = sharp_scales(stats)
    stats = PairStatistics(
      stats.mean_q * psi,
      stats.sq_q * psi**2,
      stats.mean_k / psi,
      stats.sq_k / psi**2,
    )
  return a_scale * optimal_a(pair_rho(stats)), psi


def gaussian_projection(key: jax.Array, num_features: int, dim: int):
  """Draws an [M, D] matrix of iid N(0, 1) entries.

  Args:
    key: a JAX random key.
    num_features: M, the number of rows.
    dim: D, the input dimension.

  Returns:
    float32 [M, D].
  """
  return jax.random.normal(key, (num_features, dim), jnp.float32)


def orthogonal_projection(
  key: jax.Array, num_features: int, dim: int, row_norm: str = 'chi'
) -> jax.Array:
  """Draws an [M, D] block-orthogonal random matrix.

  Args:
    key: a JAX random key.
    num_features: M, the number of rows.
    dim: D, the input dimension.
    row_norm: 'chi' (row norms of independent D-dim Gaussian vectors) or
      'sqrt_d' (every row has norm sqrt(D)).

  Returns:
    float32 [M, D]; rows in the same block of D rows are orthogonal.
  """
  if row_norm not in ROW_NORMS:
    raise ValueError(f'unknown row_norm {row_norm!r}; valid: {ROW_NORMS}')
  num_blocks = -(-num_features // dim)
  block_key, norm_key = jax.random.split(key)
  g_NDD = jax.random.normal(block_key, (num_blocks, dim, dim), jnp.float32)
  q_NDD, r_NDD = jnp.linalg.qr(g_NDD)
  # Multiplying column i by sign(R_ii) makes Q Haar distributed; plain QR
  # output is biased by the decomposition's sign convention.
  diag_ND = jnp.diagonal(r_NDD, axis1=-2, axis2=-1)
  q_NDD = q_NDD * jnp.where(diag_ND < 0, -1.0, 1.0)[:, None, :]
  # Columns of each Q are orthonormal; use them as rows.
  rows_MD = jnp.swapaxes(q_NDD, -1, -2).reshape(num_blocks * dim, dim)
  rows_MD = rows_MD[:num_features]
  if row_norm == 'sqrt_d':
    norms_M = jnp.full((num_features,), math.sqrt(dim), jnp.float32)
  else:
    gauss_MD = jax.random.normal(norm_key, (num_features, dim), jnp.float32)
    norms_M = jnp.linalg.norm(gauss_MD, axis=-1)
  return rows_MD * norms_M[:, None]


def draw_projection(
  key: jax.Array,
  num_features: int,
  dim: int,
  projection: str = 'orthogonal',
  row_norm: str = 'chi',
) -> jax.Array:
  """Draws a projection matrix of the named kind.

  Args:
    key: a JAX random key.
    num_features: M, the number of rows.
    dim: D, the input dimension.
    projection: 'orthogonal' or 'iid'.
    row_norm: for 'orthogonal', 'chi' or 'sqrt_d'; iid rows keep their
      natural Gaussian norms.

  Returns:
    float32 [M, D].
  """
  if projection == 'orthogonal':
    return orthogonal_projection(key, num_features, dim, row_norm)
  if projection == 'iid':
    return gaussian_projection(key, num_features, dim)
  raise ValueError(
    f'unknown projection {projection!r}; valid: {list(PROJECTIONS)}'
  )


def num_outputs(kernel: str, num_features: int, dim: int, projected: bool):
  """F, the feature dimension of `kernel` with M rows (or none) on R^D."""
  if not projected:
    return dim
  return 2 * num_features if kernel == 'softmax_trig' else num_features


def feature_parts(
  x_XD: jax.Array,
  w_MD: jax.Array | None,
  kernel: str = 'softmax',
  eps: float = 1e-3,
  *,
  a_X: jax.Array | None = None,
  rescale_XD: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Features split as phi(x) = base(x) * exp(log_scale(x)), overflow-free.

  Args:
    x_XD: inputs [..., D] (any leading dimensions X), float32.
    w_MD: projection [M, D]; None for the deterministic generalized form.
    kernel: one of `KERNELS`.
    eps: added to generalized features f(.) (not to 'exp', which is
      positive; not to the softmax kernels).
    a_X: 'favorpp' and 'favorsharp' only: A, broadcastable to x's leading
      dimensions; queries and keys must use the same A.
    rescale_XD: 'favorsharp' only: the per-dimension factor applied to
      x' = x D^-1/4, broadcastable to x (Psi for queries, 1 / Psi for keys;
      see `sharp_scales`).

  Returns:
    base_XF: [..., F], entries bounded by about 1 in magnitude for the
      softmax and 'exp' kernels.
    logscale_X: [...], the per-vector log scale (zeros for generalized
      kernels other than 'exp').
  """
  x_XD = jnp.asarray(x_XD)
  d = x_XD.shape[-1]
  x_XD = x_XD * d**-0.25
  if kernel in DATA_KERNELS:
    if a_X is None or (kernel == 'favorsharp') != (rescale_XD is not None):
      raise ValueError(
        f'kernel {kernel!r} needs a_X'
        + (' and rescale_XD' if kernel == 'favorsharp' else ' and no rescale')
        + ' (see PairStatistics)'
      )
    if rescale_XD is not None:
      x_XD = x_XD * rescale_XD
  if w_MD is None:
    if kernel in SOFTMAX_KERNELS:
      raise ValueError(f'kernel {kernel!r} needs a random projection')
    proj_XF = x_XD
  else:
    proj_XF = jnp.einsum('...d,md->...m', x_XD, w_MD)
  zeros_X = jnp.zeros(x_XD.shape[:-1], x_XD.dtype)

  if kernel == 'softmax_trig':
    m = w_MD.shape[0]
    base_XF = jnp.concatenate([jnp.sin(proj_XF), jnp.cos(proj_XF)], axis=-1)
    logscale_X = 0.5 * jnp.sum(jnp.square(x_XD), axis=-1)
    return base_XF / math.sqrt(m), logscale_X

  if kernel in DATA_KERNELS:
    a_X1 = jnp.asarray(a_X, x_XD.dtype)[..., None]
    # A |w_m|^2 + B w_m . x' with B = sqrt(1 - 4A); then as for 'softmax',
    # with (D/4) log(1 - 4A) (the constant D) in the log scale.
    expo_XF = (
      a_X1 * jnp.sum(jnp.square(w_MD), axis=-1)
      + jnp.sqrt(1.0 - 4.0 * a_X1) * proj_XF
    )
    max_X1 = jax.lax.stop_gradient(jnp.max(expo_XF, axis=-1, keepdims=True))
    base_XF = jnp.exp(expo_XF - max_X1) / math.sqrt(expo_XF.shape[-1])
    logscale_X = (
      max_X1[..., 0]
      - 0.5 * jnp.sum(jnp.square(x_XD), axis=-1)
      + 0.25 * d * jnp.log1p(-4.0 * a_X1[..., 0])
    )
    return base_XF, logscale_X

  if kernel in ('softmax', 'exp'):
    # Factor out each vector's largest exponent: the split is exact, and the
    # stop_gradient only removes two canceling gradient paths.
    max_X1 = jax.lax.stop_gradient(jnp.max(proj_XF, axis=-1, keepdims=True))
    base_XF = jnp.exp(proj_XF - max_X1)
    logscale_X = max_X1[..., 0]
    if kernel == 'softmax':
      base_XF = base_XF / math.sqrt(proj_XF.shape[-1])
      logscale_X = logscale_X - 0.5 * jnp.sum(jnp.square(x_XD), axis=-1)
    return base_XF, logscale_X

  if kernel in GENERALIZED_KERNELS:
    return GENERALIZED_KERNELS[kernel](proj_XF) + eps, zeros_X
  raise ValueError(f'unknown kernel {kernel!r}; valid: {list(KERNELS)}')


def feature_map(
  x_XD: jax.Array,
  w_MD: jax.Array | None,
  kernel: str = 'softmax',
  eps: float = 1e-3,
  *,
  a_X: jax.Array | None = None,
  rescale_XD: jax.Array | None = None,
) -> jax.Array:
  """The features phi(x) [..., F] themselves, without any stabilizer.

  Overflows for large inputs with the softmax and 'exp' kernels; meant for
  analysis and tests. Attention uses `feature_parts`.

  Args:
    x_XD: inputs [..., D].
    w_MD: projection [M, D], or None (deterministic generalized form).
    kernel: one of `KERNELS`.
    eps: see `feature_parts`.
    a_X: see `feature_parts`.
    rescale_XD: see `feature_parts`.

  Returns:
    [..., F] features with phi(q) . phi(k) ~= K(q, k).
  """
  base_XF, logscale_X = feature_parts(
    x_XD, w_MD, kernel, eps, a_X=a_X, rescale_XD=rescale_XD
  )
  return base_XF * jnp.exp(logscale_X)[..., None]


def pair_feature_maps(
  q_XD: jax.Array,
  k_YD: jax.Array,
  w_MD: jax.Array | None,
  kernel: str = 'softmax',
  eps: float = 1e-3,
  stats: PairStatistics | None = None,
  a_scale: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
  """phi(q) [..., F] and phi(k) [..., F] of one kernel, for analysis.

  The data kernels take A (and Psi) from `stats`, by default the moments of
  every row of these q and k; other kernels ignore it. Unstabilized like
  `feature_map`.

  Args:
    q_XD: queries [..., D].
    k_YD: keys [..., D].
    w_MD: projection [M, D], or None (deterministic generalized form).
    kernel: one of `KERNELS`.
    eps: see `feature_parts`.
    stats: optional `PairStatistics` (shapes [D]) for the data kernels.
    a_scale: the data kernels' A as a multiple of A* (`data_parameters`).
  """
  if kernel not in DATA_KERNELS:
    return feature_map(q_XD, w_MD, kernel, eps), feature_map(
      k_YD, w_MD, kernel, eps
    )
  if stats is None:
    stats = pair_statistics(
      jnp.reshape(q_XD, (-1, q_XD.shape[-1])),
      jnp.reshape(k_YD, (-1, k_YD.shape[-1])),
    )
  a, psi = data_parameters(kernel, stats, a_scale)
  phi_q = feature_map(q_XD, w_MD, kernel, eps, a_X=a, rescale_XD=psi)
  phi_k = feature_map(
    k_YD, w_MD, kernel, eps, a_X=a, rescale_XD=None if psi is None else 1 / psi
  )
  return phi_q, phi_k
