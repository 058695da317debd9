"""FAVOR+ attention (Performers, Choromanski et al., ICLR 2021).

Softmax attention softmax(Q K^T / sqrt(D)) V is approximated with random
features phi (see `features`): out_i = sum_j a_ij v_j / sum_j a_ij with
a_ij = phi(q_i) . phi(k_j), computed as phi(Q) (phi(K)^T V) in O(L M D) time
without ever forming the L x S matrix.

Bidirectional: one [M, D] sum over all keys. Causal: chunk-wise. Inside a
chunk of C positions a masked C x C product; across chunks a running [M, D]
state and [M] normalizer carried by `lax.scan` over the L / C chunks.

Stabilizer. Positive and trigonometric features contain exp(.) factors that
overflow float32 for large inputs, so each key's features are split as
phi(k_j) = base_j * exp(s_j) with base_j bounded (features.feature_parts).
Query i uses keys relative to r_i = max_{j <= i, j real} s_j, the running
prefix maximum: the weight of key j is exp(s_j - r_i) <= 1, and the carried
state is rescaled by exp(r_prev - r_i) when the maximum grows (as in online
softmax). r_i depends on no position after i, so causality is exact: output
i is bit-for-bit unchanged when later inputs change. Bidirectional attention
uses one maximum over the real keys. A query's own scale cancels between
numerator and denominator and is dropped. Padded keys get base 0 and
s = -inf: they enter neither sums nor maxima.

FAVOR++ and FAVOR# (kernel='favorpp' / 'favorsharp') take the parameters
of their features from moments of q and k: of the input itself when
bidirectional, running ones learned in training when causal (see
`FavorAttention.__init__`).

Derivatives at large input norms. The stabilizer keeps every feature and
sum finite, but den can still come close to float32's smallest normal
number, and reverse mode would then overflow in cotangent / den: the
derivative uses a floored den there (`_tangent_den`), exact elsewhere.

Decoding (see `decoding`): causal FAVOR+ is a recurrent network. The cache
is the carried state of the chunk-wise pass, {'state': [B, H, M, D],
'norm': [B, H, M], 'max': [B, H] (the stabilizer's running maximum),
'index'}, so memory and time per token are constant in the position.
`prefill` is the chunk-wise pass itself, returning its final carry; `decode`
folds one key into it and reads the new query's output, as 'favor_scan'
does for every position.

Tensor names end in their shape: B batch, L query length, S key length,
H heads, D head dim, M features (2 * num_features for 'softmax_trig', D for
projection='none'), C chunk size, N chunks.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from performer.attention import common, decoding, features, registry

PROJECTIONS = features.PROJECTIONS + ('none',)


class FeatureProjection(nnx.Variable):
  """The random projection [M, D] that q and k share.

  Not an `nnx.Param`: optimizers built with `wrt=nnx.Param` leave it alone,
  while `nnx.state(model)` (and so every checkpoint) still holds it.
  """


class FeatureSeed(nnx.Variable):
  """Raw key data of the per-module seed the projection is drawn from."""


class FeatureStatistics(nnx.BatchStat):
  """Running moments of the queries and keys (causal FAVOR++ / FAVOR#).

  An `nnx.BatchStat`, like batch normalization's: not trained, updated by
  `update_statistics` in training steps, part of every checkpoint.
  """


class Features(NamedTuple):
  """What the feature maps of one call need.

  w: the projection [M, D] (None: deterministic generalized features).
  a: FAVOR++ / FAVOR#'s A, [B, H] (None for the other kernels).
  psi: FAVOR#'s per-dimension Psi, [B, H, D] (None otherwise).
  """

  w: jax.Array | None
  a: jax.Array | None = None
  psi: jax.Array | None = None

  def at(self, axis: int | None) -> 'Features':
    """A and Psi with a positions axis inserted at `axis` (None: none)."""
    if axis is None or self.a is None:
      return self
    psi = None if self.psi is None else jnp.expand_dims(self.psi, axis)
    return Features(self.w, jnp.expand_dims(self.a, axis), psi)


@jax.custom_jvp
def _normalize(num_XD: jax.Array, den_X: jax.Array) -> jax.Array:
  """num / den; zeros where den == 0 (a query that sees no real key)."""
  return num_XD / jnp.where(den_X == 0, 1.0, den_X)[..., None]


def _tangent_den(den_X: jax.Array) -> jax.Array:
  """den for the derivative: 1 where den == 0, else |den| >= a floor.

  The features are relative to the stabilizer's maxima, not to each query's
  own largest term, so at large input norms den can come within a few
  orders of float32's smallest normal number (measured: 4e-38 for q, k
  entries of std 10, D = 64, L = 256). The value num / den is still right
  there, but reverse mode forms cotangent / den before multiplying it by
  the equally tiny terms of num and den, and that overflows to inf (then
  NaN). The floor, 2^26 above the smallest normal number of the dtype,
  leaves that much room below the largest one. Where den is above it (every
  query at ordinary norms) the derivative is exact; below it, it is the
  exact derivative times den / floor, shrunk but finite.
  """
  floor = jnp.finfo(den_X.dtype).tiny * 2.0**26
  floored_X = jnp.where(den_X < 0, -floor, floor)
  floored_X = jnp.where(jnp.abs(den_X) < floor, floored_X, den_X)
  return jnp.where(den_X == 0, 1.0, floored_X)


@_normalize.defjvp
def _normalize_jvp(primals, tangents):
  # For large inputs den can be ~1e-36: the default derivative -num / den^2
  # would underflow den^2 to 0 and give inf (then NaN). -out / den is the
  # same value and stays finite; see `_tangent_den` for tiny den.
  num_XD, den_X = primals
  dnum_XD, dden_X = tangents
  out_XD = _normalize(num_XD, den_X)
  safe_X1 = _tangent_den(den_X)[..., None]
  return out_XD, (dnum_XD - out_XD * dden_X[..., None]) / safe_X1


def _safe_max(r_X: jax.Array) -> jax.Array:
  """A running maximum with -inf (no real key yet) replaced by 0."""
  return jnp.where(r_X == -jnp.inf, 0.0, r_X)


def _to_chunks(x_BLHD: jax.Array, chunk_size: int) -> jax.Array:
  """[B, L, H, D] -> [N, B, H, C, D], zero-padded to N * C positions."""
  b, l, h, d = x_BLHD.shape
  c = min(chunk_size, l)  # A longer chunk would only add padding.
  x_BLHD = common.pad_axis(x_BLHD, c, axis=1)
  n = x_BLHD.shape[1] // c
  return x_BLHD.reshape(b, n, c, h, d).transpose(1, 0, 3, 2, 4)


def _from_chunks(x_NBHCD: jax.Array, length: int) -> jax.Array:
  """Inverse of `_to_chunks`, dropping the padding."""
  n, b, h, c, d = x_NBHCD.shape
  return x_NBHCD.transpose(1, 0, 3, 2, 4).reshape(b, n * c, h, d)[:, :length]


def _fold(carry, kbase_BHCM, ks_BHC, v_BHCD, rend_BH):
  """Adds a chunk of keys and values to the carried state.

  Args:
    carry: (state_BHMD, norm_BHM, rprev_BH), sums relative to exp(rprev).
    kbase_BHCM: key feature bases (zero for padded keys).
    ks_BHC: key log scales (-inf for padded keys).
    v_BHCD: values.
    rend_BH: the new running maximum, max(rprev, max ks); stop_gradient'ed.

  Returns:
    The new carry, relative to exp(rend).
  """
  state_BHMD, norm_BHM, rprev_BH = carry
  rend_safe_BH = _safe_max(rend_BH)
  # <= 1; exactly 0 while the state is still empty (rprev = -inf).
  decay_BH = jnp.exp(rprev_BH - rend_safe_BH)
  phik_BHCM = kbase_BHCM * jnp.exp(ks_BHC - rend_safe_BH[..., None])[..., None]
  state_BHMD = decay_BH[..., None, None] * state_BHMD + jnp.einsum(
    'bhcm,bhcd->bhmd', phik_BHCM, v_BHCD
  )
  norm_BHM = decay_BH[..., None] * norm_BHM + jnp.sum(phik_BHCM, axis=2)
  return state_BHMD, norm_BHM, rend_BH


def _token_step(carry, phiq_BHM, kbase_BHM, ks_BH, v_BHD):
  """Folds one position's key into the carry and reads its query's output.

  Args:
    carry: (state_BHMD, norm_BHM, rprev_BH), see `_fold`.
    phiq_BHM: the query's features.
    kbase_BHM: the key's feature base (zero for a padded key).
    ks_BH: the key's log scale (-inf for a padded key).
    v_BHD: the value.

  Returns:
    The new carry and the output [B, H, D].
  """
  r_BH = jax.lax.stop_gradient(jnp.maximum(carry[2], ks_BH))
  # A chunk of one position.
  carry = _fold(
    carry, kbase_BHM[:, :, None], ks_BH[..., None], v_BHD[:, :, None], r_BH
  )
  state_BHMD, norm_BHM, _ = carry
  num_BHD = jnp.einsum('bhm,bhmd->bhd', phiq_BHM, state_BHMD)
  den_BH = jnp.einsum('bhm,bhm->bh', phiq_BHM, norm_BHM)
  return carry, _normalize(num_BHD, den_BH)


@registry.register('favor')
class FavorAttention(nnx.Module):
  """FAVOR+ attention: random-feature softmax attention, linear in length.

  Example:
    attn = attention.create('favor', head_dim=64, causal=True,
                            rngs=nnx.Rngs(0), num_features=256)
    out_BLHD = attn(q_BLHD, k_BLHD, v_BLHD, mask=mask_BL)
    attention.redraw_features(model, step)  # In the train step, if wanted.
  """

  def __init__(
    self,
    *,
    head_dim: int,
    causal: bool,
    rngs: nnx.Rngs,
    num_features: int = 256,
    kernel: str = 'softmax',
    projection: str = 'orthogonal',
    row_norm: str = 'chi',
    kernel_eps: float = 1e-3,
    redraw_interval: int = 0,
    chunk_size: int = 64,
    num_heads: int | None = None,
    stats_momentum: float = 0.99,
    a_scale: float = 1.0,
  ):
    """Builds the module.

    Args:
      head_dim: D, size of each head.
      causal: whether position i only attends to positions <= i.
      rngs: draws the module's seed (`rngs.params()`), from which the
        projection is drawn.
      num_features: M, rows of the random projection (the trigonometric
        kernel has 2M features: a sin and a cos per row). Ignored for
        projection='none', which has D features.
      kernel: 'softmax' (positive features, FAVOR+), 'softmax_trig'
        (trigonometric features), 'favorpp' (FAVOR++: optimal positive
        features), 'favorsharp' (FAVOR#: FAVOR++ after a per-dimension
        rescaling of q and k; see `features` and below) or a generalized
        kernel, one of `features.GENERALIZED_KERNELS` ('relu', 'elu', 'exp',
        ...).
      projection: 'orthogonal' (block-orthogonal rows), 'iid' (Gaussian) or
        'none' (deterministic features f(x) + eps; generalized kernels only).
      row_norm: row norms of orthogonal projections: 'chi' (norms of
        Gaussian vectors) or 'sqrt_d'.
      kernel_eps: added to generalized-kernel features so that the
        normalizer stays positive (not used by 'softmax', 'softmax_trig' and
        'exp', whose features are exponentials).
      redraw_interval: `redraw(step)` draws a new projection every this many
        steps; 0 keeps the projection fixed.
      chunk_size: C, positions per chunk (causal: the C x C blocks;
        bidirectional: how many keys or queries are featurized at once).
        Per position the causal cost is about 2 D M (features) + C M (the
        C x C block) + 2 M D (state); 64 was the fastest of 32 to 256 on CPU
        for D=64, M=256, forward plus backward.
      num_heads: H; only causal 'favorpp' and 'favorsharp' need it (their
        running statistics are per head). The transformer fills it in.
      stats_momentum: causal 'favorpp' / 'favorsharp': the running
        statistics' decay per training step, in [0, 1).
      a_scale: 'favorpp' / 'favorsharp': A = a_scale * A*, in [0, 1]; 1 is
        the papers' A* (`features.optimal_a`), 0 is FAVOR+. Unbiased for
        any value; docs/experiments.md measures which errs least.

    FAVOR++ and FAVOR# ('favorpp', 'favorsharp'): A (and FAVOR#'s Psi) come
    from the first and second moments of q' and k' (`features.PairStatistics`)
    and are held constant in the derivative (stop_gradient): the estimate is
    unbiased for any fixed A and Psi, so the gradient is that of an
    unbiased estimator too. Bidirectional attention takes them from its own
    input, per (batch, head), over the real keys and, when q and k have the
    same length (self-attention), the real queries; padding never enters.
    Causal attention cannot: moments over the whole sequence would let later
    tokens change earlier outputs, and moments of each prefix would give
    each query its own A, which its keys' features (summed once into the
    state) cannot share. So causal attention uses running moments kept per
    head in `FeatureStatistics`, like batch normalization: every output of
    a batch depends on the statistics of earlier batches only, so the
    module is exactly causal, and decoding equals the parallel pass. The
    transformer's blocks call `update_statistics` after the attention in
    training; evaluation and decoding leave them as they are. Before the
    first update A = 0 and Psi = 1: FAVOR+.
    """
    self.head_dim = head_dim
    self.causal = causal
    self.kernel = common.check_choice('kernel', kernel, features.KERNELS)
    self.projection_kind = common.check_choice(
      'projection', projection, PROJECTIONS
    )
    self.row_norm = common.check_choice(
      'row_norm', row_norm, features.ROW_NORMS
    )
    if projection == 'none' and kernel in features.SOFTMAX_KERNELS:
      raise ValueError(
        f"projection 'none' needs a generalized kernel, got kernel "
        f'{kernel!r}; valid: {sorted(features.GENERALIZED_KERNELS)}'
      )
    self.num_features = common.check_positive_int('num_features', num_features)
    self.chunk_size = common.check_positive_int('chunk_size', chunk_size)
    self.redraw_interval = common.check_positive_int(
      'redraw_interval', redraw_interval, minimum=0
    )
    self.kernel_eps = common.check_float(
      'kernel_eps', kernel_eps, '>= 0', lambda x: x >= 0
    )
    self.num_heads = None
    if kernel in features.DATA_KERNELS and causal:
      if num_heads is None:
        raise ValueError(
          f'causal kernel {kernel!r} needs num_heads (a positive int, for its '
          'running statistics per head), got None'
        )
      self.num_heads = common.check_positive_int('num_heads', num_heads)
      # One array each: variables sharing a buffer cannot all be donated.
      for name in features.PairStatistics._fields:
        zeros_HD = jnp.zeros((num_heads, head_dim), jnp.float32)
        setattr(self, f'running_{name}', FeatureStatistics(zeros_HD))
      self.running_count = FeatureStatistics(jnp.zeros((), jnp.float32))
    self.stats_momentum = common.check_float(
      'stats_momentum', stats_momentum, 'in [0, 1)', lambda x: 0 <= x < 1
    )
    self.a_scale = common.check_float(
      'a_scale', a_scale, 'in [0, 1]', lambda x: 0 <= x <= 1
    )

    self.seed = FeatureSeed(jax.random.key_data(rngs.params()))
    self.projection = (
      None if projection == 'none' else FeatureProjection(self._draw(0))
    )

  def _draw(self, index) -> jax.Array:
    key = jax.random.wrap_key_data(self.seed[...])
    return features.draw_projection(
      jax.random.fold_in(key, index),
      self.num_features,
      self.head_dim,
      self.projection_kind,
      self.row_norm,
    )

  def redraw(self, step) -> None:
    """Sets the projection to the draw for `step`.

    The draw depends only on (seed, step // redraw_interval), so every
    device and every restart gets the same features. Does nothing when
    redraw_interval is 0 or the features are deterministic. Jittable.

    Args:
      step: the global training step, a Python or (traced) JAX integer.
    """
    if self.redraw_interval == 0 or self.projection is None:
      return
    self.projection[...] = self._draw(step // self.redraw_interval)

  def __call__(
    self,
    q_BLHD: jax.Array,
    k_BSHD: jax.Array,
    v_BSHD: jax.Array,
    mask: jax.Array | None = None,
  ) -> jax.Array:
    """Attends from q to (k, v).

    Args:
      q_BLHD: queries.
      k_BSHD: keys (S == L when causal).
      v_BSHD: values.
      mask: optional bool [B, S] key-padding mask, True = real token.

    Returns:
      [B, L, H, D] in the dtype of q; a query that sees no real key gives
      zeros.
    """
    out_BLHD, _ = self._attend(q_BLHD, k_BSHD, v_BSHD, mask)
    return out_BLHD

  def _attend(self, q_BLHD, k_BSHD, v_BSHD, mask):
    """The output and, when causal, the final carry of the chunk-wise pass."""
    common.check_inputs(
      q_BLHD, k_BSHD, v_BSHD, mask, self.head_dim, same_length=self.causal
    )
    dtype = q_BLHD.dtype
    compute = common.compute_dtype(dtype)
    q_BLHD, k_BSHD, v_BSHD = (
      x.astype(compute) for x in (q_BLHD, k_BSHD, v_BSHD)
    )
    b, s = k_BSHD.shape[:2]
    mask_BS = common.key_mask_or_ones(mask, b, s)
    feats = self._features(compute, q_BLHD, k_BSHD, mask_BS)
    carry = None
    if self.causal:
      out_BLHD, carry = self._causal(q_BLHD, k_BSHD, v_BSHD, mask_BS, feats)
    else:
      out_BLHD = self._bidirectional(q_BLHD, k_BSHD, v_BSHD, mask_BS, feats)
    return out_BLHD.astype(dtype), carry

  def _features(self, dtype, q_BLHD, k_BSHD, mask_BS=None):
    """The projection and, for FAVOR++ / FAVOR#, A and Psi, in `dtype`.

    Bidirectional: from the moments of this q and k (and mask); causal:
    from the running moments (q and k only give the shapes).
    """
    w_MD = self._projection(dtype)
    if self.kernel not in features.DATA_KERNELS:
      return Features(w_MD)
    if self.causal:
      heads = k_BSHD.shape[2]
      if heads != self.num_heads:
        raise ValueError(
          f'inputs have {heads} heads, but this module keeps running '
          f'statistics for num_heads={self.num_heads}'
        )
      stats = self.running_statistics()
      # [H, ...] -> [B, H, ...]: one set of statistics for every sequence.
      batch = k_BSHD.shape[0]
      stats = jax.tree.map(
        lambda x: jnp.broadcast_to(x, (batch,) + x.shape).astype(dtype), stats
      )
    else:
      # Self-attention (q and k of one length): padded queries stay out too.
      same = q_BLHD.shape[1] == k_BSHD.shape[1]
      qmask_BL = mask_BS if same else jnp.ones(q_BLHD.shape[:2], bool)
      stats = self._batch_moments(q_BLHD, k_BSHD, qmask_BL, mask_BS, axes=1)
    a_BH, psi_BHD = features.data_parameters(
      self.kernel, jax.lax.stop_gradient(stats), self.a_scale
    )
    return Features(w_MD, a_BH, psi_BHD)

  @staticmethod
  def _batch_moments(q_BLHD, k_BSHD, qmask_BL, kmask_BS, axes):
    """`features.PairStatistics` of q and k over `axes` (positions, batch)."""
    mean_q, sq_q = features.moments(
      q_BLHD, qmask_BL[:, :, None, None].astype(q_BLHD.dtype), axes
    )
    mean_k, sq_k = features.moments(
      k_BSHD, kmask_BS[:, :, None, None].astype(k_BSHD.dtype), axes
    )
    return features.PairStatistics(mean_q, sq_q, mean_k, sq_k)

  def running_statistics(self) -> features.PairStatistics:
    """The running moments per head, [H, D] each, bias-corrected.

    Kept as exponential moving averages started at zero, so each is divided
    by 1 - momentum^updates (as Adam does with its moments); all zeros
    before the first update.
    """
    count = self.running_count[...]
    correction = 1.0 - self.stats_momentum**count
    correction = jnp.where(count > 0, correction, 1.0)
    return features.PairStatistics(
      *(
        getattr(self, f'running_{name}')[...] / correction
        for name in features.PairStatistics._fields
      )
    )

  def update_statistics(
    self,
    q_BLHD: jax.Array,
    k_BLHD: jax.Array,
    mask: jax.Array | None = None,
  ) -> None:
    """Folds this batch's moments into the running ones (training only).

    Does nothing unless the module is causal with 'favorpp' or 'favorsharp'.
    Called after the attention, so a batch's outputs use the statistics of
    the batches before it. Jittable; no gradient flows into the statistics.

    Args:
      q_BLHD: the queries the attention was called with.
      k_BLHD: its keys.
      mask: its key-padding mask [B, L] (True = real), if any.
    """
    if self.num_heads is None:
      return
    b, length = k_BLHD.shape[:2]
    mask_BL = common.key_mask_or_ones(mask, b, length)
    q_BLHD, k_BLHD = (
      jax.lax.stop_gradient(x.astype(jnp.float32)) for x in (q_BLHD, k_BLHD)
    )
    batch = self._batch_moments(q_BLHD, k_BLHD, mask_BL, mask_BL, axes=(0, 1))
    m = self.stats_momentum
    for name, value_HD in zip(batch._fields, batch, strict=True):
      running = getattr(self, f'running_{name}')
      running[...] = m * running[...] + (1 - m) * value_HD
    self.running_count[...] = self.running_count[...] + 1.0

  def _projection(self, dtype):
    """The projection [M, D] in `dtype`; None for deterministic features."""
    if self.projection is None:
      return None
    return self.projection[...].astype(dtype)

  def init_cache(
    self, batch: int, heads: int, max_len: int, dtype=jnp.float32
  ) -> decoding.Cache:
    """The empty recurrent state; `max_len` is not needed (see `decoding`).

    The state is kept in at least float32 whatever `dtype` the inputs have.
    """
    decoding.require_causal(self, 'init_cache')
    del max_len
    common.check_positive_int('batch', batch)
    common.check_positive_int('heads', heads)
    state = self._empty_state(
      batch, heads, common.compute_dtype(dtype), self.projection is not None
    )
    return self._to_cache(state, 0)

  @staticmethod
  def _to_cache(carry, index) -> decoding.Cache:
    state_BHMD, norm_BHM, max_BH = carry
    return {
      'state': state_BHMD,
      'norm': norm_BHM,
      'max': max_BH,
      'index': jnp.asarray(index, jnp.int32),
    }

  def prefill(
    self,
    q_BLHD: jax.Array,
    k_BLHD: jax.Array,
    v_BLHD: jax.Array,
    cache: decoding.Cache,
    mask: jax.Array | None = None,
  ) -> tuple[jax.Array, decoding.Cache]:
    """The prompt's outputs and the carry after it (see `decoding`)."""
    decoding.require_causal(self, 'prefill')
    del cache  # The chunk-wise pass starts from the empty state.
    out_BLHD, carry = self._attend(q_BLHD, k_BLHD, v_BLHD, mask)
    return out_BLHD, self._to_cache(carry, q_BLHD.shape[1])

  def decode(
    self,
    q_B1HD: jax.Array,
    k_B1HD: jax.Array,
    v_B1HD: jax.Array,
    cache: decoding.Cache,
  ) -> tuple[jax.Array, decoding.Cache]:
    """One new position's output and the updated state (see `decoding`).

    O(M D) per head whatever the position.
    """
    decoding.require_causal(self, 'decode')
    decoding.check_step(q_B1HD, k_B1HD, v_B1HD, self.head_dim)
    dtype = q_B1HD.dtype
    compute = cache['state'].dtype
    q_BHD, k_BHD, v_BHD = (
      x[:, 0].astype(compute) for x in (q_B1HD, k_B1HD, v_B1HD)
    )
    feats = self._features(compute, q_B1HD, k_B1HD)
    phiq_BHM = self._query_features(q_BHD, feats)
    kbase_BHM, ks_BH = self._key_features(
      k_BHD, jnp.ones(k_BHD.shape[:2], bool), feats
    )
    carry = (cache['state'], cache['norm'], cache['max'])
    carry, out_BHD = _token_step(carry, phiq_BHM, kbase_BHM, ks_BH, v_BHD)
    out_B1HD = out_BHD[:, None].astype(dtype)
    return out_B1HD, self._to_cache(carry, cache['index'] + 1)

  def _query_features(self, q_XD, feats: Features):
    """Query feature bases; `feats` A and Psi broadcast against q."""
    # The query's log scale is a per-query factor that cancels.
    base_XM, _ = features.feature_parts(
      q_XD,
      feats.w,
      self.kernel,
      self.kernel_eps,
      a_X=feats.a,
      rescale_XD=feats.psi,
    )
    return base_XM

  def _key_features(self, k_XD, mask_X, feats: Features):
    """Key features as (base, log scale), padded keys removed."""
    base_XM, logscale_X = features.feature_parts(
      k_XD,
      feats.w,
      self.kernel,
      self.kernel_eps,
      a_X=feats.a,
      rescale_XD=None if feats.psi is None else 1.0 / feats.psi,
    )
    # where, not multiply: a padded key's features may be inf or NaN.
    base_XM = jnp.where(mask_X[..., None], base_XM, 0.0)
    logscale_X = jnp.where(mask_X, logscale_X, -jnp.inf)
    return base_XM, logscale_X

  def _bidirectional(self, q_BLHD, k_BSHD, v_BSHD, mask_BS, feats):
    # Two passes over chunks: fold all keys into one [M, D] state, then read
    # it out per query chunk. Rematerializing each chunk in the backward pass
    # keeps memory at O(L D) plus one state per key chunk, where the
    # unchunked form would keep several L x M feature tensors alive.
    kv_xs = (
      _to_chunks(k_BSHD, self.chunk_size),
      _to_chunks(v_BSHD, self.chunk_size),
      _to_chunks(mask_BS[..., None, None], self.chunk_size)[:, :, 0, :, 0],
    )

    def fold_step(carry, xs):
      k_BHCD, v_BHCD, mask_BC = xs
      kbase_BHCM, ks_BHC = self._key_features(
        k_BHCD, mask_BC[:, None], feats.at(2)
      )
      rend_BH = jax.lax.stop_gradient(
        jnp.maximum(carry[2], jnp.max(ks_BHC, axis=-1))
      )
      return _fold(carry, kbase_BHCM, ks_BHC, v_BHCD, rend_BH), None

    init = self._empty_state_like(k_BSHD, feats.w)
    (state_BHMD, norm_BHM, _), _ = jax.lax.scan(
      jax.checkpoint(fold_step), init, kv_xs
    )

    def read(q_BHCD):
      phiq_BHCM = self._query_features(q_BHCD, feats.at(2))
      num_BHCD = jnp.einsum('bhcm,bhmd->bhcd', phiq_BHCM, state_BHMD)
      den_BHC = jnp.einsum('bhcm,bhm->bhc', phiq_BHCM, norm_BHM)
      return _normalize(num_BHCD, den_BHC)

    q_NBHCD = _to_chunks(q_BLHD, self.chunk_size)
    out_NBHCD = jax.lax.map(jax.checkpoint(read), q_NBHCD)
    return _from_chunks(out_NBHCD, q_BLHD.shape[1])

  def _empty_state(self, b, h, dtype, projected):
    """The carry (state, normalizer, running max) before any key."""
    d = self.head_dim
    m = features.num_outputs(self.kernel, self.num_features, d, projected)
    return (
      jnp.zeros((b, h, m, d), dtype),
      jnp.zeros((b, h, m), dtype),
      jnp.full((b, h), -jnp.inf, dtype),
    )

  def _empty_state_like(self, x_BLHD, w_MD):
    b, _, h, _ = x_BLHD.shape
    return self._empty_state(b, h, x_BLHD.dtype, w_MD is not None)

  def _causal(self, q_BLHD, k_BLHD, v_BLHD, mask_BL, feats):
    # Padding sits after every real position and is masked, so it changes
    # no real output.
    xs = (
      _to_chunks(q_BLHD, self.chunk_size),
      _to_chunks(k_BLHD, self.chunk_size),
      _to_chunks(v_BLHD, self.chunk_size),
      _to_chunks(mask_BL[..., None, None], self.chunk_size)[:, :, 0, :, 0],
    )
    # Rematerializing the chunk in the backward pass keeps only the carried
    # state per chunk alive instead of every chunk's features and C x C
    # weights: O(L (M + D) + L M D / C) memory instead of several L x M.
    step = jax.checkpoint(
      functools.partial(self._chunk_step, feats=feats.at(2))
    )
    init = self._empty_state_like(q_BLHD, feats.w)
    carry, out_NBHCD = jax.lax.scan(step, init, xs)
    return _from_chunks(out_NBHCD, q_BLHD.shape[1]), carry

  def _chunk_step(self, carry, xs, *, feats):
    """One chunk: intra-chunk C x C part plus the carried prefix state."""
    state_BHMD, norm_BHM, rprev_BH = carry
    q_BHCD, k_BHCD, v_BHCD, mask_BC = xs
    c = q_BHCD.shape[2]
    phiq_BHCM = self._query_features(q_BHCD, feats)
    kbase_BHCM, ks_BHC = self._key_features(k_BHCD, mask_BC[:, None], feats)

    # Running maximum of the key log scales up to and including each query.
    r_BHC = jax.lax.stop_gradient(
      jnp.maximum(rprev_BH[..., None], jax.lax.cummax(ks_BHC, axis=2))
    )
    rsafe_BHC = _safe_max(r_BHC)
    # exp(-inf) = 0 while the state is still empty.
    carried_BHC = jnp.exp(rprev_BH[..., None] - rsafe_BHC)

    causal_CC = jnp.tril(jnp.ones((c, c), bool))
    # The mask goes into the exponent so that no inf (key j > i with a
    # larger scale) appears even in the branch `where` discards, whose
    # gradient would then be NaN.
    expo_BHCC = jnp.where(
      causal_CC, ks_BHC[..., None, :] - rsafe_BHC[..., :, None], -jnp.inf
    )
    a_BHCC = jnp.einsum('bhim,bhjm->bhij', phiq_BHCM, kbase_BHCM)
    a_BHCC = jnp.where(causal_CC, a_BHCC * jnp.exp(expo_BHCC), 0.0)

    num_BHCD = jnp.einsum('bhij,bhjd->bhid', a_BHCC, v_BHCD)
    num_BHCD += carried_BHC[..., None] * jnp.einsum(
      'bhim,bhmd->bhid', phiq_BHCM, state_BHMD
    )
    den_BHC = jnp.sum(a_BHCC, axis=-1)
    den_BHC += carried_BHC * jnp.einsum('bhim,bhm->bhi', phiq_BHCM, norm_BHM)

    carry = _fold(carry, kbase_BHCM, ks_BHC, v_BHCD, r_BHC[..., -1])
    return carry, _normalize(num_BHCD, den_BHC)


@registry.register('favor_scan')
class FavorScanAttention(FavorAttention):
  """FAVOR+ with the causal prefix sum as a per-token `lax.scan`.

  The method of the original Performer code, kept as a benchmark baseline
  for the chunked 'favor'; same options, features and stabilizer, so the
  same numbers up to rounding. Its backward pass keeps the [M, D] state of
  every position (O(L M D) memory); the original avoided that with a custom
  VJP that recovers states by subtraction, which the online rescaling here
  would make unstable. Bidirectional attention is the same as 'favor';
  chunk_size is unused.
  """

  def _causal(self, q_BLHD, k_BLHD, v_BLHD, mask_BL, feats):
    phiq_BLHM = self._query_features(q_BLHD, feats.at(1))
    kbase_BLHM, ks_BLH = self._key_features(
      k_BLHD, mask_BL[..., None], feats.at(1)
    )

    def step(carry, xs):
      return _token_step(carry, *xs)

    xs = tuple(
      jnp.moveaxis(x, 1, 0) for x in (phiq_BLHM, kbase_BLHM, ks_BLH, v_BLHD)
    )
    init = self._empty_state_like(q_BLHD, feats.w)
    carry, out_LBHD = jax.lax.scan(step, init, xs)
    return jnp.moveaxis(out_LBHD, 0, 1), carry


@registry.register('favorpp')
class FavorPlusPlusAttention(FavorAttention):
  """FAVOR++: FAVOR+ with optimal positive random features (kernel='favorpp').

  A preset of `FavorAttention` (same code, options, stabilizer, decoding),
  registered under its own name so that configs, compare.py and the
  benchmarks can put it beside 'favor'. See `features` for the features
  and `FavorAttention.__init__` for where A comes from.

  Example:
    attn = attention.create('favorpp', head_dim=64, causal=True,
                            rngs=nnx.Rngs(0), num_heads=8)
    out_BLHD = attn(q_BLHD, k_BLHD, v_BLHD, mask=mask_BL)
  """

  KERNEL = 'favorpp'

  def __init__(
    self,
    *,
    head_dim: int,
    causal: bool,
    rngs: nnx.Rngs,
    num_features: int = 256,
    projection: str = 'orthogonal',
    row_norm: str = 'chi',
    redraw_interval: int = 0,
    chunk_size: int = 64,
    num_heads: int | None = None,
    stats_momentum: float = 0.99,
    a_scale: float = 1.0,
  ):
    """Builds the module; the arguments are `FavorAttention`'s."""
    super().__init__(
      head_dim=head_dim,
      causal=causal,
      rngs=rngs,
      num_features=num_features,
      kernel=self.KERNEL,
      projection=projection,
      row_norm=row_norm,
      redraw_interval=redraw_interval,
      chunk_size=chunk_size,
      num_heads=num_heads,
      stats_momentum=stats_momentum,
      a_scale=a_scale,
    )


@registry.register('favorsharp')
class FavorSharpAttention(FavorPlusPlusAttention):
  """FAVOR#: FAVOR++ on per-dimension rescaled q and k (kernel='favorsharp').

  Example:
    attn = attention.create('favorsharp', head_dim=64, causal=False,
                            rngs=nnx.Rngs(0))
    out_BLHD = attn(q_BLHD, k_BLHD, v_BLHD, mask=mask_BL)
  """

  KERNEL = 'favorsharp'
