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
run is read with `workdir.restore_model` (its model only, read-only).
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


def load_pretrained(model: nnx.Module, workdir: str) -> dict[str, Any]:
  """Sets the parameters of `model` to those of the run in `workdir`.

  Every `nnx.Param` of `model` takes the source's value at the same path,
  exactly (float32 arrays copied bit for bit). Variables that are not
  parameters (FAVOR+'s random projection and seed) keep `model`'s values,
  whether or not the source has them; nothing else changes.

  Args:
    model: the destination, e.g. a FAVOR+ `LanguageModel` whose config
      differs from the source's only in the attention.
    workdir: the workdir of a finished or interrupted run (config.json and
      checkpoints/<step>/ as `performer.train` writes them).

  Returns:
    {'source_workdir', 'source_step' (the best-validation checkpoint, else
    the newest), 'source_attention', 'num_params' (number of arrays),
    'loaded_values' (number of scalars), 'destination_only' (paths of the
    destination's non-parameter variables that the source lacks), 'kept'
    (paths of all the destination's non-parameter variables)}.

  Raises:
    FileNotFoundError: `workdir` is missing or holds no checkpoint.
    ValueError: the parameter trees differ: the message names each path
      whose shapes differ (with both shapes) and the paths that only one
      side has.
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
  missing = sorted(set(destination) - set(source_params))
  extra = sorted(set(source_params) - set(destination))
  mismatched = [
    f'{name}: source {tuple(source_params[name].shape)}, destination '
    f'{tuple(destination[name].shape)}'
    for name in sorted(set(source_params) & set(destination))
    if source_params[name].shape != destination[name].shape
  ]
  if missing or extra or mismatched:
    problems = []
    if mismatched:
      problems.append('shapes differ at ' + '; '.join(mismatched))
    if missing:
      problems.append(f'parameters missing in the source: {missing}')
    if extra:
      problems.append(f'parameters only in the source: {extra}')
    raise ValueError(
      f'cannot load the parameters of {workdir} (step {step}) into this '
      'model: ' + '. '.join(problems) + '. Only the attention may differ '
      'between the two model configs.'
    )
  for name, var in destination.items():
    var[...] = jnp.asarray(source_params[name][...], dtype=var[...].dtype)
  kept = sorted(_flat(model, nnx.Not(nnx.Param)))
  source_others = _flat(source, nnx.Not(nnx.Param))
  return {
    'source_workdir': workdir,
    'source_step': step,
    'source_attention': config.model.get('attention'),
    'num_params': len(destination),
    'loaded_values': int(sum(v[...].size for v in destination.values())),
    'destination_only': [name for name in kept if name not in source_others],
    'kept': kept,
  }
