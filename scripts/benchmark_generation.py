r"""Time per generated token versus position, FAVOR+ against a softmax KV cache.

For each variant, builds the config's language model (randomly initialized:
speed does not depend on the weights) with that attention, prefills a short
prompt and then generates token by token up to --num_tokens positions with
the jitted steps of `performer.generate`, timing every step (each waited on
with `jax.block_until_ready`). Compilation is done before the timed run and
reported on its own. Writes JSON (every step's time plus a summary) and a
PNG plot.

  python scripts/benchmark_generation.py --num_tokens=8192 \
    --json=docs/benchmarks/generation_cpu.json \
    --png=docs/benchmarks/generation_cpu.png

The config defaults to configs/lm_shakespeare.py; its fields can be
overridden as in scripts/train.py (--config.model.num_layers=4). The model's
max_len is raised to --num_tokens where needed (learned positions).

Summary per variant: total_s (prefill plus all steps), and the mean step
time over the positions of --early and --late, whose ratio says how flat
the cost per token is (FAVOR+: constant state; softmax: a KV cache whose
attended prefix grows with the position).
"""

import statistics
import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from configs import lm_shakespeare
from performer import generate as generate_lib
from performer import model as model_lib
from performer import workdir
from performer.bench import plots, timing

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  lm_shakespeare.__file__,
  'Experiment config whose model is benchmarked.',
)
_VARIANTS = flags.DEFINE_list(
  'variants', ['favor', 'softmax'], 'Attention variants to time.'
)
_NUM_TOKENS = flags.DEFINE_integer(
  'num_tokens', 8192, 'Sequence length reached: prompt plus generated.'
)
_PROMPT_LEN = flags.DEFINE_integer('prompt_len', 1, 'Prompt tokens.')
_EARLY = flags.DEFINE_list(
  'early', ['100', '1000'], 'Positions [start, stop) of the early mean.'
)
_LATE = flags.DEFINE_list(
  'late', ['7000', '8000'], 'Positions [start, stop) of the late mean.'
)
_SEED = flags.DEFINE_integer('seed', 0, 'Model and sampling seed.')
_REPEATS = flags.DEFINE_integer(
  'repeats', 3, 'Timed generations; each position gets its median time.'
)
_STEPS_PER_CALL = flags.DEFINE_integer(
  'steps_per_call',
  generate_lib.MAX_STEPS_PER_CALL,
  'Decode steps per jitted call, as in `generate` (1: one call per token).',
)
_JSON = flags.DEFINE_string('json', None, 'Where to write the JSON.')
_PNG = flags.DEFINE_string('png', None, 'Where to write the PNG plot.')


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


def _window(values: list[str], name: str) -> tuple[int, int]:
  if len(values) != 2:
    raise app.UsageError(f'--{name} takes start,stop; got {values}')
  return int(values[0]), int(values[1])


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


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  num_tokens, prompt_len = _NUM_TOKENS.value, _PROMPT_LEN.value
  if _REPEATS.value < 1:
    raise app.UsageError(f'--repeats must be >= 1, got {_REPEATS.value}')
  if _STEPS_PER_CALL.value < 1:
    raise app.UsageError(
      f'--steps_per_call must be >= 1, got {_STEPS_PER_CALL.value}'
    )
  if not 1 <= prompt_len < num_tokens:
    raise app.UsageError(
      f'need 1 <= --prompt_len < --num_tokens, got {prompt_len}, {num_tokens}'
    )
  run(
    _CONFIG.value,
    variants=_VARIANTS.value,
    num_tokens=num_tokens,
    prompt_len=prompt_len,
    early=_window(_EARLY.value, 'early'),
    late=_window(_LATE.value, 'late'),
    seed=_SEED.value,
    steps_per_call=_STEPS_PER_CALL.value,
    repeats=_REPEATS.value,
    json_path=_JSON.value,
    png_path=_PNG.value,
  )


if __name__ == '__main__':
  app.run(main)
