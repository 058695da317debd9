r"""Benchmarks attention variants: time and peak memory versus length.

For each (variant, causal, length) the script builds the module with
`attention.create`, jits a forward function and a forward+backward function,
compiles both ahead of time, reads XLA's memory estimate, skips the config
when the estimate exceeds the budget, and otherwise times the compiled
executables. Every config becomes one JSON record, whatever happened to it
(`status` is 'ok', 'skipped', 'oom', 'error' or 'partial'); one bad config
never stops the run.

What is measured:
  fwd: out = attn(q, k, v), q, k, v of shape [batch, length, heads,
    head_dim] in --dtype, no mask.
  fwd_bwd: the gradients of loss = sum(out**2) (in float32) with respect to
    q, k and v: one forward and one backward pass, as in training. A squared
    loss gives a data-dependent output gradient, so XLA cannot simplify the
    backward pass away.
  *_ms: the median wall time of --repeats calls after --warmup untimed
    calls, each waited on with jax.block_until_ready. Compilation is timed
    apart (*_compile_s: tracing, lowering and compiling); compile_s is the
    sum over the modes run.
  *_peak_bytes: XLA's static estimate for the compiled program,
      argument_size + output_size + temp_size - alias_size
    from `compiled.memory_analysis()` (performer/benchmark.py explains why;
    the raw fields are kept in *_memory). peak_bytes is the fwd_bwd one.
    --max_peak_gib is checked against this estimate before running; its
    default is the accelerator's allocator limit, or 80% of RAM on a CPU.

FLOPs (--flops), with B batch, H heads, L length, D head_dim, M the
feature dimension (num_features; twice that for the 'softmax_trig' kernel,
a sin and a cos per random row; head_dim for projection='none'), C
chunk_size:
  favor_bidirectional (favor without causal, and favor_scan, whose per-token
    prefix scan does the same products), forward: 2BHLMD for each of the q
    and k feature maps, 2BHLMD for the M x D key-value summary, 2BHLMD for
    the output and 4BHLM for the normalizer: 8BHLMD + 4BHLM.
  favor_chunked (causal favor), forward: the same plus the masked C x C
    products inside each chunk, 2BHLCM + 2BHLCD (C capped at L).
  softmax_dense, forward: 4BHL^2D (QK^T and PV; XLA computes the masked
    causal product in full too).
  fwd_bwd: 3x the forward (the backward pass costs about twice the forward).
  The record names its formula (flops_model) and M (feature_dim). Achieved
  GFLOP/s is the count over the median time; with --matmul_peak it is also
  given as a fraction of the rate of a large dense matmul (--matmul_size,
  in --dtype) on the same device. XLA's own count is kept as *_xla_flops
  for comparison. Variants without a formula get null FLOP fields.

Outputs: a JSON list of records (--json), a PNG with, per causal mode, time
versus length for each mode and peak memory versus length, log-log, one line
per variant (--png), and a markdown table printed to stdout (--markdown
also writes it to a file).

CPU targets (B=1, H=8, D=64, M=256, float32; the same command runs on a
GPU with another --json/--png/--markdown):

  python scripts/benchmark_attention.py \
    --variants softmax,favor,favor_scan,local,sparse \
    --lengths 1024,2048,4096,8192,16384,32768,65536 \
    --max_length softmax=8192 --causal both --mode fwd,fwd_bwd \
    --batch 1 --heads 8 --head_dim 64 --num_features 256 \
    --window 256 --block_size 64 --dtype float32 --repeats 3 --warmup 1 \
    --flops --matmul_peak \
    --json docs/benchmarks/attention_cpu.json \
    --png docs/benchmarks/attention_cpu.png \
    --markdown docs/benchmarks/attention_cpu.md
"""

import argparse
import ast
import dataclasses
import gc
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from performer import attention
from performer import benchmark as bench

MODES = ('fwd', 'fwd_bwd')
DTYPES = {
  'float32': jnp.float32,
  'bfloat16': jnp.bfloat16,
  'float16': jnp.float16,
}
# Command-line flags that set the option of the same name, for the variants
# that accept it (attention.options(name)); --option overrides them.
GENERIC_OPTIONS = ('num_features', 'window', 'block_size')
# Options copied to top-level record fields (null for variants without).
RECORD_OPTIONS = ('num_features', 'window', 'block_size', 'chunk_size')


@dataclasses.dataclass
class Plan:
  """A validated benchmark plan (everything `make_plan` checked)."""

  variants: list[str]
  causal: list[bool]
  lengths: list[int]
  modes: list[str]
  dtype: str
  batch: int
  heads: int
  head_dim: int
  warmup: int
  repeats: int
  seed: int
  # Per variant: the options passed to attention.create.
  options: dict[str, dict[str, Any]]
  # Per (variant, causal): why attention.create refuses it.
  unsupported: dict[tuple[str, bool], str]
  max_length: dict[str, int]
  budget_bytes: int | None
  flops: bool
  matmul_peak: bool
  matmul_size: int


def build_parser() -> argparse.ArgumentParser:
  """The command-line interface."""
  p = argparse.ArgumentParser(
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
    '--variants',
    default='all',
    help='comma-separated registered variants, or "all" (default).',
  )
  p.add_argument(
    '--lengths',
    default='1024,2048,4096,8192',
    help='comma-separated sequence lengths.',
  )
  p.add_argument('--causal', default='both', choices=('both', 'true', 'false'))
  p.add_argument(
    '--mode', default='fwd,fwd_bwd', help='comma-separated: fwd, fwd_bwd.'
  )
  p.add_argument('--batch', type=int, default=1)
  p.add_argument('--heads', type=int, default=8)
  p.add_argument('--head_dim', type=int, default=64)
  p.add_argument(
    '--num_features',
    type=int,
    default=256,
    help='random features, for variants with a num_features option.',
  )
  p.add_argument(
    '--window', type=int, default=256, help='for variants with a window.'
  )
  p.add_argument(
    '--block_size',
    type=int,
    default=64,
    help='for variants with a block_size option.',
  )
  p.add_argument('--dtype', default='float32', choices=sorted(DTYPES))
  p.add_argument('--warmup', type=int, default=1, help='untimed calls.')
  p.add_argument(
    '--repeats', type=int, default=5, help='timed calls (median reported).'
  )
  p.add_argument('--seed', type=int, default=0)
  p.add_argument(
    '--option',
    action='append',
    default=[],
    metavar='VARIANT.KEY=VALUE',
    help='a variant option, e.g. favor.chunk_size=128 (repeatable; values '
    'are Python literals, else strings).',
  )
  p.add_argument(
    '--max_length',
    action='append',
    default=[],
    metavar='VARIANT=N',
    help='skip lengths above N for VARIANT, e.g. softmax=8192 (repeatable '
    'or comma-separated).',
  )
  p.add_argument(
    '--max_peak_gib',
    type=float,
    default=None,
    help='skip configs whose estimated peak memory exceeds this many GiB '
    '(default: the device limit, or 80%% of RAM on a CPU; inf: no limit).',
  )
  p.add_argument(
    '--flops',
    action='store_true',
    help='report achieved GFLOP/s for variants with a FLOP formula.',
  )
  p.add_argument(
    '--matmul_peak',
    action='store_true',
    help='measure a large dense matmul to report FLOP/s as a fraction.',
  )
  p.add_argument('--matmul_size', type=int, default=4096)
  p.add_argument('--json', default=None, help='write the records here.')
  p.add_argument('--png', default=None, help='write the plot here.')
  p.add_argument('--markdown', default=None, help='write the table here.')
  return p


def make_plan(args: argparse.Namespace) -> Plan:
  """Validates the parsed flags.

  Args:
    args: flags from `build_parser().parse_args`.

  Returns:
    The plan to run.

  Raises:
    ValueError: naming the bad value (and the valid ones where there is a
      list), for any invalid flag.
  """
  registered = attention.names()
  variants = _split(args.variants, '--variants')
  if variants == ['all']:
    variants = registered
  for name in variants:
    if name not in registered:
      raise ValueError(
        f'--variants: unknown attention variant {name!r}; registered '
        f'variants: {registered}'
      )
  lengths = [_positive_int(x, '--lengths') for x in _split(args.lengths)]
  modes = _split(args.mode, '--mode')
  for mode in modes:
    if mode not in MODES:
      raise ValueError(f'--mode: unknown mode {mode!r}; valid: {list(MODES)}')
  causal = {'both': [False, True], 'true': [True], 'false': [False]}
  if args.causal not in causal:
    raise ValueError(f'--causal must be one of {sorted(causal)}')
  if args.dtype not in DTYPES:
    raise ValueError(f'--dtype: unknown {args.dtype!r}; valid: {list(DTYPES)}')
  for flag in ('batch', 'heads', 'head_dim', 'repeats', 'matmul_size'):
    _positive_int(getattr(args, flag), f'--{flag}')
  if isinstance(args.warmup, bool) or args.warmup < 0:
    raise ValueError(f'--warmup must be >= 0, got {args.warmup!r}')

  overrides = _parse_option_flags(args.option, registered)
  options = {}
  for name in variants:
    accepted = attention.options(name)
    opts = {
      key: getattr(args, key) for key in GENERIC_OPTIONS if key in accepted
    }
    for key, value in overrides.get(name, {}).items():
      if key not in accepted:
        raise ValueError(
          f'--option: unknown option {key!r} for attention {name!r}; valid '
          f'options: {accepted}'
        )
      opts[key] = value
    options[name] = opts

  unsupported = {}
  for name in variants:
    errors = {}
    for c in causal[args.causal]:
      try:
        attention.create(
          name,
          head_dim=args.head_dim,
          causal=c,
          rngs=nnx.Rngs(args.seed),
          **options[name],
        )
      except ValueError as e:
        errors[c] = str(e)
    if len(errors) == len(causal[args.causal]):
      # Refused in every requested mode: the options themselves are bad.
      raise ValueError(
        f'attention {name!r} with options {options[name]}: '
        f'{next(iter(errors.values()))}'
      )
    unsupported.update({(name, c): err for c, err in errors.items()})

  max_length = {}
  for item in (x for arg in args.max_length for x in arg.split(',')):
    name, sep, value = item.strip().partition('=')
    if not sep:
      raise ValueError(f'--max_length expects VARIANT=N, got {item!r}')
    if name not in registered:
      raise ValueError(
        f'--max_length: unknown attention variant {name!r}; registered '
        f'variants: {registered}'
      )
    max_length[name] = _positive_int(value, '--max_length')

  if args.max_peak_gib is None:
    budget = bench.memory_budget_bytes()
  elif math.isnan(args.max_peak_gib) or args.max_peak_gib <= 0:
    raise ValueError(f'--max_peak_gib must be > 0, got {args.max_peak_gib}')
  elif math.isinf(args.max_peak_gib):
    budget = None
  else:
    budget = int(args.max_peak_gib * bench.GIB)

  return Plan(
    variants=variants,
    causal=causal[args.causal],
    lengths=lengths,
    modes=modes,
    dtype=args.dtype,
    batch=args.batch,
    heads=args.heads,
    head_dim=args.head_dim,
    warmup=args.warmup,
    repeats=args.repeats,
    seed=args.seed,
    options=options,
    unsupported=unsupported,
    max_length=max_length,
    budget_bytes=budget,
    flops=args.flops,
    matmul_peak=args.matmul_peak,
    matmul_size=args.matmul_size,
  )


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
  """Validates the flags and runs every config.

  Args:
    args: flags from `build_parser().parse_args`.

  Returns:
    One record per (variant, causal, length), in that order.

  Raises:
    ValueError: for invalid flags (see `make_plan`).
  """
  return execute(make_plan(args))


def execute(
  plan: Plan,
  on_record: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
  """Runs every config of a plan; returns one record per config.

  Args:
    plan: what to run.
    on_record: called with the records so far after each config, so that a
      long run stopped part-way keeps what it measured.
  """
  info = bench.device_info()
  peak = None
  if plan.matmul_peak:
    peak = bench.matmul_peak(
      plan.matmul_size,
      DTYPES[plan.dtype],
      warmup=plan.warmup,
      repeats=plan.repeats,
    )
    bench.log(
      f'matmul peak: {peak["gflops_per_s"]:.1f} GFLOP/s '
      f'({peak["size"]}^3, {peak["dtype"]})'
    )
  configs = [
    (name, causal, length)
    for name in plan.variants
    for causal in plan.causal
    for length in plan.lengths
  ]
  records = []
  for i, (name, causal, length) in enumerate(configs):
    record = benchmark_config(plan, name, causal, length, info, peak)
    records.append(record)
    bench.log(f'[{i + 1}/{len(configs)}] {_summary(record)}')
    if on_record is not None:
      on_record(records)
  return records


def benchmark_config(
  plan: Plan,
  name: str,
  causal: bool,
  length: int,
  info: dict[str, Any],
  matmul: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Benchmarks one (variant, causal, length); never raises for a config.

  Args:
    plan: the validated plan.
    name: the variant.
    causal: causal or bidirectional.
    length: the sequence length.
    info: `bench.device_info()`, copied into the record.
    matmul: the `bench.matmul_peak` result, or None.

  Returns:
    The record (see the module docstring).
  """
  resolved = _resolved_options(name, plan.options[name])
  record = {
    'variant': name,
    'causal': causal,
    'length': length,
    'batch': plan.batch,
    'heads': plan.heads,
    'head_dim': plan.head_dim,
    **{key: resolved.get(key) for key in RECORD_OPTIONS},
    'options': resolved,
    'dtype': plan.dtype,
    # Summary fields, filled in below; the per-mode details follow.
    'status': None,
    'reason': None,
    'fwd_ms': None,
    'fwd_bwd_ms': None,
    'fwd_peak_bytes': None,
    'peak_bytes': None,
    'compile_s': None,
    'warmup': plan.warmup,
    'repeats': plan.repeats,
    **info,
    'memory_budget_bytes': plan.budget_bytes,
    'matmul_peak_gflops_per_s': matmul and matmul['gflops_per_s'],
    'matmul_peak_dtype': matmul and matmul['dtype'],
  }
  for mode in MODES:
    record.update(
      {
        f'{mode}_status': None,
        f'{mode}_ms': None,
        f'{mode}_ms_min': None,
        f'{mode}_compile_s': None,
        f'{mode}_peak_bytes': None,
        # The raw fields of compiled.memory_analysis().
        f'{mode}_memory': None,
        f'{mode}_flops': None,
        f'{mode}_xla_flops': None,
        f'{mode}_gflops_per_s': None,
        f'{mode}_peak_fraction': None,
      }
    )
  record['flops_model'] = None
  record['feature_dim'] = None
  reasons = []
  limit = plan.max_length.get(name)
  skip = None
  if (name, causal) in plan.unsupported:
    skip = f'unsupported: {plan.unsupported[name, causal]}'
  elif limit is not None and length > limit:
    skip = f'length above --max_length {name}={limit}'
  if skip:
    for mode in plan.modes:
      record[f'{mode}_status'] = 'skipped'
    reasons.append(skip)
  else:
    _run_modes(plan, record, resolved, matmul, reasons)

  statuses = [record[f'{mode}_status'] for mode in plan.modes]
  if len(set(statuses)) == 1:
    record['status'] = statuses[0]
  else:
    record['status'] = 'partial'
  record['reason'] = '; '.join(reasons) or None
  compile_times = [record[f'{m}_compile_s'] for m in plan.modes]
  compile_times = [t for t in compile_times if t is not None]
  record['compile_s'] = sum(compile_times) if compile_times else None
  record['peak_bytes'] = record['fwd_bwd_peak_bytes']
  return record


def _run_modes(
  plan: Plan,
  record: dict[str, Any],
  resolved: dict[str, Any],
  matmul: dict[str, Any] | None,
  reasons: list[str],
) -> None:
  """Compiles, checks and times each mode, writing into `record`."""
  name, causal, length = record['variant'], record['causal'], record['length']
  try:
    module = attention.create(
      name,
      head_dim=plan.head_dim,
      causal=causal,
      rngs=nnx.Rngs(plan.seed),
      **plan.options[name],
    )
    graphdef, state = nnx.split(module)
    shape = (plan.batch, length, plan.heads, plan.head_dim)
    keys = jax.random.split(jax.random.key(plan.seed), 3)
    q, k, v = (jax.random.normal(x, shape, DTYPES[plan.dtype]) for x in keys)
    jax.block_until_ready((q, k, v))
  except Exception as e:  # noqa: BLE001 - recorded, the run goes on.
    for mode in plan.modes:
      record[f'{mode}_status'] = _error_status(e)
    reasons.append(f'setup: {bench.describe_error(e)}')
    return

  flops_model = _flops_model(name, causal, resolved) if plan.flops else None
  record['flops_model'] = flops_model
  if flops_model and flops_model.startswith('favor'):
    record['feature_dim'] = feature_dim(resolved, plan.head_dim)
  fns = {
    'fwd': _forward_fn(graphdef),
    'fwd_bwd': _forward_backward_fn(graphdef),
  }
  for mode in plan.modes:
    compiled = None
    try:
      compiled, compile_s = bench.compile_timed(fns[mode], state, q, k, v)
      record[f'{mode}_compile_s'] = compile_s
      stats = bench.memory_stats(compiled)
      record[f'{mode}_memory'] = stats
      record[f'{mode}_peak_bytes'] = stats['peak_bytes']
      if plan.flops:
        record[f'{mode}_xla_flops'] = bench.cost_flops(compiled)
      budget = plan.budget_bytes
      if budget is not None and (stats['peak_bytes'] or 0) > budget:
        record[f'{mode}_status'] = 'skipped'
        reasons.append(
          f'{mode}: estimated peak {bench.format_bytes(stats["peak_bytes"])} '
          f'exceeds the budget {bench.format_bytes(budget)} (--max_peak_gib)'
        )
        continue
      timing = bench.time_executable(
        compiled, state, q, k, v, warmup=plan.warmup, repeats=plan.repeats
      )
      record[f'{mode}_ms'] = 1e3 * timing['median_s']
      record[f'{mode}_ms_min'] = 1e3 * timing['min_s']
      record[f'{mode}_status'] = 'ok'
      if flops_model:
        fwd_flops = _forward_flops(flops_model, plan, length, resolved)
        flops = fwd_flops if mode == 'fwd' else 3 * fwd_flops
        rate = flops / timing['median_s'] / 1e9
        record[f'{mode}_flops'] = flops
        record[f'{mode}_gflops_per_s'] = rate
        if matmul:
          record[f'{mode}_peak_fraction'] = rate / matmul['gflops_per_s']
    except Exception as e:  # noqa: BLE001 - recorded, the run goes on.
      record[f'{mode}_status'] = _error_status(e)
      reasons.append(f'{mode}: {bench.describe_error(e)}')
    finally:
      # Free the executable's buffers before the next, larger program.
      del compiled
      gc.collect()


def _forward_fn(graphdef):
  def fwd(state, q_BLHD, k_BLHD, v_BLHD):
    return nnx.merge(graphdef, state)(q_BLHD, k_BLHD, v_BLHD)

  return fwd


def _forward_backward_fn(graphdef):
  def loss(q_BLHD, k_BLHD, v_BLHD, state):
    out_BLHD = nnx.merge(graphdef, state)(q_BLHD, k_BLHD, v_BLHD)
    return jnp.sum(jnp.square(out_BLHD.astype(jnp.float32)))

  def fwd_bwd(state, q_BLHD, k_BLHD, v_BLHD):
    return jax.grad(loss, argnums=(0, 1, 2))(q_BLHD, k_BLHD, v_BLHD, state)

  return fwd_bwd


def _flops_model(name: str, causal: bool, options: dict) -> str | None:
  """Which FLOP formula of the module docstring applies, if any."""
  if name == 'softmax':
    return 'softmax_dense'
  if name in ('favor', 'favor_scan') and options.get('num_features'):
    if name == 'favor' and causal and options.get('chunk_size'):
      return 'favor_chunked'
    return 'favor_bidirectional'
  return None


def favor_flops(
  b: int,
  h: int,
  l: int,
  m: int,
  d: int,
  *,
  chunk_size: int | None = None,
) -> int:
  """Forward FLOPs of FAVOR+ (see the module docstring).

  Args:
    b: batch.
    h: heads.
    l: length.
    m: random features.
    d: head dim.
    chunk_size: the causal chunk C, or None for bidirectional attention
      (or a prefix scan, which has no intra-chunk products).

  Returns:
    8BHLMD + 4BHLM, plus 2BHLCM + 2BHLCD when chunked.
  """
  flops = 8 * b * h * l * m * d + 4 * b * h * l * m
  if chunk_size:
    c = min(chunk_size, l)
    flops += 2 * b * h * l * c * m + 2 * b * h * l * c * d
  return flops


def softmax_flops(b: int, h: int, l: int, d: int) -> int:
  """Forward FLOPs of dense softmax attention: 4BHL^2D."""
  return 4 * b * h * l * l * d


def _forward_flops(model: str, plan: Plan, length: int, options: dict) -> int:
  b, h, d = plan.batch, plan.heads, plan.head_dim
  if model == 'softmax_dense':
    return softmax_flops(b, h, length, d)
  chunk = options['chunk_size'] if model == 'favor_chunked' else None
  m = feature_dim(options, d)
  return favor_flops(b, h, length, m, d, chunk_size=chunk)


def feature_dim(options: dict, head_dim: int) -> int:
  """M of the FLOP formula: the FAVOR+ feature dimension for `options`."""
  if options.get('projection') == 'none':
    return head_dim
  m = options['num_features']
  return 2 * m if options.get('kernel') == 'softmax_trig' else m


def markdown(records: Sequence[dict[str, Any]]) -> str:
  """The results as markdown: a context line, a table, then any reasons."""
  if not records:
    return 'No configs were run.\n'
  first = records[0]
  lines = [
    f'Device: {first["device_kind"]} ({first["backend"]}), jax '
    f'{first["jax_version"]}, {first["dtype"]}, batch {first["batch"]}, '
    f'{first["heads"]} heads, head_dim {first["head_dim"]}; median of '
    f'{first["repeats"]} calls after {first["warmup"]} warm-up; peak memory '
    "is XLA's estimate for the compiled program.",
    '',
  ]
  seen = {}
  for r in records:
    seen.setdefault(r['variant'], r['options'])
  for name, opts in seen.items():
    text = ', '.join(f'{k}={v}' for k, v in opts.items()) or 'defaults'
    lines.append(f'- `{name}`: {text}')
  if first.get('matmul_peak_gflops_per_s'):
    lines.append(
      f'- dense matmul peak: {first["matmul_peak_gflops_per_s"]:.1f} '
      f'GFLOP/s ({first["matmul_peak_dtype"]})'
    )
  lines.append('')
  columns = [
    ('variant', 'variant', str),
    ('causal', 'causal', lambda c: 'yes' if c else 'no'),
    ('length', 'L', str),
    ('fwd_ms', 'fwd ms', bench.format_ms),
    ('fwd_bwd_ms', 'fwd+bwd ms', bench.format_ms),
    ('fwd_peak_bytes', 'fwd peak', bench.format_bytes),
    ('peak_bytes', 'fwd+bwd peak', bench.format_bytes),
    ('compile_s', 'compile s', lambda s: '-' if s is None else f'{s:.2f}'),
  ]
  if any(r.get('flops_model') for r in records):
    columns.append(('fwd_bwd_gflops_per_s', 'fwd+bwd GFLOP/s', _fmt_rate))
  if any(r.get('fwd_bwd_peak_fraction') for r in records):
    columns.append(('fwd_bwd_peak_fraction', 'of matmul peak', _fmt_fraction))
  columns.append(('status', 'status', str))
  lines.append(bench.markdown_table(records, columns).rstrip('\n'))
  notes = [r for r in records if r['reason']]
  if notes:
    lines.append('')
    for r in notes:
      causal = 'causal' if r['causal'] else 'bidirectional'
      lines.append(
        f'- {r["variant"]} {causal} L={r["length"]}: {r["status"]}, '
        f'{r["reason"]}'
      )
  return '\n'.join(lines).rstrip('\n') + '\n'


def plot(records: Sequence[dict[str, Any]], path: str) -> None:
  """Writes the PNG: per causal mode, time per mode and peak memory."""
  modes = [m for m in MODES if any(r[f'{m}_status'] for r in records)]
  mem_mode = 'fwd_bwd' if 'fwd_bwd' in modes else (modes or ['fwd'])[0]
  panels = [
    bench.Panel(f'{m}_ms', f'{m}_status', f'{_MODE_TITLES[m]} time (ms)')
    for m in modes
  ]
  panels.append(
    bench.Panel(
      f'{mem_mode}_peak_bytes',
      f'{mem_mode}_status',
      f'{_MODE_TITLES[mem_mode]} peak memory (MiB)',
      scale=1 / 2**20,
      show_skipped=True,
    )
  )
  first = records[0] if records else {}
  bench.plot_scaling(
    records,
    path,
    panels=panels,
    series=_label,
    row=lambda r: 'causal' if r['causal'] else 'bidirectional',
    title=(
      f'{first.get("device_kind", "")} ({first.get("backend", "")}), '
      f'{first.get("dtype", "")}, B={first.get("batch")} '
      f'H={first.get("heads")} D={first.get("head_dim")}; open markers: '
      'estimated, not run'
    ),
  )


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Parses flags, runs the benchmark, writes the outputs.

  Args:
    argv: command-line arguments without the program name; sys.argv[1:]
      when None.

  Returns:
    The records.
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    plan = make_plan(args)
  except ValueError as e:
    parser.error(str(e))  # Exits with status 2 and the usage line.
  # The JSON is rewritten after every config: a run stopped part-way (hours
  # at long lengths on a CPU) keeps every record it finished.
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


_MODE_TITLES = {'fwd': 'fwd', 'fwd_bwd': 'fwd+bwd'}


def _label(record: dict[str, Any]) -> str:
  parts = [
    f'{short}={record[key]}'
    for key, short in (
      ('num_features', 'M'),
      ('window', 'W'),
      ('block_size', 'block'),
    )
    if record.get(key) is not None
  ]
  return (
    f'{record["variant"]} ({", ".join(parts)})'
    if parts
    else (record['variant'])
  )


def _resolved_options(name: str, opts: dict[str, Any]) -> dict[str, Any]:
  """The variant's defaults updated with `opts` (required ones left out)."""
  defaults = {
    k: v
    for k, v in attention.defaults(name).items()
    if v is not inspect.Parameter.empty
  }
  return {**defaults, **opts}


def _parse_option_flags(
  items: Sequence[str], registered: Sequence[str]
) -> dict[str, dict[str, Any]]:
  overrides: dict[str, dict[str, Any]] = {}
  for item in items:
    target, sep, text = item.partition('=')
    name, dot, key = target.partition('.')
    if not sep or not dot or not name or not key:
      raise ValueError(f'--option expects VARIANT.KEY=VALUE, got {item!r}')
    if name not in registered:
      raise ValueError(
        f'--option: unknown attention variant {name!r}; registered '
        f'variants: {list(registered)}'
      )
    overrides.setdefault(name, {})[key] = _parse_value(text)
  return overrides


def _parse_value(text: str) -> Any:
  lowered = text.strip().lower()
  if lowered in ('true', 'false'):
    return lowered == 'true'
  if lowered == 'none':
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # A bare word such as relu.


def _split(text: str, flag: str = '--lengths') -> list[str]:
  items = [x.strip() for x in str(text).split(',')]
  if not items or any(not x for x in items):
    raise ValueError(f'{flag}: expected a comma-separated list, got {text!r}')
  return items


def _positive_int(value, flag: str) -> int:
  """`value` (an int or its text) as a positive int, else a ValueError."""
  if isinstance(value, bool):
    number = None
  elif isinstance(value, int):
    number = value
  else:
    try:
      number = int(str(value).strip())
    except ValueError:
      number = None
  if number is None or number <= 0:
    raise ValueError(f'{flag}: {value!r} is not a positive integer')
  return number


def _error_status(error: BaseException) -> str:
  return 'oom' if bench.is_out_of_memory(error) else 'error'


def _summary(record: dict[str, Any]) -> str:
  causal = 'causal' if record['causal'] else 'bidirectional'
  parts = [f'{record["variant"]} {causal} L={record["length"]}']
  for mode in MODES:
    if record[f'{mode}_ms'] is not None:
      parts.append(f'{mode} {bench.format_ms(record[f"{mode}_ms"])} ms')
  if record['peak_bytes'] is not None:
    parts.append(f'peak {bench.format_bytes(record["peak_bytes"])}')
  parts.append(record['status'])
  if record['reason']:
    parts.append(record['reason'])
  return ', '.join(parts)


def _fmt_rate(rate: float | None) -> str:
  return '-' if rate is None else f'{rate:.1f}'


def _fmt_fraction(fraction: float | None) -> str:
  return '-' if fraction is None else f'{100 * fraction:.0f}%'


if __name__ == '__main__':
  main()
