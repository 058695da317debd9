"""The whole model: forward+backward time and peak memory versus length.

The Performer paper's Fig. 3. `make_plan` checks the flags of
scripts/benchmark_model.py (whose docstring, its --help, says what is
measured), `execute` runs every (setting, variant, length) through
`benchmark_config` until the memory runs out, and `markdown` and `plot`
draw the tables and the PNG from the records.
"""

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import optax
from flax import nnx

from performer import model as model_lib
from performer.bench import flags, grid, plots, report, timing

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
# --remat values: model.remat off or on.
REMAT = ('off', 'on')


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
  timing: timing.Settings
  # Per-block rematerialization settings to run (model.remat).
  remat: list[bool] = dataclasses.field(default_factory=lambda: [False])


def make_plan(args: argparse.Namespace) -> Plan:
  """Validates the flags of scripts/benchmark_model.py, parsed.

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
  ):
    flags.positive_int(getattr(args, flag), f'--{flag}')
  if args.num_layers is not None:
    flags.positive_int(args.num_layers, '--num_layers')
  timed = flags.timing_settings(args)
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
  remat = [
    {'off': False, 'on': True}[x]
    for x in _choices(getattr(args, 'remat', 'off'), REMAT, '--remat')
  ]
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
    timing=timed,
    remat=list(dict.fromkeys(remat)),
  )


def model_config(
  plan: Plan, setting: str, variant: str, length: int, remat: bool = False
):
  """The model config of one benchmark config (identity: built as softmax)."""
  config = model_lib.default_config()
  config.remat = remat
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


def build_model(
  plan: Plan, setting: str, variant: str, length: int, remat: bool = False
):
  """The model of one config, with the identity swapped in if asked for."""
  config = model_config(plan, setting, variant, length, remat)
  model = model_lib.create_model(config, rngs=nnx.Rngs(plan.timing.seed))
  if VARIANTS[variant] is None:
    blocks = [
      m for _, m in nnx.iter_graph(model) if isinstance(m, model_lib.Block)
    ]
    for block in blocks:
      block.attention = IdentityAttention()
  return model


def _loss_fn(graphdef, rest):
  def loss(params, tokens_BL):
    # copy=True, as the trainer does: fresh variables at this trace level,
    # which a rematerialized block may update (FAVOR+'s projection).
    model = nnx.merge(graphdef, params, rest, copy=True)
    logits_BLV = model(tokens_BL)
    return optax.softmax_cross_entropy_with_integer_labels(
      logits_BLV, tokens_BL
    ).mean()

  return loss


def residual_bytes(loss: Callable, *args) -> int:
  """Bytes the backward pass keeps from the forward pass (JAX's view).

  The leaves of the VJP closure, shapes only (nothing runs): what
  rematerialization removes, whatever the compiler's scheduling then does
  with the peak (see docs/benchmarks.md).
  """
  shapes = jax.eval_shape(lambda *a: jax.vjp(loss, *a)[1], *args)
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def _forward_backward_fn(graphdef, rest):
  loss = _loss_fn(graphdef, rest)

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
  remat: bool = False,
) -> dict[str, Any]:
  """Benchmarks one (setting, variant, length); never raises for a config.

  With `remat` the record's variant is labelled '<variant>+remat'.
  """
  sizes = SETTINGS[setting]
  record = {
    'setting': setting,
    'variant': variant + '+remat' * remat,
    'remat': remat,
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
    'residual_bytes': None,
    'memory': None,
    'num_params': None,
    **plan.timing.record_fields(info),
  }
  if skip:
    record['status'], record['reason'] = 'skipped', skip
    return record

  def build():
    model = build_model(plan, setting, variant, length, remat)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    record['num_params'] = sum(x.size for x in jax.tree.leaves(params))
    tokens_BL = jax.random.randint(
      jax.random.key(plan.timing.seed), (plan.batch, length), 0, VOCAB_SIZE
    )
    record['residual_bytes'] = residual_bytes(
      _loss_fn(graphdef, rest), params, tokens_BL
    )
    return _forward_backward_fn(graphdef, rest), (params, tokens_BL)

  result = plan.timing.measure(build)
  for key in ('status', 'reason', 'compile_s', 'memory', 'peak_bytes'):
    record[key] = result[key]
  if result['status'] == 'ok':
    record['fwd_bwd_ms'] = 1e3 * result['median_s']
    record['fwd_bwd_ms_min'] = 1e3 * result['min_s']
  return record


def execute(
  plan: Plan,
  on_record: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
  """Runs every config; one record per (setting, variant, length).

  The lengths of a (setting, variant) are tried in increasing order; after
  the first one that is over the budget or out of memory the longer ones
  are recorded as skipped without compiling.
  """
  info = timing.device_info()
  configs = [
    (setting, variant, remat, length)
    for setting in plan.settings
    for variant in plan.variants
    for remat in plan.remat
    for length in plan.lengths
    if length <= plan.max_length[setting]
  ]

  def run(config, skip):
    setting, variant, remat, length = config
    return benchmark_config(
      plan, setting, variant, length, info, skip, remat=remat
    )

  return grid.execute(
    configs,
    run,
    describe=_progress,
    on_record=on_record,
    group=lambda config: config[:3],
    stop_reason=_did_not_fit,
  )


def markdown(records: Sequence[dict[str, Any]]) -> str:
  """A context line, one table per setting (time and memory), reasons."""
  if not records:
    return 'No configs were run.\n'
  first = records[0]
  lines = [
    f'{report.device_line(first)}, float32, batch {first["batch"]}, '
    f'vocabulary {first["vocab_size"]}, bidirectional; forward + backward '
    f'(gradients of all parameters), median of {first["repeats"]} calls '
    f"after {first['warmup']} warm-up; peak memory is XLA's estimate.",
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
    lines += _longest_fit_lines(rs, variants)
  lines += report.reason_notes(records, _head)
  return '\n'.join(lines).rstrip('\n') + '\n'


def _longest_fit_lines(rs, variants) -> list[str]:
  """Per variant, the longest length that ran (within the budget) and
  what its backward pass keeps there."""
  cells = []
  for variant in variants:
    mine = [r for r in rs if r['variant'] == variant]
    ok = [r for r in mine if r['status'] == 'ok']
    if not ok:
      cells.append(f'{variant} none')
      continue
    best = max(ok, key=lambda r: r['length'])
    cell = f'{variant} {best["length"]}'
    if best['length'] == max(r['length'] for r in mine):
      cell += ' (the longest tried)'
    if best.get('residual_bytes'):
      kept = report.format_bytes(best['residual_bytes'])
      cell += f', {kept} kept for the backward pass'
    cells.append(cell)
  return ['Longest length that ran: ' + '; '.join(cells) + '.', '']


def plot(records: Sequence[dict[str, Any]], path: str) -> None:
  """Time and peak memory versus length; a row per setting."""
  first = records[0] if records else {}
  plots.plot_scaling(
    records,
    path,
    panels=[
      plots.Panel('fwd_bwd_ms', 'status', 'fwd+bwd time (ms)'),
      plots.Panel(
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


def _did_not_fit(record: dict[str, Any]) -> str | None:
  if record['status'] in ('skipped', 'oom'):
    return f'a shorter length ({record["length"]}) did not fit'
  return None


def _cell(record: dict[str, Any] | None) -> str:
  if record is None:
    return ''
  if record['status'] == 'ok':
    return (
      f'{report.format_ms(record["fwd_bwd_ms"])} / '
      f'{report.format_bytes(record["peak_bytes"])}'
    )
  return record['status']


def _choices(text: str, valid, flag: str) -> list[str]:
  return flags.check_choices(flags.split_list(text, flag), valid, flag)


def _max_lengths(text: str, settings: Sequence[str]) -> dict[str, int]:
  """--max_length as {setting: cap}: one N for all, or SETTING=N items."""
  caps = dict.fromkeys(settings, 65536)
  for item in flags.split_list(text, '--max_length'):
    name, sep, value = item.rpartition('=')
    if sep:
      flags.check_choices([name], SETTINGS, '--max_length', 'setting')
    number = flags.positive_int(value, '--max_length')
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


def _head(record: dict[str, Any]) -> str:
  return f'{record["setting"]} {record["variant"]} L={record["length"]}'


def _progress(record: dict[str, Any]) -> str:
  times = [('fwd+bwd', record['fwd_bwd_ms'])]
  return report.progress_line(_head(record), times, record)
