"""Pictures of the attention a trained model forms, exact and approximated.

For chosen layers and heads of a run, from the model's own queries and keys
on one input (`probe`): the exact softmax attention matrix, what each
requested registry variant forms from the same q and k (`probe.
effective_attention`: FAVOR+, FAVOR++ and FAVOR# reconstructions, local and
sparse patterns, ...), the run's own trained attention module, and each
one's error map against exact softmax. scripts/attention_maps.py is the
command line.

Fresh modules are built with the run's options for that variant (the
config's attention_options), `num_features` and `seed` overriding; causal
FAVOR++ and FAVOR# get their running statistics from these q and k (an
untrained module would have none and be FAVOR+).
"""

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from performer import attention, probe
from performer import model as model_lib
from performer.attention import favor
from performer.bench import plots


def fresh_module(
  config: Any,
  name: str,
  head_dim: int,
  *,
  cls_token: bool,
  num_features: int | None,
  seed: int,
) -> nnx.Module:
  """Variant `name` with the run's options for it, as the model builds it."""
  options = model_lib.attention_create_options(
    config.model, name, cls_token=cls_token
  )
  if num_features is not None and 'num_features' in attention.options(name):
    options['num_features'] = num_features
  return attention.create(
    name,
    head_dim=head_dim,
    causal=bool(config.model.causal),
    rngs=nnx.Rngs(seed),
    **options,
  )


def maps_for_layer(
  model: nnx.Module,
  config: Any,
  layer: int,
  layer_inputs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
  variants: list[str],
  *,
  num_features: int | None,
  seed: int,
) -> dict[str, np.ndarray]:
  """{column name: attention [H, T, T]} for one layer; 'exact' first.

  Args:
    model: the trained model (its layer's own attention module is the last
      column).
    config: its config.
    layer: which block.
    layer_inputs: that block's `probe.attention_inputs` entry.
    variants: registry names to form besides exact softmax.
    num_features: overrides the random-feature variants' M (None: the
      run's).
    seed: the fresh modules' seed (their projections).
  """
  q_THD, k_THD, _, real_T = layer_inputs
  head_dim = q_THD.shape[-1]
  cls_token = model.encoder.cls_E is not None
  out = {}
  for name in ['softmax'] + variants:
    attn = fresh_module(
      config,
      name,
      head_dim,
      cls_token=cls_token,
      num_features=num_features,
      seed=seed,
    )
    if isinstance(attn, favor.FavorAttention) and attn.num_heads is not None:
      attn.update_statistics(
        jnp.asarray(q_THD)[None],
        jnp.asarray(k_THD)[None],
        jnp.asarray(real_T)[None],
      )
    out['exact' if name == 'softmax' else name] = _formed(
      attn, q_THD, k_THD, real_T
    )
  own = model.encoder.blocks[layer].attention
  out[f'{config.model.attention} (trained)'] = _formed(
    own, q_THD, k_THD, real_T
  )
  return out


def _formed(attn, q_THD, k_THD, real_T):
  # A variant that shares QK (Reformer) reads its keys from the queries.
  if 'k' not in attention.uses(attn):
    k_THD = q_THD
  return probe.effective_attention(attn, q_THD, k_THD, real_T)


def draw(
  maps: dict[tuple[int, int], dict[str, np.ndarray]],
  path: str,
  title: str,
  real_T: np.ndarray,
) -> dict[str, Any]:
  """Two rows per (layer, head): the matrices, then their errors.

  Args:
    maps: (layer, head) -> {column: attention [T, T]}; 'exact' first.
    path: the PNG.
    title: the figure's title.
    real_T: the real positions (padding is cut from the pictures).

  Returns:
    Per (layer, head) and column, the mean absolute error against exact
    and the largest one (what the error maps show), for the JSON.
  """
  plt = plots.pyplot()
  keep = np.flatnonzero(real_T)
  columns = list(next(iter(maps.values())))
  fig, axes = plt.subplots(
    2 * len(maps),
    len(columns),
    figsize=(2.6 * len(columns), 2.6 * 2 * len(maps)),
    squeeze=False,
  )
  summary = {}
  for row, ((layer, head), matrices) in enumerate(maps.items()):
    exact = matrices['exact'][np.ix_(keep, keep)]
    top = max(float(exact.max()), 1e-9)
    errors = {}
    for c, name in enumerate(columns):
      a = matrices[name][np.ix_(keep, keep)]
      ax = axes[2 * row][c]
      ax.imshow(a, cmap='viridis', vmin=0.0, vmax=top)
      ax.set_title(f'L{layer} H{head}: {name}', fontsize='small')
      err = a - exact
      errors[name] = {
        'mean_abs_error': float(np.mean(np.abs(err))),
        'max_abs_error': float(np.max(np.abs(err))),
      }
      ax = axes[2 * row + 1][c]
      bound = max(float(np.max(np.abs(err))), 1e-9)
      ax.imshow(err, cmap='RdBu_r', vmin=-bound, vmax=bound)
      ax.set_title(
        f'{name} - exact (max {bound:.2g})'
        if name != 'exact'
        else 'exact - exact',
        fontsize='small',
      )
    summary[f'layer{layer}_head{head}'] = errors
    for ax in axes[2 * row : 2 * row + 2].ravel():
      ax.set_xticks([])
      ax.set_yticks([])
  fig.suptitle(title, fontsize='medium')
  plots.save_figure(fig, path)
  return summary
