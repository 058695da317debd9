"""What a trained model's attention sees: its queries, keys and values.

Shared by scripts/approximation_error.py (random-feature errors on a trained
model's own q and k) and scripts/attention_maps.py (pictures of the
attention it forms). A run is read from its workdir, read-only.

  model, config = probe.load_run('workdirs/lm_shakespeare')
  tokens_BL, mask_BL = probe.example(config, text='ROMEO:')
  layers = probe.attention_inputs(model, tokens_BL, mask_BL)
  q_LHD, k_LHD, v_LHD, real_L = layers[0]
"""

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from performer import workdir as workdir_lib
from performer.data import build as data_build


def load_run(workdir: str, step: int | None = None) -> tuple[Any, Any]:
  """(model, config) of a training run's checkpoint (default: the best)."""
  model, config, _ = workdir_lib.restore_model(workdir, step)
  return model, config


def example(
  config: Any,
  *,
  text: str | None = None,
  index: int = 0,
  split: str = 'validation',
) -> tuple[np.ndarray, np.ndarray | None]:
  """One input of the run's task: tokens [1, L] and a mask [1, L] or None.

  Args:
    config: the run's config.
    text: for a language model, a text to encode with the run's tokenizer
      (cut to the run's sequence length); None takes example `index`.
    index: which example of `split`, in the order evaluation reads them.
    split: the split `index` counts in.

  Raises:
    ValueError: a text for a run that is not a language model, an empty
      text, an index out of range, or a split the dataset does not have.
  """
  seq_len = config.data.seq_len
  if text is not None:
    tokenizer = data_build.load_tokenizer(config.data)
    if config.model.head != 'lm':
      raise ValueError(
        f'a text is an input for a language model; this run has a '
        f'{config.model.head!r} model: give an example index instead'
      )
    tokens = np.asarray(tokenizer.encode(text), np.int32)[:seq_len]
    if tokens.size == 0:
      raise ValueError('the text is empty; give at least one token')
    return tokens[None], None
  if not isinstance(index, int) or index < 0:
    raise ValueError(f'index must be an int >= 0, got {index!r}')
  data = data_build.create(config.data, batch_size=1, seed=0)
  if split not in data.eval_splits:
    raise ValueError(f'unknown split {split!r}; valid: {data.eval_splits}')
  for i, batch in enumerate(data.eval_batches(split)):
    if i == index:
      # Retrieval: the first document of the pair (one shared encoder).
      suffix = '1' if 'inputs1' in batch else ''
      tokens = np.asarray(batch['inputs' + suffix], np.int32)
      mask = batch.get('mask' + suffix)
      return tokens, None if mask is None else np.asarray(mask, bool)
  raise ValueError(f'index {index} is out of range: {split} has {i + 1}')


def attention_inputs(
  model: Any, tokens_BL: np.ndarray, mask_BL: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
  """Per layer, (q [T, H, D], k, v, real [T] bool) of the first sequence.

  T counts a CLS token where the model has one; `real` marks the positions
  that are not padding.
  """
  run = nnx.jit(lambda encoder, t, m: encoder.attention_inputs(t, m))
  per_block, mask_BT = run(
    model.encoder,
    jnp.asarray(tokens_BL),
    None if mask_BL is None else jnp.asarray(mask_BL),
  )
  out = []
  for q_BTHD, k_BTHD, v_BTHD in per_block:
    t = q_BTHD.shape[1]
    real_T = np.ones(t, bool) if mask_BT is None else np.asarray(mask_BT[0])
    out.append(
      tuple(np.asarray(x[0], np.float32) for x in (q_BTHD, k_BTHD, v_BTHD))
      + (real_T,)
    )
  return out


def effective_attention(
  attn: Any, q_LHD: np.ndarray, k_LHD: np.ndarray, real_L: np.ndarray
) -> np.ndarray:
  """The attention matrix [H, L, L] an attention module forms from q and k.

  Every registered variant's output is linear in the values, out = A v, with
  A a function of q and k only; feeding one-hot values reads A off column
  by column (head_dim columns per call). For exact softmax that is the
  softmax matrix; for FAVOR+ the row-normalized phi(q) phi(k)^T; for local
  and sparse attention their masked softmax.

  Args:
    attn: a module of the registry (`attention.create`), head_dim D.
    q_LHD: one sequence's queries.
    k_LHD: its keys.
    real_L: bool, False at padded positions (passed as the key mask).
  """
  length, heads, dim = q_LHD.shape
  q, k = jnp.asarray(q_LHD)[None], jnp.asarray(k_LHD)[None]
  mask = jnp.asarray(real_L)[None]
  run = nnx.jit(lambda attn, q, k, v, m: attn(q, k, v, mask=m))
  columns = []
  for start in range(0, length, dim):
    # v[j, :, c] = 1 for j = start + c: output column c is A[:, start + c].
    v_LD = jnp.eye(length, dim, -start, jnp.float32)
    v = jnp.broadcast_to(v_LD[None, :, None, :], (1, length, heads, dim))
    out_LHD = run(attn, q, k, v, mask)[0]
    columns.append(np.asarray(out_LHD, np.float32))
  a_LHC = np.concatenate(columns, axis=-1)[:, :, :length]
  return np.transpose(a_LHC, (1, 0, 2))
