"""Loads a trained model's parameters into a new model (paper Fig. 5 left).

The backward-compatibility experiment trains a softmax Transformer, then
moves its weights into the same architecture with FAVOR+ attention and
fine-tunes. Only the attention differs, and attention variants own no
trainable parameters (queries, keys, values and the output projection
belong to the block), so the two models have the same `nnx.Param` tree;
FAVOR+ adds non-trainable variables (its random projection and the seed it
is drawn from), which keep the destination's fresh values.

  model = model_lib.create_model(favor_config.model, rngs=nnx.Rngs(0))
  report = transfer.load_pretrained(model, '/tmp/softmax_run')

The trainer does this when `config.init_from` names a workdir. The source
run is read with `workdir.restore_model` (its model only, read-only). The
same path fine-tunes a self-pretrained encoder (`performer.pretrain`):
between models with different heads only the encoder moves.
"""

import os
from typing import Any

import jax.numpy as jnp
from flax import nnx

from performer import workdir as workdir_lib


def _flat(module: nnx.Module, kind) -> dict[str, Any]:
  """{dotted path: variable} of the variables of `module` of `kind`."""
  state = nnx.state(module, kind)
  return {
    '.'.join(str(key) for key in path): var
    for path, var in nnx.to_flat_state(state)
  }


# Parameters a classifier's encoder has and a language model's has not:
# the CLS vector (an LM has no CLS token). They keep their fresh values
# when an LM (self-pretraining) initializes a classifier.
_CLASSIFIER_ONLY = ('encoder.cls_E',)


def load_pretrained(model: nnx.Module, workdir: str) -> dict[str, Any]:
  """Sets the parameters of `model` to those of the run in `workdir`.

  Every `nnx.Param` of `model` takes the source's value at the same path,
  exactly (float32 arrays copied bit for bit). Variables that are not
  parameters (FAVOR+'s random projection and seed) keep `model`'s values,
  whether or not the source has them; nothing else changes.

  When the two models have different heads (a masked-token LM pretrained on
  a task's inputs, loaded into that task's classifier or dual encoder),
  only the encoder's parameters move: the head, and the CLS vector that an
  LM's encoder does not have, keep their fresh values ('fresh' in the
  report).

  Args:
    model: the destination, e.g. a FAVOR+ `LanguageModel` whose config
      differs from the source's only in the attention.
    workdir: the workdir of a finished or interrupted run (config.json and
      checkpoints/<step>/ as `performer.train` writes them).

  Returns:
    {'source_workdir', 'source_step' (the best-validation checkpoint, else
    the newest), 'source_attention', 'scope' ('model', or 'encoder' when
    the heads differ), 'num_params' (number of arrays loaded),
    'loaded_values' (number of scalars), 'fresh' (paths of the
    destination's parameters left as initialized), 'destination_only'
    (paths of the destination's non-parameter variables that the source
    lacks), 'kept' (paths of all the destination's non-parameter
    variables)}.

  Raises:
    FileNotFoundError: `workdir` is missing or holds no checkpoint.
    ValueError: the parameter trees (of the encoders, when the heads
      differ) differ: the message names each path whose shapes differ
      (with both shapes) and the paths that only one side has.
  """
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise FileNotFoundError(
      f'init_from workdir {workdir} does not exist; give the workdir of a '
      'finished training run'
    )
  source, config, step = workdir_lib.restore_model(workdir)
  source_params = _flat(source, nnx.Param)
  destination = _flat(model, nnx.Param)
  scope = 'model' if type(source) is type(model) else 'encoder'
  fresh = []
  if scope == 'encoder':
    source_params = _in_encoder(source_params)
    fresh = sorted(
      name
      for name in destination
      if not name.startswith('encoder.') or name in _CLASSIFIER_ONLY
    )
    destination = {k: v for k, v in destination.items() if k not in fresh}
  _check_same_tree(source_params, destination, workdir, step, scope)
  for name, var in destination.items():
    var[...] = jnp.asarray(source_params[name][...], dtype=var[...].dtype)
  kept = sorted(_flat(model, nnx.Not(nnx.Param)))
  source_others = _flat(source, nnx.Not(nnx.Param))
  return {
    'source_workdir': workdir,
    'source_step': step,
    'source_attention': config.model.get('attention'),
    'scope': scope,
    'num_params': len(destination),
    'loaded_values': int(sum(v[...].size for v in destination.values())),
    'fresh': fresh,
    'destination_only': [name for name in kept if name not in source_others],
    'kept': kept,
  }


def _in_encoder(params: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in params.items() if k.startswith('encoder.')}


def _check_same_tree(source_params, destination, workdir, step, scope):
  """Raises ValueError naming every path where the two trees differ."""
  missing = sorted(set(destination) - set(source_params))
  extra = sorted(set(source_params) - set(destination))
  mismatched = [
    f'{name}: source {tuple(source_params[name].shape)}, destination '
    f'{tuple(destination[name].shape)}'
    for name in sorted(set(source_params) & set(destination))
    if source_params[name].shape != destination[name].shape
  ]
  if not (missing or extra or mismatched):
    return
  problems = []
  if mismatched:
    problems.append('shapes differ at ' + '; '.join(mismatched))
  if missing:
    problems.append(f'parameters missing in the source: {missing}')
  if extra:
    problems.append(f'parameters only in the source: {extra}')
  which = (
    'Only the attention may differ between the two model configs.'
    if scope == 'model'
    else 'The heads differ, so only the encoders are compared: they must '
    'have the same shape (emb_dim, num_heads, num_layers, qkv_dim, '
    'mlp_dim, vocab_size, max_len, position).'
  )
  raise ValueError(
    f'cannot load the parameters of {workdir} (step {step}) into this '
    'model: ' + '. '.join(problems) + f'. {which}'
  )
