"""Text generation with a causal `LanguageModel`: prefill, then decode.

The prompt goes through the model in one parallel pass (`prefill`), then
each new token costs one `decode_step` on the cached state: constant time
per token with FAVOR+, a KV cache for softmax (see
`performer.attention.decoding`). Both steps are jitted top-level functions
of the split model, the cache is donated to the next step.

  tokens = generate(model, prompt_tokens, num_tokens=200, temperature=0.8,
                    top_k=40, top_p=0.95, seed=0)

Sampling: logits / temperature, then top-k, then top-p (nucleus) on what
is left, then a categorical draw with key fold_in(key(seed), i) for token i,
so a seed gives the same text on every run. Temperature 0 is greedy.

`generate_text(workdir, prompt, ...)` does it all for a trained run's
workdir, with the run's tokenizer.
"""

import functools
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from performer import tasks
from performer import workdir as workdir_lib
from performer.attention import common
from performer.data import build as data_build


class Sampling(NamedTuple):
  """How tokens are drawn from the logits (static in the jitted steps).

  Attributes:
    temperature: > 0 divides the logits; 0 picks the most likely token.
    top_k: keep only the k most likely tokens (ties at the k-th logit are
      kept too); 0 keeps all.
    top_p: keep the smallest set of most likely tokens whose probability
      reaches top_p (the most likely token always stays); 1 keeps all.
  """

  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0


def check_sampling(temperature, top_k=0, top_p=1.0) -> Sampling:
  """Returns the validated `Sampling`, or raises ValueError naming the value.

  Raises:
    ValueError: temperature < 0 or not finite, top_k not an int >= 0,
      top_p outside (0, 1].
  """
  if (
    isinstance(temperature, bool)
    or not isinstance(temperature, int | float)
    or not math.isfinite(temperature)
    or temperature < 0
  ):
    raise ValueError(
      f'temperature must be a finite number >= 0 (0 = greedy), got '
      f'{temperature!r}'
    )
  if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
    raise ValueError(f'top_k must be an int >= 0 (0 = off), got {top_k!r}')
  if (
    isinstance(top_p, bool)
    or not isinstance(top_p, int | float)
    or not 0 < top_p <= 1
  ):
    raise ValueError(f'top_p must be in (0, 1] (1 = off), got {top_p!r}')
  return Sampling(float(temperature), top_k, float(top_p))


def filter_logits(
  logits_BV: jax.Array, *, top_k: int = 0, top_p: float = 1.0
) -> jax.Array:
  """Sets the logits outside the top-k / top-p support to -inf.

  Args:
    logits_BV: float logits (already divided by the temperature).
    top_k: keep the tokens whose logit is >= the k-th largest; 0 = all.
    top_p: then keep the most likely tokens until their probability (under
      the softmax of what top-k kept) reaches top_p: a token stays when the
      probability of the tokens ranked before it is < top_p. 1 = all.

  Returns:
    The logits, -inf outside the support.
  """
  if 0 < top_k < logits_BV.shape[-1]:
    kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][..., -1:]
    logits_BV = jnp.where(logits_BV >= kth_B1, logits_BV, -jnp.inf)
  if top_p < 1:
    sorted_BV = -jnp.sort(-logits_BV, axis=-1)
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    # The smallest kept logit; the first token is kept whatever top_p is.
    kept_BV = jnp.where(before_BV < top_p, sorted_BV, jnp.inf)
    cutoff_B1 = jnp.min(kept_BV, axis=-1, keepdims=True)
    logits_BV = jnp.where(logits_BV >= cutoff_B1, logits_BV, -jnp.inf)
  return logits_BV


def sample(logits_BV: jax.Array, key: jax.Array, sampling: Sampling):
  """Draws one token per row: int32 [B]."""
  logits_BV = logits_BV.astype(jnp.float32)
  if sampling.temperature == 0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = filter_logits(
    logits_BV / sampling.temperature,
    top_k=sampling.top_k,
    top_p=sampling.top_p,
  )
  return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(0, 3, 6))
def prefill_and_sample(graphdef, state, tokens_BL, max_len, key, i, sampling):
  """Prefills a fresh cache of `max_len`; returns (next token [B], cache).

  Jitted; `graphdef`, `max_len` and `sampling` are static. The token is
  drawn with fold_in(key, i): folding inside the jitted step saves an eager
  dispatch per token, a large part of FAVOR+'s time per token.
  """
  model = nnx.merge(graphdef, state)
  cache = model.init_cache(tokens_BL.shape[0], max_len)
  logits_BLV, cache = model.prefill(tokens_BL, cache)
  token_B = sample(logits_BLV[:, -1], jax.random.fold_in(key, i), sampling)
  return token_B, cache


@functools.partial(jax.jit, static_argnums=(0, 6), donate_argnums=3)
def decode_and_sample(graphdef, state, tokens_B, cache, key, i, sampling):
  """Feeds tokens_B at cache['index']; returns (next token [B], cache).

  Jitted; `graphdef` and `sampling` are static, the cache is donated. The
  token is drawn with fold_in(key, i).
  """
  model = nnx.merge(graphdef, state)
  logits_B1V, cache = model.decode_step(tokens_B[:, None], cache)
  token_B = sample(logits_B1V[:, 0], jax.random.fold_in(key, i), sampling)
  return token_B, cache


# Decode steps per jitted call in `generate`: a lax.scan over steps saves the
# per-call dispatch from Python, which for a small model costs more than the
# step itself. Calls take powers of two steps, so at most
# log2(MAX_STEPS_PER_CALL) + 1 programs are ever compiled.
MAX_STEPS_PER_CALL = 64


@functools.partial(jax.jit, static_argnums=(0, 6, 7), donate_argnums=3)
def decode_steps_and_sample(
  graphdef, state, tokens_B, cache, key, i, num_steps, sampling
):
  """`num_steps` of `decode_and_sample` in one call (a lax.scan).

  Returns (tokens [B, num_steps], cache): the same tokens as `num_steps`
  calls of `decode_and_sample` with i, i + 1, ..., which the tests check.
  """
  model = nnx.merge(graphdef, state)

  def body(carry, j):
    token_B, cache = carry
    logits_B1V, cache = model.decode_step(token_B[:, None], cache)
    token_B = sample(logits_B1V[:, 0], jax.random.fold_in(key, i + j), sampling)
    return (token_B, cache), token_B

  (_, cache), tokens_NB = jax.lax.scan(
    body, (tokens_B, cache), jnp.arange(num_steps)
  )
  return tokens_NB.T, cache


def steps_per_call(remaining: int) -> int:
  """The largest power of two <= min(remaining, MAX_STEPS_PER_CALL)."""
  return 1 << (min(remaining, MAX_STEPS_PER_CALL).bit_length() - 1)


def generate(
  model: nnx.Module,
  prompt,
  *,
  num_tokens: int,
  temperature: float = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
  seed: int = 0,
) -> np.ndarray:
  """Continues `prompt` with `num_tokens` sampled tokens.

  With learned positions the model has a maximum length (max_len); when
  prompt plus continuation would exceed it, generation goes on from the
  last max_len // 2 tokens each time the cache is full (one new prefill),
  as the model saw windows starting at position 0 in training.

  Args:
    model: a causal `LanguageModel`.
    prompt: int token ids, [L] or a batch [B, L] of equal-length prompts.
    num_tokens: how many tokens to generate (>= 0).
    temperature: see `Sampling`; 0 is greedy.
    top_k: see `Sampling`.
    top_p: see `Sampling`.
    seed: the sampling seed.

  Returns:
    int32 generated tokens (without the prompt), [num_tokens] or
    [B, num_tokens].

  Raises:
    ValueError: an empty prompt, a prompt longer than the model's maximum,
      token ids outside the vocabulary, or invalid sampling settings.
  """
  sampling = check_sampling(temperature, top_k, top_p)
  common.check_positive_int('num_tokens', num_tokens, minimum=0)
  prompt_BL = np.asarray(prompt)
  single = prompt_BL.ndim == 1
  if single:
    prompt_BL = prompt_BL[None]
  if prompt_BL.ndim != 2 or prompt_BL.shape[1] == 0:
    raise ValueError(
      f'prompt must be [length] or [batch, length] token ids with length '
      f'>= 1, got shape {prompt_BL.shape}'
    )
  vocab = model.encoder.token_embed.num_embeddings
  if prompt_BL.min() < 0 or prompt_BL.max() >= vocab:
    raise ValueError(
      f'prompt token ids must lie in [0, {vocab}), got '
      f'[{prompt_BL.min()}, {prompt_BL.max()}]'
    )
  limit = model.max_decode_len
  b, length = prompt_BL.shape
  if limit is not None and length > limit:
    raise ValueError(
      f'the prompt has {length} tokens but the model supports at most '
      f'max_len={limit} (learned positions); shorten the prompt'
    )
  if num_tokens == 0:
    out = np.zeros((b, 0), np.int32)
    return out[0] if single else out
  capacity = length + num_tokens
  if limit is not None:
    capacity = min(capacity, limit)
  graphdef, state = nnx.split(model)
  key = jax.random.key(seed)
  token_B, cache = prefill_and_sample(
    graphdef,
    state,
    jnp.asarray(prompt_BL, jnp.int32),
    capacity,
    key,
    0,
    sampling,
  )
  # Device arrays [B, n]: without a host copy per call, the next steps are
  # dispatched while the device still computes.
  generated = [token_B[:, None]]
  position = length  # Of the token just sampled, in the cache.
  i = 1  # Tokens generated so far.
  while i < num_tokens:
    if position == capacity:  # Only with a maximum length: start afresh.
      keep = max(capacity // 2, 1)
      so_far_BT = np.concatenate(
        [prompt_BL, *jax.device_get(generated)], axis=1
      )
      token_B, cache = prefill_and_sample(
        graphdef,
        state,
        jnp.asarray(so_far_BT[:, -keep:], jnp.int32),
        capacity,
        key,
        i,
        sampling,
      )
      generated.append(token_B[:, None])
      position = keep
      i += 1
      continue
    n = steps_per_call(min(num_tokens - i, capacity - position))
    tokens_BN, cache = decode_steps_and_sample(
      graphdef, state, token_B, cache, key, i, n, sampling
    )
    generated.append(tokens_BN)
    token_B = tokens_BN[:, -1]
    position += n
    i += n
  out = np.concatenate(jax.device_get(generated), axis=1).astype(np.int32)
  return out[0] if single else out


def sample_text(
  model: nnx.Module,
  tokenizer: Any,
  prompt: str,
  *,
  num_tokens: int,
  temperature: float,
  context: int,
  seed: int,
) -> str:
  """Continues `prompt` with a trained LM; returns prompt and continuation.

  The trainer's end-of-run sample. An empty prompt starts from a newline.

  Args:
    model: a causal `LanguageModel`.
    tokenizer: has `encode(text)` and `decode(ids)` (the run's data).
    prompt: the text to continue.
    num_tokens: tokens to generate.
    temperature: see `Sampling`.
    context: prompts keep their last `context` tokens (the training length).
    seed: the sampling seed.
  """
  prompt_tokens = np.asarray(tokenizer.encode(prompt), np.int32)
  if prompt_tokens.size == 0:
    prompt_tokens = np.asarray(tokenizer.encode('\n'), np.int32)
  if prompt_tokens.size == 0:
    return ''
  tokens = generate(
    model,
    prompt_tokens[-context:],
    num_tokens=num_tokens,
    temperature=temperature,
    seed=seed,
  )
  return prompt + tokenizer.decode(tokens)


def generate_text(
  workdir: str,
  prompt: str,
  *,
  num_tokens: int,
  temperature: float,
  top_k: int = 0,
  top_p: float = 1.0,
  seed: int = 0,
  step: int | None = None,
) -> str:
  """Loads a workdir's model; returns the prompt and its continuation.

  The text is encoded and decoded with the run's tokenizer (bytes: UTF-8
  with invalid sequences replaced by U+FFFD; proteins: amino-acid
  letters). Arguments as in `generate` and `workdir.restore_model`.

  Raises:
    FileNotFoundError: a workdir without checkpoint, or a missing step.
    ValueError: a run that is not a causal language model, an empty or too
      long prompt, or bad sampling settings.
  """
  check_sampling(temperature, top_k, top_p)
  saved = workdir_lib.read_config(workdir) if os.path.isdir(workdir) else None
  if saved is not None and tasks.task_of(saved['data']) != 'lm':
    raise ValueError(
      f'workdir {workdir} holds a {saved["model"]["head"]!r} model trained '
      f'on the {tasks.task_of(saved["data"])!r} task of '
      f'{saved["data"]["name"]!r}, not a language model; generation needs '
      'the workdir of a causal language model run'
    )
  model, config, _ = workdir_lib.restore_model(workdir, step)
  tokenizer = data_build.load_tokenizer(config.data)
  prompt_tokens = np.asarray(tokenizer.encode(prompt))
  if prompt_tokens.size == 0:
    raise ValueError('the prompt is empty; give at least one token')
  tokens = generate(
    model,
    prompt_tokens.astype('int32'),
    num_tokens=num_tokens,
    temperature=temperature,
    top_k=top_k,
    top_p=top_p,
    seed=seed,
  )
  # Decoded together, so that a character split at the boundary survives.
  return tokenizer.decode(list(prompt_tokens) + list(tokens))
