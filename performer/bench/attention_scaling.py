"""Attention alone: time and peak memory of each variant versus length.

`make_plan` checks the flags of scripts/benchmark_attention.py (whose
docstring, its --help, says what each record field measures), `execute`
runs every (variant, causal, length) through `benchmark_config`, and
`markdown` and `plot` draw the table and the PNG from the records.
"""

import argparse
import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from performer import attention
from performer.bench import flags, flops, grid, plots, report, timing
from performer.model import DTYPES

MODES = ('fwd', 'fwd_bwd')
_MODE_TITLES = {'fwd': 'fwd', 'fwd_bwd': 'fwd+bwd'}
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
  timing: timing.Settings
  # Per variant: the options passed to attention.create.
  options: dict[str, dict[str, Any]]
  # Per (variant, causal): why attention.create refuses it.
  unsupported: dict[tuple[str, bool], str]
  max_length: dict[str, int]
  flops: bool
  matmul_peak: bool
  matmul_size: int


def make_plan(args: argparse.Namespace) -> Plan:
  """Validates the parsed flags.

  Args:
    args: the flags of scripts/benchmark_attention.py, parsed.

  Returns:
    The plan to run.

  Raises:
    ValueError: naming the bad value (and the valid ones where there is a
      list), for any invalid flag.
  """
  registered = attention.names()
  variants = flags.split_list(args.variants, '--variants')
  if variants == ['all']:
    variants = registered
  flags.check_choices(variants, registered, '--variants', 'attention variant')
  lengths = [
    flags.positive_int(x, '--lengths')
    for x in flags.split_list(args.lengths, '--lengths')
  ]
  modes = flags.check_choices(
    flags.split_list(args.mode, '--mode'), MODES, '--mode', 'mode'
  )
  causal = {'both': [False, True], 'true': [True], 'false': [False]}
  flags.check_choices([args.causal], causal, '--causal')
  flags.check_choices([args.dtype], DTYPES, '--dtype', 'dtype')
  for flag in ('batch', 'heads', 'head_dim', 'matmul_size'):
    flags.positive_int(getattr(args, flag), f'--{flag}')
  timed = flags.timing_settings(args)

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
    errors = refusals(
      name,
      causal[args.causal],
      args.head_dim,
      timed.seed,
      options[name],
      max_len=max(lengths),
      num_heads=args.heads,
    )
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
    flags.check_choices([name], registered, '--max_length', 'attention variant')
    max_length[name] = flags.positive_int(value, '--max_length')

  return Plan(
    variants=variants,
    causal=causal[args.causal],
    lengths=lengths,
    modes=modes,
    dtype=args.dtype,
    batch=args.batch,
    heads=args.heads,
    head_dim=args.head_dim,
    timing=timed,
    options=options,
    unsupported=unsupported,
    max_length=max_length,
    flops=args.flops,
    matmul_peak=args.matmul_peak,
    matmul_size=args.matmul_size,
  )


def refusals(
  name: str,
  causal_modes: Sequence[bool],
  head_dim: int,
  seed: int,
  options: dict[str, Any],
  *,
  max_len: int,
  num_heads: int,
) -> dict[bool, str]:
  """Why `attention.create` refuses the variant, per refused causal mode.

  Args:
    name: the variant.
    causal_modes: the modes to try.
    head_dim: size of each head.
    seed: of the module's rngs.
    options: passed to `attention.create`.
    max_len: the longest length it will be run at, and
    num_heads: its heads, for variants sized by them
      (`attention.with_sizes`).

  Returns:
    causal -> the ValueError's message, for each mode that is refused (a
    bidirectional-only variant refuses causal=True, say).
  """
  errors = {}
  options = attention.with_sizes(
    name, options, max_len=max_len, num_heads=num_heads
  )
  for causal in causal_modes:
    try:
      attention.create(
        name, head_dim=head_dim, causal=causal, rngs=nnx.Rngs(seed), **options
      )
    except ValueError as e:
      errors[causal] = str(e)
  return errors


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
  """Validates the flags and runs every config.

  Args:
    args: the flags of scripts/benchmark_attention.py, parsed.

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
  info = timing.device_info()
  peak = None
  if plan.matmul_peak:
    peak = timing.matmul_peak(
      plan.matmul_size,
      DTYPES[plan.dtype],
      warmup=plan.timing.warmup,
      repeats=plan.timing.repeats,
    )
    report.log(
      f'matmul peak: {peak["gflops_per_s"]:.1f} GFLOP/s '
      f'({peak["size"]}^3, {peak["dtype"]})'
    )
  configs = [
    (name, causal, length)
    for name in plan.variants
    for causal in plan.causal
    for length in plan.lengths
  ]
  return grid.execute(
    configs,
    lambda config, _: benchmark_config(plan, *config, info, peak),
    describe=_progress,
    on_record=on_record,
  )


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
    info: `timing.device_info()`, copied into the record.
    matmul: the `timing.matmul_peak` result, or None.

  Returns:
    The record (its fields: scripts/benchmark_attention.py's docstring).
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
    **plan.timing.record_fields(info),
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
    # Variants with learned [max_len, ...] parameters are sized to this run.
    sized = attention.with_sizes(
      name, plan.options[name], max_len=length, num_heads=plan.heads
    )
    module = attention.create(
      name,
      head_dim=plan.head_dim,
      causal=causal,
      rngs=nnx.Rngs(plan.timing.seed),
      **sized,
    )
    graphdef, state = nnx.split(module)
    shape = (plan.batch, length, plan.heads, plan.head_dim)
    keys = jax.random.split(jax.random.key(plan.timing.seed), 3)
    q, k, v = (jax.random.normal(x, shape, DTYPES[plan.dtype]) for x in keys)
    jax.block_until_ready((q, k, v))
  except Exception as e:  # noqa: BLE001 - recorded, the run goes on.
    for mode in plan.modes:
      record[f'{mode}_status'] = timing.failure_status(e)
    reasons.append(f'setup: {timing.describe_error(e)}')
    return

  model = flops.flops_model(name, causal, resolved) if plan.flops else None
  record['flops_model'] = model
  if model and model.startswith('favor'):
    record['feature_dim'] = flops.feature_dim(resolved, plan.head_dim)
  fns = {
    'fwd': _forward_fn(graphdef),
    'fwd_bwd': _forward_backward_fn(graphdef),
  }
  for mode in plan.modes:
    result = plan.timing.measure(
      lambda mode=mode: (fns[mode], (state, q, k, v)), xla_flops=plan.flops
    )
    record[f'{mode}_status'] = result['status']
    record[f'{mode}_compile_s'] = result['compile_s']
    record[f'{mode}_memory'] = result['memory']
    record[f'{mode}_peak_bytes'] = result['peak_bytes']
    if plan.flops:
      record[f'{mode}_xla_flops'] = result['xla_flops']
    if result['reason']:
      reasons.append(f'{mode}: {result["reason"]}')
    if result['status'] != 'ok':
      continue
    record[f'{mode}_ms'] = 1e3 * result['median_s']
    record[f'{mode}_ms_min'] = 1e3 * result['min_s']
    if model:
      forward = flops.forward_flops(
        model,
        batch=plan.batch,
        heads=plan.heads,
        length=length,
        head_dim=plan.head_dim,
        options=resolved,
      )
      count = forward if mode == 'fwd' else flops.FWD_BWD_FACTOR * forward
      rate = count / result['median_s'] / 1e9
      record[f'{mode}_flops'] = count
      record[f'{mode}_gflops_per_s'] = rate
      if matmul:
        record[f'{mode}_peak_fraction'] = rate / matmul['gflops_per_s']


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


def markdown(records: Sequence[dict[str, Any]]) -> str:
  """The results as markdown: a context line, a table, then any reasons."""
  if not records:
    return 'No configs were run.\n'
  first = records[0]
  lines = [
    f'{report.device_line(first)}, {first["dtype"]}, batch '
    f'{first["batch"]}, {first["heads"]} heads, head_dim '
    f'{first["head_dim"]}; median of {first["repeats"]} calls after '
    f"{first['warmup']} warm-up; peak memory is XLA's estimate for the "
    'compiled program.',
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
    ('fwd_ms', 'fwd ms', report.format_ms),
    ('fwd_bwd_ms', 'fwd+bwd ms', report.format_ms),
    ('fwd_peak_bytes', 'fwd peak', report.format_bytes),
    ('peak_bytes', 'fwd+bwd peak', report.format_bytes),
    ('compile_s', 'compile s', lambda s: '-' if s is None else f'{s:.2f}'),
  ]
  if any(r.get('flops_model') for r in records):
    columns.append(('fwd_bwd_gflops_per_s', 'fwd+bwd GFLOP/s', _fmt_rate))
  if any(r.get('fwd_bwd_peak_fraction') for r in records):
    columns.append(('fwd_bwd_peak_fraction', 'of matmul peak', _fmt_fraction))
  columns.append(('status', 'status', str))
  lines.append(report.markdown_table(records, columns).rstrip('\n'))
  notes = report.reason_notes(records, _head)
  if notes:
    lines += ['', *notes]
  return '\n'.join(lines).rstrip('\n') + '\n'


def plot(records: Sequence[dict[str, Any]], path: str) -> None:
  """Writes the PNG: per causal mode, time per mode and peak memory."""
  modes = [m for m in MODES if any(r[f'{m}_status'] for r in records)]
  mem_mode = 'fwd_bwd' if 'fwd_bwd' in modes else (modes or ['fwd'])[0]
  panels = [
    plots.Panel(f'{m}_ms', f'{m}_status', f'{_MODE_TITLES[m]} time (ms)')
    for m in modes
  ]
  panels.append(
    plots.Panel(
      f'{mem_mode}_peak_bytes',
      f'{mem_mode}_status',
      f'{_MODE_TITLES[mem_mode]} peak memory (MiB)',
      scale=1 / 2**20,
      show_skipped=True,
    )
  )
  first = records[0] if records else {}
  plots.plot_scaling(
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
    flags.check_choices([name], registered, '--option', 'attention variant')
    overrides.setdefault(name, {})[key] = flags.parse_value(text)
  return overrides


def _head(record: dict[str, Any]) -> str:
  causal = 'causal' if record['causal'] else 'bidirectional'
  return f'{record["variant"]} {causal} L={record["length"]}'


def _progress(record: dict[str, Any]) -> str:
  times = [(mode, record[f'{mode}_ms']) for mode in MODES]
  return report.progress_line(_head(record), times, record)


def _fmt_rate(rate: float | None) -> str:
  return '-' if rate is None else f'{rate:.1f}'


def _fmt_fraction(fraction: float | None) -> str:
  return '-' if fraction is None else f'{100 * fraction:.0f}%'
