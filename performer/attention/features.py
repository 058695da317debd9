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

import jax
import jax.numpy as jnp

PROJECTIONS = ('orthogonal', 'iid')
ROW_NORMS = ('chi', 'sqrt_d')
SOFTMAX_KERNELS = ('softmax', 'softmax_trig')


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
) -> tuple[jax.Array, jax.Array]:
  """Features split as phi(x) = base(x) * exp(log_scale(x)), overflow-free.

  Args:
    x_XD: inputs [..., D] (any leading dimensions X), float32.
    w_MD: projection [M, D]; None for the deterministic generalized form.
    kernel: one of `KERNELS`.
    eps: added to generalized features f(.) (not to 'exp', which is
      positive; not to the softmax kernels).

  Returns:
    base_XF: [..., F], entries bounded by about 1 in magnitude for the
      softmax and 'exp' kernels.
    logscale_X: [...], the per-vector log scale (zeros for generalized
      kernels other than 'exp').
  """
  x_XD = jnp.asarray(x_XD)
  d = x_XD.shape[-1]
  x_XD = x_XD * d**-0.25
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
) -> jax.Array:
  """The features phi(x) [..., F] themselves, without any stabilizer.

  Overflows for large inputs with the softmax and 'exp' kernels; meant for
  analysis and tests. Attention uses `feature_parts`.

  Args:
    x_XD: inputs [..., D].
    w_MD: projection [M, D], or None (deterministic generalized form).
    kernel: one of `KERNELS`.
    eps: see `feature_parts`.

  Returns:
    [..., F] features with phi(q) . phi(k) ~= K(q, k).
  """
  base_XF, logscale_X = feature_parts(x_XD, w_MD, kernel, eps)
  return base_XF * jnp.exp(logscale_X)[..., None]
