"""Time per generated token versus position, for each attention variant.

`measure` builds a config's language model with one variant and times
`performer.generate`'s jitted prefill and decode calls position by
position; `summarize` compares the early and late positions and `run`
does every variant, prints the summary and writes the JSON and the PNG
(scripts/benchmark_generation.py is the command line).
"""

import statistics
import time

import jax
import numpy as np
from flax import nnx

from performer import generate as generate_lib
from performer import model as model_lib
from performer import workdir
from performer.bench import plots, timing


def measure(
  config,
  variant: str,
  num_tokens: int,
  prompt_len: int,
  seed: int,
  per_call: int = 1,
  repeats: int = 1,
):
  """Times generating up to `num_tokens` positions with `variant`.

  Decoding runs as `generate` does, in calls of up to `per_call` steps (a
  power of two; 1 times every token on its own). The whole generation is
  timed `repeats` times; each position gets its median time.

  Returns:
    A record: 'variant', 'positions' (of the fed tokens), 'step_ms' (one
    per position), 'prefill_ms', 'total_s', 'compile_s'.
  """
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.attention = variant
    config.model.max_len = max(config.model.max_len, num_tokens)
    # 0 means "from the data" in the trainer; the prompt is random bytes.
    config.model.vocab_size = config.model.vocab_size or 256
  model = model_lib.create_model(config.model, rngs=nnx.Rngs(seed))
  graphdef, state = nnx.split(model)
  sampling = generate_lib.Sampling(temperature=1.0)
  prompt_1L = jax.random.randint(
    jax.random.key(seed), (1, prompt_len), 0, config.model.vocab_size
  )
  key = jax.random.key(seed)

  def prefill():
    token, cache = generate_lib.prefill_and_sample(
      graphdef, state, prompt_1L, num_tokens, key, 0, sampling
    )
    return jax.block_until_ready((token, cache))

  def steps(token_B, cache, i, n):
    tokens_BN, cache = generate_lib.decode_steps_and_sample(
      graphdef, state, token_B, cache, key, i, n, sampling
    )
    return jax.block_until_ready((tokens_BN[:, -1], cache))

  # The calls `generate` makes: powers of two up to steps_per_call.
  calls = []
  i = prompt_len
  while i < num_tokens:
    calls.append(
      (i, generate_lib.steps_per_call(min(num_tokens - i, per_call)))
    )
    i += calls[-1][1]
  start = time.perf_counter()
  for n in sorted({n for _, n in calls}):  # Compiles every program used.
    steps(*prefill(), 0, n)
  compile_s = time.perf_counter() - start

  def one_run():
    start = time.perf_counter()
    token, cache = prefill()
    prefill_ms = 1e3 * (time.perf_counter() - start)
    step_ms = []
    for i, n in calls:
      start = time.perf_counter()
      token, cache = steps(token, cache, i, n)
      # Each position of a call is charged the call's mean time per token.
      step_ms.extend([1e3 * (time.perf_counter() - start) / n] * n)
    return prefill_ms, step_ms

  # Per position, the median over the runs: one slow call on a shared
  # machine would otherwise weigh on a whole window's mean.
  runs = [one_run() for _ in range(repeats)]
  prefill_ms = statistics.median(r[0] for r in runs)
  per_run_step_ms = [r[1] for r in runs]
  step_ms = [statistics.median(t) for t in zip(*per_run_step_ms, strict=True)]
  return {
    'variant': variant,
    'num_layers': config.model.num_layers,
    'emb_dim': config.model.emb_dim,
    'num_heads': config.model.num_heads,
    'position': config.model.position,
    'attention_options': config.model.attention_options[variant].to_dict(),
    'prompt_len': prompt_len,
    'steps_per_call': per_call,
    'repeats': repeats,
    'positions': list(range(prompt_len, num_tokens)),
    'step_ms': step_ms,
    'prefill_ms': prefill_ms,
    'total_s': (prefill_ms + sum(step_ms)) / 1e3,
    'compile_s': compile_s,
  }


def window_mean(record: dict, window: tuple[int, int]) -> float | None:
  """Mean step time (ms) over positions in [start, stop); None if none."""
  times = [
    t
    for p, t in zip(record['positions'], record['step_ms'], strict=True)
    if window[0] <= p < window[1]
  ]
  return float(np.mean(times)) if times else None


def summarize(records: list[dict], early, late) -> dict:
  """Per-variant totals and early / late means, plus FAVOR+'s speedup."""
  summary = {}
  for r in records:
    e, l = window_mean(r, early), window_mean(r, late)
    summary[r['variant']] = {
      'total_s': r['total_s'],
      'early_mean_ms': e,
      'late_mean_ms': l,
      'late_over_early': l / e if e and l else None,
    }
  if 'favor' in summary and 'softmax' in summary:
    summary['softmax_over_favor_total'] = (
      summary['softmax']['total_s'] / summary['favor']['total_s']
    )
  return summary


def plot(records: list[dict], path: str, title: str) -> None:
  """Step time vs position (raw and a running median) and cumulative time."""
  plt = plots.pyplot()
  fig, (ax_step, ax_total) = plt.subplots(1, 2, figsize=(11, 4))
  for i, r in enumerate(records):
    color = plt.get_cmap('tab10')(i)
    pos, ms = np.asarray(r['positions']), np.asarray(r['step_ms'])
    ax_step.plot(pos, ms, color=color, alpha=0.25, lw=0.5)
    width = max(1, min(64, len(ms) // 8))
    median = [np.median(ms[max(0, j - width) : j + 1]) for j in range(len(ms))]
    ax_step.plot(pos, median, color=color, label=r['variant'])
    ax_total.plot(pos, np.cumsum(ms) / 1e3, color=color, label=r['variant'])
  ax_step.set_yscale('log')
  ax_step.set_xlabel('position')
  ax_step.set_ylabel('ms per token (line: running median)')
  ax_total.set_xlabel('position')
  ax_total.set_ylabel('cumulative seconds')
  for ax in (ax_step, ax_total):
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize='small')
  fig.suptitle(title, fontsize='medium')
  plots.save_figure(fig, path)


def run(
  config,
  *,
  variants: list[str],
  num_tokens: int,
  prompt_len: int,
  early: tuple[int, int],
  late: tuple[int, int],
  seed: int,
  steps_per_call: int = 1,
  repeats: int = 1,
  json_path: str | None = None,
  png_path: str | None = None,
) -> dict:
  """Measures every variant, prints the summary, writes JSON and PNG."""
  records = []
  for variant in variants:
    print(f'{variant}: generating {num_tokens} positions ...', flush=True)
    records.append(
      measure(
        config,
        variant,
        num_tokens,
        prompt_len,
        seed,
        steps_per_call,
        repeats,
      )
    )
  summary = summarize(records, early, late)
  for name, values in summary.items():
    print(f'{name}: {values}')
  device = timing.device_info()
  result = {
    'summary': summary,
    'early': early,
    'late': late,
    'num_tokens': num_tokens,
    'device': device,
    'records': records,
  }
  if json_path:
    workdir.write_json(json_path, result)
  if png_path:
    title = (
      f'Generation to {num_tokens} tokens: {records[0]["num_layers"]} '
      f'layers, emb {records[0]["emb_dim"]}, {device["device_kind"]}'
    )
    plot(records, png_path, title)
  return result
