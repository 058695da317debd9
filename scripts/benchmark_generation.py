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

from absl import app, flags
from ml_collections import config_flags

from configs import lm_shakespeare
from performer import generate as generate_lib
from performer.bench import generation_speed

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


def _window(values: list[str], name: str) -> tuple[int, int]:
  if len(values) != 2:
    raise app.UsageError(f'--{name} takes start,stop; got {values}')
  return int(values[0]), int(values[1])


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
  generation_speed.run(
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
