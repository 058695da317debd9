"""Linear Transformer attention (Katharopoulos et al., ICML 2020).

"Transformers are RNNs": softmax's exp(q . k) is replaced by the kernel
phi(q) . phi(k) with the deterministic feature map phi(x) = elu(x) + 1, so
out_i = phi(q_i) sum_j phi(k_j) v_j^T / phi(q_i) sum_j phi(k_j), linear in
length, and causal attention is a recurrent network.

This is a preset of FAVOR+ (`favor.FavorAttention` with kernel='elu' and
projection='none'), not a copy: the same chunk-wise causal code, padding
masks, O(1)-per-token decoding and bf16 handling serve both.

Input scaling. The paper applies elu + 1 to q and k as they are. Here, as in
every FAVOR+ kernel (features.py), q and k are first scaled by D^-1/4, so
that phi's inputs have the size of the inputs of softmax(q . k / sqrt(D)):
phi(q D^-1/4) . phi(k D^-1/4). Because elu + 1 is not homogeneous this is a
different (equally learnable) kernel, not a rescaling that cancels in the
normalization; a model trained with one is not a model trained with the
other. `kernel_eps` (added to each feature) keeps the normalizer positive
where elu(x) + 1 rounds to zero in float32 (x below about -17); the paper's
code adds a similar 1e-6 to the denominator.
"""

from flax import nnx

from performer.attention import favor, registry


@registry.register('linear')
class LinearAttention(favor.FavorAttention):
  """elu + 1 linear attention, served by the FAVOR+ code.

  Example:
    attn = attention.create('linear', head_dim=64, causal=True,
                            rngs=nnx.Rngs(0))
    out_BLHD = attn(q_BLHD, k_BLHD, v_BLHD, mask=mask_BL)
  """

  def __init__(
    self,
    *,
    head_dim: int,
    causal: bool,
    rngs: nnx.Rngs,
    kernel_eps: float = 1e-6,
    chunk_size: int = 64,
  ):
    """Builds the module.

    Args:
      head_dim: D, size of each head (and the number of features).
      causal: whether position i only attends to positions <= i.
      rngs: unused by the deterministic features; kept for the interface
        (FAVOR+ draws its unused seed from it).
      kernel_eps: added to each feature elu(x) + 1 (>= 0).
      chunk_size: C, positions per chunk of the causal pass (see
        `favor.FavorAttention`).
    """
    super().__init__(
      head_dim=head_dim,
      causal=causal,
      rngs=rngs,
      kernel='elu',
      projection='none',
      kernel_eps=kernel_eps,
      chunk_size=chunk_size,
    )
