"""FLOP counts of the attention variants, for achieved-rate figures.

With B batch, H heads, L length, D head_dim, M the feature dimension
(num_features; twice that for the 'softmax_trig' kernel, a sin and a cos
per random row; head_dim for projection='none'), C chunk_size:

  favor_bidirectional (favor without causal, and favor_scan, whose per-token
    prefix scan does the same products), forward: 2BHLMD for each of the q
    and k feature maps, 2BHLMD for the M x D key-value summary, 2BHLMD for
    the output and 4BHLM for the normalizer: 8BHLMD + 4BHLM.
  favor_chunked (causal favor), forward: the same plus the masked C x C
    products inside each chunk, 2BHLCM + 2BHLCD (C capped at L).
  FAVOR++ and FAVOR# ('favorpp', 'favorsharp') count as FAVOR+: their extra
    work (A |w|^2 per feature, the moments and FAVOR#'s rescaling) is O(BHL
    (M + D)), below the counts' resolution.
  softmax_dense, forward: 4BHL^2D (QK^T and PV; XLA computes the masked
    causal product in full too).
  Forward and backward: 3x the forward (the backward pass costs about twice
    the forward), `FWD_BWD_FACTOR`.
"""

FWD_BWD_FACTOR = 3
# The variants counted by the FAVOR+ formulas.
FAVOR_FAMILY = ('favor', 'favor_scan', 'favorpp', 'favorsharp')


def flops_model(name: str, causal: bool, options: dict) -> str | None:
  """Which formula of the module docstring applies, if any.

  Args:
    name: the registered variant.
    causal: causal or bidirectional.
    options: the variant's options, defaults included.

  Returns:
    'softmax_dense', 'favor_chunked', 'favor_bidirectional', or None for a
    variant without a formula.
  """
  if name == 'softmax':
    return 'softmax_dense'
  if name in FAVOR_FAMILY and options.get('num_features'):
    if name != 'favor_scan' and causal and options.get('chunk_size'):
      return 'favor_chunked'
    return 'favor_bidirectional'
  return None


def favor_flops(
  b: int,
  h: int,
  l: int,
  m: int,
  d: int,
  *,
  chunk_size: int | None = None,
) -> int:
  """Forward FLOPs of FAVOR+ (see the module docstring).

  Args:
    b: batch.
    h: heads.
    l: length.
    m: random features.
    d: head dim.
    chunk_size: the causal chunk C, or None for bidirectional attention
      (or a prefix scan, which has no intra-chunk products).

  Returns:
    8BHLMD + 4BHLM, plus 2BHLCM + 2BHLCD when chunked.
  """
  flops = 8 * b * h * l * m * d + 4 * b * h * l * m
  if chunk_size:
    c = min(chunk_size, l)
    flops += 2 * b * h * l * c * m + 2 * b * h * l * c * d
  return flops


def softmax_flops(b: int, h: int, l: int, d: int) -> int:
  """Forward FLOPs of dense softmax attention: 4BHL^2D."""
  return 4 * b * h * l * l * d


def feature_dim(options: dict, head_dim: int) -> int:
  """M of the FLOP formula: the FAVOR+ feature dimension for `options`."""
  if options.get('projection') == 'none':
    return head_dim
  m = options['num_features']
  return 2 * m if options.get('kernel') == 'softmax_trig' else m


def forward_flops(
  model: str,
  *,
  batch: int,
  heads: int,
  length: int,
  head_dim: int,
  options: dict,
) -> int:
  """Forward FLOPs of formula `model` (from `flops_model`) for one call."""
  if model == 'softmax_dense':
    return softmax_flops(batch, heads, length, head_dim)
  chunk = options['chunk_size'] if model == 'favor_chunked' else None
  m = feature_dim(options, head_dim)
  return favor_flops(batch, heads, length, m, head_dim, chunk_size=chunk)
