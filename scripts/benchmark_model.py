r"""Benchmarks the whole model: forward+backward time and memory vs length.

The Performer paper's Fig. 3: a bidirectional transformer on byte tokens
(vocabulary 256), one training-style pass (forward, cross-entropy loss,
gradients of every parameter), timed for sequence lengths in powers of two
until the memory runs out, for several attention variants and an upper
bound where attention is replaced by the identity.

Settings (--settings):
  regular: 6 layers, 8 heads, d_ff 2048, d 512 (the paper's).
  small: 1 head, d_ff 64, d 64 (the paper's), and 6 layers: the paper does
    not give the small model's depth, so it keeps the regular one's.
  --num_layers overrides the depth of both.

Variants (--variants):
  softmax: exact attention (`softmax`, implementation 'auto').
  favor_softmax: FAVOR+ with positive softmax features (`favor`,
    kernel='softmax').
  favor_relu: FAVOR+ with the generalized ReLU kernel (`favor`,
    kernel='relu'), what the paper calls "Performer".
  local: block-local attention (`local`, --window).
  sparse: the Sparse Transformer's fixed pattern (`sparse`,
    --block_size).
  identity: the upper bound "X": each block's attention returns its values
    unchanged, so the block keeps its query, key, value and output
    projections and its MLP, and only the attention computation is gone.
FAVOR+ uses --num_features random features (orthogonal, the registry's
defaults otherwise).

The identity is a benchmark-only module swapped into the built model
(`IdentityAttention`), not a registered variant: it is not attention (it
mixes nothing across positions), so offering it to the trainer and every
config through the registry would invite meaningless training runs, and
registering it would mean changing the attention package for a measurement
aid.

What is measured, per (setting, variant, length), batch --batch:
  fwd_bwd_ms: median wall time of --repeats calls (after --warmup) of the
    compiled function params -> value_and_grad(loss)(params), loss the
    mean cross-entropy of the logits against the input tokens themselves
    (the model is bidirectional, so there is no next-token target; the loss
    only has to depend on every output, its value is irrelevant).
  peak_bytes: XLA's static estimate for the compiled program (argument +
    output + temp - alias; `performer/benchmark.py`), checked against
    --max_peak_gib before running. Lengths are tried in increasing order;
    after the first length that is over the budget (status 'skipped') or
    fails with out of memory ('oom'), the longer lengths of that (setting,
    variant) are recorded as 'skipped' without compiling, which is the
    paper's "until out of memory". --max_length caps the lengths, for all
    settings or per setting (e.g. regular=1024,small=4096).

Outputs: a JSON list of records (--json, rewritten after every config),
a PNG of time and peak memory versus length, one row per setting and one
line per variant (--png), and a markdown table (stdout, --markdown).

CPU run of docs/benchmarks/model_cpu.* (8 minutes on 2 shared cores):

  python scripts/benchmark_model.py --settings small,regular \
    --min_length 512 --max_length small=8192,regular=1024 \
    --repeats 3 --warmup 1 --max_peak_gib 4 \
    --json docs/benchmarks/model_cpu.json \
    --png docs/benchmarks/model_cpu.png \
    --markdown docs/benchmarks/model_cpu.md

On a GPU, to the paper's lengths (until the memory runs out), leave
--max_length at its default 65536 and --max_peak_gib unset.
"""

import argparse
import dataclasses
import gc
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import optax
from flax import nnx

from performer import benchmark as bench
from performer import model as model_lib

# name -> (layers, heads, d_ff, d): the paper's Fig. 3 models.
SETTINGS = {
  'regular': {'num_layers': 6, 'num_heads': 8, 'mlp_dim': 2048, 'emb_dim': 512},
  'small': {'num_layers': 6, 'num_heads': 1, 'mlp_dim': 64, 'emb_dim': 64},
}
# Benchmark variant -> registered attention name (None: the identity).
VARIANTS = {
  'softmax': 'softmax',
  'favor_softmax': 'favor',
  'favor_relu': 'favor',
  'local': 'local',
  'sparse': 'sparse',
  'identity': None,
}
VOCAB_SIZE = 256


class IdentityAttention(nnx.Module):
  """Attention replaced by the identity on the values (the upper bound)."""

  def __call__(self, q_BLHD, k_BLHD, v_BLHD, mask=None):
    del q_BLHD, k_BLHD, mask  # Nothing is mixed across positions.
    return v_BLHD


@dataclasses.dataclass
class Plan:
  """Validated flags."""

  settings: list[str]
  variants: list[str]
  lengths: list[int]
  # Per setting: the longest length run.
  max_length: dict[str, int]
  batch: int
  num_layers: int | None
  num_features: int
  window: int
  block_size: int
  warmup: int
  repeats: int
  seed: int
  budget_bytes: int | None


def build_parser() -> argparse.ArgumentParser:
  """The command-line interface."""
  p = argparse.ArgumentParser(
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
    '--settings',
    default='regular,small',
    help=f'comma-separated, from {list(SETTINGS)}.',
  )
  p.add_argument(
    '--variants',
    default=','.join(VARIANTS),
    help=f'comma-separated, from {list(VARIANTS)}.',
  )
  p.add_argument(
    '--min_length', type=int, default=512, help='first length (power of 2).'
  )
  p.add_argument(
    '--max_length',
    default='65536',
    help='last length tried (lengths double from --min_length): N for '
    'every setting, or SETTING=N,... per setting (unnamed ones: 65536).',
  )
  p.add_argument('--batch', type=int, default=1)
  p.add_argument(
    '--num_layers',
    type=int,
    default=None,
    help='override the depth of every setting.',
  )
  p.add_argument('--num_features', type=int, default=256, help='FAVOR+ M.')
  p.add_argument('--window', type=int, default=256, help='local window.')
  p.add_argument('--block_size', type=int, default=64, help='sparse block.')
  p.add_argument('--warmup', type=int, default=1, help='untimed calls.')
  p.add_argument(
    '--repeats', type=int, default=3, help='timed calls (median reported).'
  )
  p.add_argument('--seed', type=int, default=0)
  p.add_argument(
    '--max_peak_gib',
    type=float,
    default=None,
    help='skip configs whose estimated peak memory exceeds this many GiB '
    '(default: the device limit, or 80%% of RAM on a CPU; inf: no limit).',
  )
  p.add_argument('--json', default=None, help='write the records here.')
  p.add_argument('--png', default=None, help='write the plot here.')
  p.add_argument('--markdown', default=None, help='write the table here.')
  return p


def make_plan(args: argparse.Namespace) -> Plan:
  """Validates the flags.

  Raises:
    ValueError: naming the bad value and, where there is a list, the valid
      ones.
  """
  settings = _choices(args.settings, SETTINGS, '--settings')
  variants = _choices(args.variants, VARIANTS, '--variants')
  for flag in (
    'min_length',
    'batch',
    'num_features',
    'window',
    'block_size',
    'repeats',
  ):
    _positive_int(getattr(args, flag), f'--{flag}')
  if args.num_layers is not None:
    _positive_int(args.num_layers, '--num_layers')
  if args.warmup < 0:
    raise ValueError(f'--warmup must be >= 0, got {args.warmup}')
  _power_of_two(args.min_length, '--min_length')
  max_length = _max_lengths(args.max_length, settings)
  for setting, cap in max_length.items():
    if cap < args.min_length:
      raise ValueError(
        f'--max_length {setting}={cap} is below --min_length {args.min_length}'
      )
  lengths = []
  length = args.min_length
  while length <= max(max_length.values()):
    lengths.append(length)
    length *= 2
  if args.max_peak_gib is None:
    budget = bench.memory_budget_bytes()
  elif math.isnan(args.max_peak_gib) or args.max_peak_gib <= 0:
    raise ValueError(f'--max_peak_gib must be > 0, got {args.max_peak_gib}')
  elif math.isinf(args.max_peak_gib):
    budget = None
  else:
    budget = int(args.max_peak_gib * bench.GIB)
  return Plan(
    settings=settings,
    variants=variants,
    lengths=lengths,
    max_length=max_length,
    batch=args.batch,
    num_layers=args.num_layers,
    num_features=args.num_features,
    window=args.window,
    block_size=args.block_size,
    warmup=args.warmup,
    repeats=args.repeats,
    seed=args.seed,
    budget_bytes=budget,
  )


def model_config(plan: Plan, setting: str, variant: str, length: int):
  """The model config of one benchmark config (identity: built as softmax)."""
  config = model_lib.default_config()
  sizes = SETTINGS[setting]
  config.vocab_size = VOCAB_SIZE
  config.max_len = length
  config.emb_dim = sizes['emb_dim']
  config.qkv_dim = sizes['emb_dim']
  config.num_heads = sizes['num_heads']
  config.mlp_dim = sizes['mlp_dim']
  config.num_layers = plan.num_layers or sizes['num_layers']
  # No dropout: it would add random-number work that the paper's timing of
  # the attention mechanism does not ask for.
  config.dropout_rate = 0.0
  config.causal = False
  config.attention = VARIANTS[variant] or 'softmax'
  config.attention_options[config.attention].update(
    attention_options(plan, variant)
  )
  return config


def attention_options(plan: Plan, variant: str) -> dict[str, Any]:
  """The options passed to the registered attention of `variant`."""
  if variant in ('favor_softmax', 'favor_relu'):
    kernel = variant.removeprefix('favor_')
    return {'kernel': kernel, 'num_features': plan.num_features}
  if variant == 'local':
    return {'window': plan.window}
  if variant == 'sparse':
    return {'block_size': plan.block_size}
  return {}


def build_model(plan: Plan, setting: str, variant: str, length: int):
  """The model of one config, with the identity swapped in if asked for."""
  config = model_config(plan, setting, variant, length)
  model = model_lib.create_model(config, rngs=nnx.Rngs(plan.seed))
  if VARIANTS[variant] is None:
    blocks = [
      m for _, m in nnx.iter_graph(model) if isinstance(m, model_lib.Block)
    ]
    for block in blocks:
      block.attention = IdentityAttention()
  return model


def _forward_backward_fn(graphdef, rest):
  def loss(params, tokens_BL):
    model = nnx.merge(graphdef, params, rest)
    logits_BLV = model(tokens_BL)
    return optax.softmax_cross_entropy_with_integer_labels(
      logits_BLV, tokens_BL
    ).mean()

  def fwd_bwd(params, tokens_BL):
    return jax.value_and_grad(loss)(params, tokens_BL)

  return fwd_bwd


def benchmark_config(
  plan: Plan,
  setting: str,
  variant: str,
  length: int,
  info: dict[str, Any],
  skip: str | None = None,
) -> dict[str, Any]:
  """Benchmarks one (setting, variant, length); never raises for a config."""
  sizes = SETTINGS[setting]
  record = {
    'setting': setting,
    'variant': variant,
    'attention': VARIANTS[variant] or 'identity',
    'options': attention_options(plan, variant),
    'length': length,
    'batch': plan.batch,
    'num_layers': plan.num_layers or sizes['num_layers'],
    'num_heads': sizes['num_heads'],
    'mlp_dim': sizes['mlp_dim'],
    'emb_dim': sizes['emb_dim'],
    'vocab_size': VOCAB_SIZE,
    'status': None,
    'reason': None,
    'fwd_bwd_ms': None,
    'fwd_bwd_ms_min': None,
    'compile_s': None,
    'peak_bytes': None,
    'memory': None,
    'num_params': None,
    'warmup': plan.warmup,
    'repeats': plan.repeats,
    **info,
    'memory_budget_bytes': plan.budget_bytes,
  }
  if skip:
    record['status'], record['reason'] = 'skipped', skip
    return record
  compiled = None
  try:
    model = build_model(plan, setting, variant, length)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    record['num_params'] = sum(x.size for x in jax.tree.leaves(params))
    tokens_BL = jax.random.randint(
      jax.random.key(plan.seed), (plan.batch, length), 0, VOCAB_SIZE
    )
    compiled, compile_s = bench.compile_timed(
      _forward_backward_fn(graphdef, rest), params, tokens_BL
    )
    record['compile_s'] = compile_s
    stats = bench.memory_stats(compiled)
    record['memory'] = stats
    record['peak_bytes'] = stats['peak_bytes']
    budget = plan.budget_bytes
    if budget is not None and (stats['peak_bytes'] or 0) > budget:
      record['status'] = 'skipped'
      record['reason'] = (
        f'estimated peak {bench.format_bytes(stats["peak_bytes"])} exceeds '
        f'the budget {bench.format_bytes(budget)} (--max_peak_gib)'
      )
      return record
    timing = bench.time_executable(
      compiled, params, tokens_BL, warmup=plan.warmup, repeats=plan.repeats
    )
    record['fwd_bwd_ms'] = 1e3 * timing['median_s']
    record['fwd_bwd_ms_min'] = 1e3 * timing['min_s']
    record['status'] = 'ok'
  except Exception as e:  # noqa: BLE001 - recorded, the run goes on.
    record['status'] = 'oom' if bench.is_out_of_memory(e) else 'error'
    record['reason'] = bench.describe_error(e)
  finally:
    # Free the executable's buffers before the next, larger program.
    del compiled
    gc.collect()
  return record


def execute(
  plan: Plan,
  on_record: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
  """Runs every config; one record per (setting, variant, length)."""
  info = bench.device_info()
  records = []
  total = sum(
    len(plan.variants) * sum(n <= plan.max_length[s] for n in plan.lengths)
    for s in plan.settings
  )
  for setting in plan.settings:
    lengths = [n for n in plan.lengths if n <= plan.max_length[setting]]
    for variant in plan.variants:
      stop = None
      for length in lengths:
        record = benchmark_config(plan, setting, variant, length, info, stop)
        if stop is None and record['status'] in ('skipped', 'oom'):
          stop = f'a shorter length ({length}) did not fit'
        records.append(record)
        bench.log(f'[{len(records)}/{total}] {_summary(record)}')
        if on_record is not None:
          on_record(records)
  return records


def markdown(records: Sequence[dict[str, Any]]) -> str:
  """A context line, one table per setting (time and memory), reasons."""
  if not records:
    return 'No configs were run.\n'
  first = records[0]
  lines = [
    f'Device: {first["device_kind"]} ({first["backend"]}), jax '
    f'{first["jax_version"]}, float32, batch {first["batch"]}, vocabulary '
    f'{first["vocab_size"]}, bidirectional; forward + backward (gradients '
    f'of all parameters), median of {first["repeats"]} calls after '
    f"{first['warmup']} warm-up; peak memory is XLA's estimate.",
    '',
  ]
  for setting in dict.fromkeys(r['setting'] for r in records):
    rs = [r for r in records if r['setting'] == setting]
    s = rs[0]
    lines.append(
      f'**{setting}** ({s["num_layers"]} layers, {s["num_heads"]} heads, '
      f'd_ff {s["mlp_dim"]}, d {s["emb_dim"]}): fwd+bwd ms / peak memory'
    )
    lines.append('')
    variants = list(dict.fromkeys(r['variant'] for r in rs))
    lengths = sorted({r['length'] for r in rs})
    header = '| variant | ' + ' | '.join(f'L={n}' for n in lengths) + ' |'
    lines += [header, '|---|' + '---|' * len(lengths)]
    for variant in variants:
      cells = []
      for n in lengths:
        r = next(
          (x for x in rs if x['variant'] == variant and x['length'] == n), None
        )
        cells.append(_cell(r))
      lines.append(f'| {variant} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  notes = [r for r in records if r['reason']]
  for r in notes:
    lines.append(
      f'- {r["setting"]} {r["variant"]} L={r["length"]}: {r["status"]}, '
      f'{r["reason"]}'
    )
  return '\n'.join(lines).rstrip('\n') + '\n'


def plot(records: Sequence[dict[str, Any]], path: str) -> None:
  """Time and peak memory versus length; a row per setting."""
  first = records[0] if records else {}
  bench.plot_scaling(
    records,
    path,
    panels=[
      bench.Panel('fwd_bwd_ms', 'status', 'fwd+bwd time (ms)'),
      bench.Panel(
        'peak_bytes',
        'status',
        'fwd+bwd peak memory (MiB)',
        scale=1 / 2**20,
        show_skipped=True,
      ),
    ],
    series=lambda r: r['variant'],
    row=lambda r: r['setting'],
    title=(
      f'whole model, {first.get("device_kind", "")} '
      f'({first.get("backend", "")}), batch {first.get("batch")}; open '
      'markers: estimated, not run'
    ),
  )


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Parses flags, runs the benchmark, writes the outputs."""
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    plan = make_plan(args)
  except ValueError as e:
    parser.error(str(e))  # Exits with status 2 and the usage line.
  save = (lambda rs: bench.write_json(args.json, rs)) if args.json else None
  records = execute(plan, on_record=save)
  bench.report(
    records,
    markdown(records),
    png_path=args.png,
    markdown_path=args.markdown,
    plot=plot,
  )
  return records


def _cell(record: dict[str, Any] | None) -> str:
  if record is None:
    return ''
  if record['status'] == 'ok':
    return (
      f'{bench.format_ms(record["fwd_bwd_ms"])} / '
      f'{bench.format_bytes(record["peak_bytes"])}'
    )
  return record['status']


def _choices(text: str, valid, flag: str) -> list[str]:
  items = [x.strip() for x in str(text).split(',')]
  for item in items:
    if item not in valid:
      raise ValueError(f'{flag}: unknown value {item!r}; valid: {list(valid)}')
  return items


def _max_lengths(text: str, settings: Sequence[str]) -> dict[str, int]:
  """--max_length as {setting: cap}: one N for all, or SETTING=N items."""
  caps = dict.fromkeys(settings, 65536)
  for item in (x.strip() for x in str(text).split(',')):
    name, sep, value = item.rpartition('=')
    if sep and name not in SETTINGS:
      raise ValueError(
        f'--max_length: unknown setting {name!r}; valid: {list(SETTINGS)}'
      )
    try:
      number = int(value)
    except ValueError:
      number = value  # Not an int: _positive_int names it.
    _positive_int(number, '--max_length')
    _power_of_two(number, '--max_length')
    if sep:
      if name in caps:
        caps[name] = number
    else:
      caps = dict.fromkeys(settings, number)
  return caps


def _power_of_two(value: int, flag: str) -> None:
  if value & (value - 1):
    raise ValueError(f'{flag}: {value} is not a power of two')


def _positive_int(value, flag: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ValueError(f'{flag}: {value!r} is not a positive integer')
  return value


def _summary(record: dict[str, Any]) -> str:
  parts = [f'{record["setting"]} {record["variant"]} L={record["length"]}']
  if record['fwd_bwd_ms'] is not None:
    parts.append(f'fwd+bwd {bench.format_ms(record["fwd_bwd_ms"])} ms')
  if record['peak_bytes'] is not None:
    parts.append(f'peak {bench.format_bytes(record["peak_bytes"])}')
  parts.append(record['status'])
  if record['reason']:
    parts.append(record['reason'])
  return ', '.join(parts)


if __name__ == '__main__':
  main()
