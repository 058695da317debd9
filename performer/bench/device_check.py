"""The device check: is the install right, which kernels run, how fast.

scripts/device_check.py is the command line. `run` prints the platform,
then runs four parts in order, each guarded (a failure is recorded as the
part's status with its reason and the next part still runs) and each
written to its JSON file as soon as it ends:

1. `cudnn`: exact softmax in bf16 through `jax.nn.dot_product_attention`
   (our `softmax` variant with implementation 'auto', as the trainer runs
   it, and 'cudnn' forced). Whether cuDNN's fused attention runs is read
   from the compiled program: XLA keeps it as a custom call whose target
   starts with `__cudnn$fmha` (`__cudnn$fmhaSoftmax` forward,
   `...Backward` for the gradient, `ScaleBias` when a padding mask is
   turned into a bias). When it is absent the record says why.
2. `attention`: forward+backward of every registered variant, causal and
   bidirectional, in bf16 then fp32, at L = 1K .. 64K (B=1, H=8, D=64,
   M=256 random features), through `attention_scaling.benchmark_config`;
   a length whose compiled program would not fit the device is skipped
   from XLA's estimate, and longer ones of that series with it.
3. `lra_text`: the LRA Text model at its published size (configs/lra_text.py:
   4 layers, emb 256, batch 32) trained on random padded bytes for a few
   hundred steps with softmax and FAVOR+, at L = 1K / 2K / 4K, beside LRA
   Table 2's steps/s.
4. `shakespeare`: the default job (configs/lm_shakespeare.py) through the
   real trainer at a GPU-sized model for a fixed number of steps; tokens/s
   from its own train log.

Time: the parts share `--budget_s` in fixed proportions (`SHARES`), and a
part's deadline is cumulative, so time a part leaves over goes to the next.
Before each measurement the part checks its deadline and records what it
had to leave out; the training runs are stopped by a SIGTERM at the
deadline, which the trainer answers with a checkpoint and a clean return.
`--smoke` runs every part at tiny sizes (on a CPU in seconds), which is
what the test suite does so that the script cannot rot.
"""

import contextlib
import dataclasses
import importlib.metadata
import os
import re
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from performer import attention, steps, tasks, workdir
from performer.attention import softmax
from performer.bench import attention_scaling, report, timing
from performer.bench import training_throughput as throughput

PARTS = ('cudnn', 'attention', 'lra_text', 'shakespeare')
# Each part's share of the budget (cumulative deadlines; see module doc).
SHARES = {'cudnn': 0.05, 'attention': 0.5, 'lra_text': 0.25, 'shakespeare': 0.2}
CUDNN_TARGET_PREFIX = '__cudnn$fmha'
# bf16 keeps 8 bits of mantissa: outputs of magnitude <= 1 round to within
# 2^-8; a kernel that computed the wrong thing is off by far more.
BF16_OUTPUT_ATOL = 2e-2
# LRA Table 2's steps/s (training_throughput), for softmax and favor here.
LRA_TABLE2_STEPS_PER_SEC = throughput.LRA_TABLE2_STEPS_PER_SEC
# Targets of the issue that asked for the check, reported against.
FAVOR_FASTER_FROM = 4096
FAVOR_SPEEDUP_AT_64K = 25.0


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Every size the parts use; `FULL` on an accelerator, `SMOKE` to test."""

  # Part 1.
  cudnn_length: int
  cudnn_heads: int
  cudnn_head_dim: int
  # Part 2.
  lengths: tuple[int, ...]
  heads: int
  head_dim: int
  num_features: int
  # Part 2: options set for every variant that has them (tiny lengths need
  # a smaller Reformer bucket than its default 64).
  attention_options: dict[str, Any]
  warmup: int
  repeats: int
  # Part 3: the LRA Text config's own model unless `lra_model` shrinks it.
  lra_lengths: tuple[int, ...]
  lra_steps: int
  lra_batch: int
  lra_model: dict[str, int] | None
  # Part 4.
  lm_model: dict[str, int]
  lm_seq_len: int
  lm_batch: int
  lm_steps: int
  lm_variants: tuple[str, ...]


FULL = Sizes(
  cudnn_length=4096,
  cudnn_heads=8,
  cudnn_head_dim=64,
  lengths=tuple(1024 * 2**i for i in range(7)),  # 1K .. 64K.
  heads=8,
  head_dim=64,
  num_features=256,
  attention_options={},
  warmup=1,
  repeats=3,
  lra_lengths=(1024, 2048, 4096),
  lra_steps=300,
  lra_batch=32,
  lra_model=None,
  lm_model={
    'num_layers': 6,
    'emb_dim': 512,
    'qkv_dim': 512,
    'num_heads': 8,
    'mlp_dim': 2048,
  },
  lm_seq_len=1024,
  lm_batch=32,
  lm_steps=300,
  lm_variants=('favor', 'softmax'),
)
SMOKE = Sizes(
  cudnn_length=64,
  cudnn_heads=2,
  cudnn_head_dim=16,
  lengths=(64,),
  heads=2,
  head_dim=16,
  num_features=16,
  attention_options={'bucket_size': 16},
  warmup=0,
  repeats=1,
  lra_lengths=(64,),
  lra_steps=3,
  lra_batch=2,
  lra_model={
    'num_layers': 1,
    'emb_dim': 32,
    'qkv_dim': 32,
    'num_heads': 2,
    'mlp_dim': 64,
  },
  lm_model={
    'num_layers': 1,
    'emb_dim': 32,
    'qkv_dim': 32,
    'num_heads': 2,
    'mlp_dim': 64,
  },
  lm_seq_len=32,
  lm_batch=2,
  lm_steps=4,
  lm_variants=('favor',),
)


class Budget:
  """The run's time: one deadline per part, cumulative (see module doc)."""

  def __init__(
    self,
    total_s: float,
    parts: Sequence[str] = PARTS,
    clock: Callable[[], float] = time.monotonic,
  ):
    self.total_s = total_s
    self._clock = clock
    self._start = clock()
    self.deadlines, used = {}, 0.0
    for part in parts:
      used += SHARES[part]
      self.deadlines[part] = used
    # The shares of the parts run, scaled so the last ends at the budget.
    for part in parts:
      self.deadlines[part] *= total_s / used

  def elapsed(self) -> float:
    """Seconds since the run started."""
    return self._clock() - self._start

  def left(self, part: str) -> float:
    """Seconds until `part`'s deadline (negative once it has passed)."""
    return self.deadlines[part] - self.elapsed()

  def note(self, part: str) -> str:
    """The reason recorded for what a part leaves out at its deadline."""
    return (
      f'time budget: part {part!r} had until {self.deadlines[part]:.0f} s of '
      f'the {self.total_s:.0f} s budget (--budget_s)'
    )


# ---------------------------------------------------------------------------
# The run.


def run(
  out_dir: str,
  *,
  budget_s: float,
  smoke: bool = False,
  parts: Sequence[str] = PARTS,
  data_dir: str = '',
) -> dict[str, Any]:
  """Runs the check; writes each part's JSON and the summary into `out_dir`.

  Args:
    out_dir: created if missing; gets platform.json, one <part>.json per
      part and summary.md.
    budget_s: seconds for the whole check (see `Budget`).
    smoke: tiny sizes (`SMOKE`) instead of `FULL`.
    parts: which of `PARTS` to run, in their order.
    data_dir: where part 4's Shakespeare data is prepared; '' for the
      config's default.

  Returns:
    part -> its result (a dict with 'status', 'reason' and the records);
    'platform' -> `platform_info()`.
  """
  sizes = SMOKE if smoke else FULL
  os.makedirs(out_dir, exist_ok=True)
  budget = Budget(budget_s, [p for p in PARTS if p in parts])
  results = {'platform': platform_info()}
  workdir.write_json(
    os.path.join(out_dir, 'platform.json'), results['platform']
  )
  report.log(describe_platform(results['platform']))
  runners = {
    'cudnn': lambda: check_cudnn(sizes),
    'attention': lambda: attention_speed(sizes, budget),
    'lra_text': lambda: lra_text_speed(sizes, budget),
    'shakespeare': lambda: shakespeare_throughput(sizes, budget, data_dir),
  }
  for part in PARTS:
    if part not in parts:
      continue
    path = os.path.join(out_dir, f'{part}.json')
    results[part] = run_part(part, runners[part], budget)
    results[part]['smoke'] = smoke
    workdir.write_json(path, results[part])
    report.log(f'{part}: {results[part]["status"]} -> {path}')
  text = summary(results)
  report.write_text(os.path.join(out_dir, 'summary.md'), text)
  print(text, flush=True)
  return results


def run_part(
  part: str, runner: Callable[[], dict[str, Any]], budget: Budget
) -> dict[str, Any]:
  """Runs one part; never raises for it.

  Returns:
    The runner's result with 'status' ('ok', or what the runner set),
    'reason' and 'wall_s'; on an exception, status 'error' (or 'oom')
    with the exception as the reason. A part whose deadline passed before
    it started is 'skipped'.
  """
  start = time.perf_counter()
  if budget.left(part) <= 0:
    result = {'status': 'skipped', 'reason': budget.note(part)}
  else:
    report.log(f'--- {part} (until {budget.deadlines[part]:.0f} s)')
    try:
      result = runner()
      result.setdefault('status', 'ok')
      result.setdefault('reason', None)
    except Exception as e:  # noqa: BLE001 - recorded, the next part runs.
      result = {
        'status': timing.failure_status(e),
        'reason': timing.describe_error(e),
      }
  result['part'] = part
  result['wall_s'] = time.perf_counter() - start
  return result


def platform_info() -> dict[str, Any]:
  """Platform, devices, versions of jax, jaxlib, the CUDA plugin and CUDA."""
  device = jax.devices()[0]
  info = timing.device_info(device)
  info['devices'] = [str(d) for d in jax.devices()]
  info['compute_capability'] = getattr(device, 'compute_capability', None)
  info['memory_limit_bytes'] = timing.memory_budget_bytes(device)
  info['packages'] = {}
  for name in (
    'flax',
    'optax',
    'jax-cuda12-plugin',
    'jax-cuda12-pjrt',
    'jax-cuda13-plugin',
    'jax-cuda13-pjrt',
    'nvidia-cudnn-cu12',
    'nvidia-cudnn-cu13',
  ):
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
      info['packages'][name] = importlib.metadata.version(name)
  info['cuda'] = _cuda_versions()
  try:
    info['platform_version'] = device.client.platform_version
  except Exception:  # noqa: BLE001 - not every client says.
    info['platform_version'] = None
  return info


def _cuda_versions() -> dict[str, Any]:
  """CUDA runtime, driver, cuDNN, cuBLAS versions from jax's CUDA plugin."""
  try:
    from jax._src.lib import cuda_versions  # Only with a CUDA plugin.
  except ImportError:
    return {}
  if cuda_versions is None:
    return {}
  versions = {}
  for name in sorted(dir(cuda_versions)):
    if not name.endswith('_version') or name.startswith('_'):
      continue
    with contextlib.suppress(Exception):
      versions[name] = getattr(cuda_versions, name)()
  return versions


def describe_platform(info: dict[str, Any]) -> str:
  """The platform as the lines printed first."""
  lines = [
    f'platform: {info["backend"]}, {info["device_count"]} x '
    f'{info["device_kind"]}'
    + (
      f' (compute capability {info["compute_capability"]})'
      if info['compute_capability']
      else ''
    ),
    f'devices: {", ".join(info["devices"])}',
    f'jax {info["jax_version"]}, jaxlib {info["jaxlib_version"]}'
    + ''.join(f', {k} {v}' for k, v in info['packages'].items()),
  ]
  if info['cuda']:
    lines.append(
      'CUDA: ' + ', '.join(f'{k}={v}' for k, v in info['cuda'].items())
    )
  if info['platform_version']:
    lines.append(f'platform version: {info["platform_version"]}')
  return '\n'.join(lines)


# ---------------------------------------------------------------------------
# 1. cuDNN.


def custom_call_targets(compiled) -> list[str]:
  """The custom-call targets in a compiled program's HLO, in order."""
  return re.findall(r'custom_call_target="([^"]+)"', compiled.as_text())


def check_cudnn(sizes: Sizes) -> dict[str, Any]:
  """Part 1: which kernel exact softmax attention compiles to in bf16.

  Three cases (bidirectional, causal, bidirectional with a padding mask),
  each with implementation 'auto' and 'cudnn'; for each the forward and
  the forward+backward program's cuDNN targets, XLA's peak estimate (a
  mask turned into a dense bias would show as an L^2 term) and the
  forward's largest deviation from the float32 einsum reference.

  Returns:
    'records' (one per case and implementation), 'cudnn_used' (whether
    the 'auto' path, the trainer's, used cuDNN in every case) and
    'reason' (why not, when it did not).
  """
  length, heads, dim = (
    sizes.cudnn_length,
    sizes.cudnn_heads,
    sizes.cudnn_head_dim,
  )
  keys = jax.random.split(jax.random.key(0), 3)
  q, k, v = (
    jax.random.normal(x, (1, length, heads, dim), jnp.bfloat16) for x in keys
  )
  padded_mask = (jnp.arange(length) < (3 * length) // 4)[None]
  cases = [
    ('bidirectional', False, None),
    ('causal', True, None),
    ('padding mask', False, padded_mask),
  ]
  records = []
  for case, causal, mask in cases:
    for impl in ('auto', 'cudnn'):
      records.append(_cudnn_case(case, causal, mask, impl, q, k, v))
      report.log(_cudnn_line(records[-1]))
  auto = [r for r in records if r['implementation'] == 'auto']
  used = all(r['cudnn_used'] for r in auto)
  reason = None
  if not used:
    reason = '; '.join(
      f'{r["case"]}: {r["reason"]}' for r in auto if not r['cudnn_used']
    )
  return {
    'length': length,
    'heads': heads,
    'head_dim': dim,
    'dtype': 'bfloat16',
    'cudnn_used': used,
    'reason': reason,
    'records': records,
  }


def _cudnn_case(case, causal, mask, impl, q, k, v) -> dict[str, Any]:
  """One case of part 1 (see `check_cudnn`); never raises."""
  record = {
    'case': case,
    'causal': causal,
    'implementation': impl,
    'status': None,
    'cudnn_used': False,
    'fwd_cudnn_targets': None,
    'fwd_bwd_cudnn_targets': None,
    'fwd_peak_bytes': None,
    'fwd_bwd_peak_bytes': None,
    'max_abs_error': None,
    'matches_reference': None,
    'reason': None,
  }
  module = softmax.SoftmaxAttention(
    head_dim=q.shape[-1], causal=causal, rngs=nnx.Rngs(0), implementation=impl
  )

  def fwd(q, k, v):
    return module(q, k, v, mask)

  def fwd_bwd(q, k, v):
    def loss(q, k, v):
      return jnp.sum(jnp.square(fwd(q, k, v).astype(jnp.float32)))

    return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

  try:
    for mode, fn in (('fwd', fwd), ('fwd_bwd', fwd_bwd)):
      compiled, _ = timing.compile_timed(fn, q, k, v)
      found = [
        t
        for t in custom_call_targets(compiled)
        if t.startswith(CUDNN_TARGET_PREFIX)
      ]
      record[f'{mode}_cudnn_targets'] = found
      record[f'{mode}_peak_bytes'] = timing.memory_stats(compiled)['peak_bytes']
      if mode == 'fwd':
        out = compiled(q, k, v).astype(jnp.float32)
        expected = softmax.softmax_reference(
          q.astype(jnp.float32),
          k.astype(jnp.float32),
          v.astype(jnp.float32),
          mask,
          causal,
        )
        error = float(jnp.max(jnp.abs(out - expected)))
        record['max_abs_error'] = error
        record['matches_reference'] = error <= BF16_OUTPUT_ATOL
    record['cudnn_used'] = bool(
      record['fwd_cudnn_targets'] and record['fwd_bwd_cudnn_targets']
    )
    record['status'] = 'ok'
  except Exception as e:  # noqa: BLE001 - the failure is the finding.
    record['status'] = timing.failure_status(e)
    record['reason'] = timing.describe_error(e)
    return record
  if not record['cudnn_used']:
    record['reason'] = _why_no_cudnn(impl, q.dtype)
  return record


def _why_no_cudnn(impl: str, dtype) -> str:
  """Why a program compiled without cuDNN's fused attention."""
  backend = jax.default_backend()
  if backend != 'gpu':
    return (
      f"backend is {backend!r}: cuDNN's fused attention exists only on "
      "NVIDIA GPUs, so implementation 'auto' uses XLA"
    )
  if impl == 'auto' and dtype not in (jnp.bfloat16, jnp.float16):
    return f"'auto' uses cuDNN only for bf16/fp16 inputs, not {dtype}"
  return (
    f'the compiled program has no {CUDNN_TARGET_PREFIX}* custom call '
    f'(implementation {impl!r})'
  )


def _cudnn_line(r: dict[str, Any]) -> str:
  used = 'cuDNN' if r['cudnn_used'] else 'no cuDNN'
  err = r['max_abs_error']
  return (
    f'  {r["case"]:14s} {r["implementation"]:5s} {r["status"]}: {used}'
    + (f', max |err| {err:.2e}' if err is not None else '')
    + (f' ({r["reason"]})' if r['reason'] else '')
  )


# ---------------------------------------------------------------------------
# 2. Attention speed.


def attention_plans(sizes: Sizes) -> list[attention_scaling.Plan]:
  """Part 2's plans, most wanted first: bf16 before fp32.

  Within a plan softmax and FAVOR+ come first (the targets compare them),
  then the other variants in registry order.
  """
  first = [n for n in ('softmax', 'favor') if n in attention.names()]
  variants = first + [n for n in attention.names() if n not in first]
  settings = timing.Settings(
    warmup=sizes.warmup,
    repeats=sizes.repeats,
    seed=0,
    budget_bytes=timing.memory_budget_bytes(),
  )
  wanted = {'num_features': sizes.num_features, **sizes.attention_options}
  options = {
    name: {k: v for k, v in wanted.items() if k in attention.options(name)}
    for name in variants
  }
  unsupported = {}
  for name in variants:
    errors = attention_scaling.refusals(
      name,
      (True, False),
      sizes.head_dim,
      0,
      options[name],
      max_len=max(sizes.lengths),
      num_heads=sizes.heads,
    )
    unsupported.update({(name, c): e for c, e in errors.items()})
  return [
    attention_scaling.Plan(
      variants=variants,
      causal=[True, False],
      lengths=list(sizes.lengths),
      modes=['fwd_bwd'],
      dtype=dtype,
      batch=1,
      heads=sizes.heads,
      head_dim=sizes.head_dim,
      timing=settings,
      options=options,
      unsupported=unsupported,
      max_length={},
      flops=False,
      matmul_peak=False,
      matmul_size=0,
    )
    for dtype in ('bfloat16', 'float32')
  ]


def attention_speed(sizes: Sizes, budget: Budget) -> dict[str, Any]:
  """Part 2: forward+backward time and peak memory of every variant.

  A series (variant, causal, dtype) stops at its first length that is not
  'ok' (too big for the device, or failing): every longer one is recorded
  as skipped with that reason, without compiling it.

  Returns:
    'records' (`attention_scaling.benchmark_config` records) and
    'targets' (`favor_targets` of the bf16 records).
  """
  info = timing.device_info()
  records = []
  left_out = 0
  for plan in attention_plans(sizes):
    for name in plan.variants:
      for causal in plan.causal:
        stopped = None
        for length in plan.lengths:
          if stopped is None and budget.left('attention') <= 0:
            stopped = budget.note('attention')
          if stopped:
            records.append(
              _skipped_attention(plan, name, causal, length, stopped, info)
            )
            left_out += stopped.startswith('time budget')
            continue
          record = attention_scaling.benchmark_config(
            plan, name, causal, length, info
          )
          _add_device_peak(record)
          records.append(record)
          report.log(_attention_line(record))
          if record['status'] != 'ok':
            stopped = f'after L={length}: {record["reason"]}'
  bf16 = [r for r in records if r['dtype'] == 'bfloat16']
  return {
    'status': 'partial' if left_out else 'ok',
    'reason': f'{left_out} configs left out at the deadline'
    if left_out
    else None,
    'targets': favor_targets(bf16),
    'records': records,
  }


def _attention_line(r: dict[str, Any]) -> str:
  causal = 'causal' if r['causal'] else 'bidirectional'
  head = f'  {r["dtype"]} {r["variant"]} {causal} L={r["length"]}'
  if r['status'] != 'ok':
    return f'{head}: {r["status"]} ({r["reason"]})'
  return (
    f'{head}: {report.format_ms(r["fwd_bwd_ms"])} ms, peak '
    f'{report.format_bytes(r["peak_bytes"])}'
  )


def _skipped_attention(plan, name, causal, length, reason, info):
  """The record of a config not run (see `attention_speed`)."""
  return {
    'variant': name,
    'causal': causal,
    'length': length,
    'dtype': plan.dtype,
    'batch': plan.batch,
    'heads': plan.heads,
    'head_dim': plan.head_dim,
    'options': plan.options[name],
    'status': 'skipped',
    'reason': reason,
    'fwd_bwd_ms': None,
    'peak_bytes': None,
    **info,
  }


def _add_device_peak(record: dict[str, Any]) -> None:
  """Adds the allocator's high-water mark so far, where the device has one.

  It only grows during the process, so it measures a config only when it
  rises past the previous configs'; XLA's estimate ('peak_bytes') is per
  program.
  """
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - a CPU has no allocator statistics.
    stats = {}
  record['device_peak_bytes_so_far'] = stats.get('peak_bytes_in_use')


def favor_targets(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Causal FAVOR+ against causal softmax, forward+backward, per length.

  Args:
    records: part 2's records of one dtype.

  Returns:
    'speedup' (L -> softmax ms / favor ms, where both ran), 'faster_from'
    (the shortest L from which FAVOR+ is faster at every measured longer
    length; None if at none), and whether the targets (faster from L <=
    `FAVOR_FASTER_FROM`, at least `FAVOR_SPEEDUP_AT_64K` x at 64K) are met;
    None when a number is missing.
  """

  def times(name):
    return {
      r['length']: r['fwd_bwd_ms']
      for r in records
      if r['variant'] == name and r['causal'] and r['fwd_bwd_ms']
    }

  base, favor = times('softmax'), times('favor')
  speedup = {n: base[n] / favor[n] for n in sorted(base) if n in favor}
  faster_from = None
  for n in sorted(speedup, reverse=True):
    if speedup[n] <= 1:
      break
    faster_from = n
  at_64k = speedup.get(65536)
  return {
    'speedup': {str(n): s for n, s in speedup.items()},
    'faster_from': faster_from,
    'faster_from_target': FAVOR_FASTER_FROM,
    'faster_from_met': None
    if not speedup
    else faster_from is not None and faster_from <= FAVOR_FASTER_FROM,
    'speedup_at_64k': at_64k,
    'speedup_at_64k_target': FAVOR_SPEEDUP_AT_64K,
    'speedup_at_64k_met': None
    if at_64k is None
    else at_64k >= FAVOR_SPEEDUP_AT_64K,
  }


# ---------------------------------------------------------------------------
# 3. LRA Text.


def lra_text_config(variant: str, length: int, sizes: Sizes):
  """configs/lra_text.py for `variant` at `length`, in bf16, resolved."""
  from configs import lra_text  # The configs package needs no data code.

  config = lra_text.get_config(f'attention={variant},length={length}')
  with config.unlocked():
    config.dtype = 'bfloat16'
    config.batch_size = sizes.lra_batch
    # The LRA byte tokenizer: 256 bytes shifted by one, 0 for padding.
    config.model.vocab_size = config.model.vocab_size or 257
    for key, value in (sizes.lra_model or {}).items():
      config.model[key] = value
  return config.copy_and_resolve_references()


def lra_text_speed(sizes: Sizes, budget: Budget) -> dict[str, Any]:
  """Part 3: LRA Text training steps/s, softmax and FAVOR+, per length.

  Returns:
    'records' (per variant and length: steps run, steps/s, XLA's peak
    estimate of the train step, LRA Table 2's steps/s) and
    'favor_over_softmax' (L -> our ratio and LRA's).
  """
  configs_ = [(v, n) for n in sizes.lra_lengths for v in ('softmax', 'favor')]
  records = []
  for i, (variant, length) in enumerate(configs_):
    left = budget.left('lra_text')
    record = {
      'variant': variant,
      'length': length,
      'batch_size': sizes.lra_batch,
      'dtype': 'bfloat16',
      'lra_table2_steps_per_sec': LRA_TABLE2_STEPS_PER_SEC[variant].get(length),
    }
    if left <= 0:
      record.update(status='skipped', reason=budget.note('lra_text'))
      records.append(record)
      continue
    config = lra_text_config(variant, length, sizes)
    record['model'] = {
      k: config.model[k]
      for k in ('num_layers', 'emb_dim', 'num_heads', 'qkv_dim', 'mlp_dim')
    }
    record['attention_options'] = config.model.attention_options[
      variant
    ].to_dict()
    batch = throughput.classification_batch(
      sizes.lra_batch,
      length,
      config.model.vocab_size,
      config.model.num_classes,
    )
    # An equal share of what is left for each config still to run.
    deadline = time.monotonic() + left / (len(configs_) - i)
    record.update(
      _time_train_steps(
        config, batch, tasks.TASKS['classification'], sizes, deadline
      )
    )
    _add_device_peak(record)
    records.append(record)
    report.log(
      f'  {variant} L={length}: {record["status"]}'
      + (
        f', {record["steps_per_sec"]:.2f} steps/s over {record["steps"]} '
        f'steps, peak {report.format_bytes(record["peak_bytes"])}'
        if record['status'] == 'ok'
        else f' ({record["reason"]})'
      )
    )
  return {
    'status': 'ok' if all(r['status'] == 'ok' for r in records) else 'partial',
    'records': records,
    'favor_over_softmax': _lra_ratios(records),
  }


def _time_train_steps(config, batch, task, sizes, deadline) -> dict[str, Any]:
  """Compiles the trainer's step once, then runs it until done or deadline.

  Steps run back to back, as in training (the state is donated and each
  step feeds the next); the clock is read after blocking on every 10th
  step, so steps/s is a throughput, not a per-step latency.
  """
  result = {'status': None, 'reason': None, 'steps': 0}
  try:
    graphdef, state = throughput.train_state(config)
    options = steps.StepOptions(task=task)
    key = jax.random.key(0)
    start = time.perf_counter()
    compiled = steps.train_step.lower(
      graphdef, state, batch, key, options
    ).compile()
    result['compile_s'] = time.perf_counter() - start
    result['peak_bytes'] = timing.memory_stats(compiled)['peak_bytes']
    for _ in range(max(sizes.warmup, 1)):
      state, metrics = compiled(state, batch, key)
    jax.block_until_ready(metrics)
    done, start = 0, time.perf_counter()
    while done < sizes.lra_steps and time.monotonic() < deadline:
      for _ in range(min(10, sizes.lra_steps - done)):
        state, metrics = compiled(state, batch, key)
        done += 1
      jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - start
    result['steps'] = done
    result['loss'] = float(metrics['loss'])
    if done:
      result['steps_per_sec'] = done / elapsed
      result['status'] = 'ok'
    else:
      result.update(status='skipped', reason='no time left after compiling')
  except Exception as e:  # noqa: BLE001 - recorded, the next config runs.
    result['status'] = timing.failure_status(e)
    result['reason'] = timing.describe_error(e)
  return result


def _lra_ratios(records) -> dict[str, dict[str, float | None]]:
  """L -> FAVOR+ steps/s over softmax's, ours and LRA Table 2's."""
  rate = {
    (r['variant'], r['length']): r.get('steps_per_sec')
    for r in records
    if r['status'] == 'ok'
  }
  ratios = {}
  for length in sorted({r['length'] for r in records}):
    ours = None
    if rate.get(('softmax', length)) and rate.get(('favor', length)):
      ours = rate['favor', length] / rate['softmax', length]
    theirs = None
    if length in LRA_TABLE2_STEPS_PER_SEC['softmax']:
      theirs = (
        LRA_TABLE2_STEPS_PER_SEC['favor'][length]
        / LRA_TABLE2_STEPS_PER_SEC['softmax'][length]
      )
    ratios[str(length)] = {'ours': ours, 'lra_table2': theirs}
  return ratios


# ---------------------------------------------------------------------------
# 4. The default Shakespeare job.


def shakespeare_config(variant: str, sizes: Sizes, data_dir: str = ''):
  """configs/lm_shakespeare.py at `sizes`' model, in bf16 (see `FULL`)."""
  from configs import lm_shakespeare

  config = lm_shakespeare.get_config(f'attention={variant}')
  with config.unlocked():
    config.dtype = 'bfloat16'
    for key, value in sizes.lm_model.items():
      config.model[key] = value
    config.model.attention_options.favor.num_features = sizes.num_features
    config.data.seq_len = sizes.lm_seq_len
    config.batch_size = sizes.lm_batch
    config.num_train_steps = sizes.lm_steps
    config.warmup_steps = min(config.warmup_steps, sizes.lm_steps // 4)
    config.log_every_steps = max(sizes.lm_steps // 6, 1)
    # One evaluation, at the end, on a few batches: this part is about
    # training throughput.
    config.eval_every_steps = sizes.lm_steps
    config.eval_max_batches = 2
    config.test_max_batches = 2
    config.sample_num_tokens = 0
    config.keep_checkpoints = 1
    if data_dir:
      config.data.data_dir = data_dir
  return config


def shakespeare_throughput(
  sizes: Sizes, budget: Budget, data_dir: str = ''
) -> dict[str, Any]:
  """Part 4: the real trainer on Shakespeare; tokens/s from its train log.

  Each run gets an equal share of the part's time left; a SIGTERM at the
  end of it makes the trainer save and return early (recorded as
  'stopped at the deadline' with the steps it made).

  Returns:
    'records': per variant, the steps made, the median tokens/s of the
    logged windows (the first step, which compiles, is in none of them),
    every window's tokens/s, the last train loss and validation bits per
    byte, and the run's wall time.
  """
  from performer import train  # Only this part needs the trainer and data.

  records = []
  for i, variant in enumerate(sizes.lm_variants):
    left = budget.left('shakespeare')
    record = {'variant': variant, 'dtype': 'bfloat16'}
    if left <= 0:
      record.update(status='skipped', reason=budget.note('shakespeare'))
      records.append(record)
      continue
    config = shakespeare_config(variant, sizes, data_dir)
    record.update(
      model=dict(sizes.lm_model),
      seq_len=sizes.lm_seq_len,
      batch_size=sizes.lm_batch,
      num_train_steps=sizes.lm_steps,
    )
    share = left / (len(sizes.lm_variants) - i)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
      try:
        with _sigterm_after(share):
          final = train.train_and_evaluate(config, run_dir)
        windows = _logged_tokens_per_sec(run_dir)
        record.update(
          status='ok',
          reason='stopped at the deadline' if final.get('preempted') else None,
          steps=final['step'],
          tokens_per_sec=statistics.median(windows) if windows else None,
          window_tokens_per_sec=windows,
          train_loss=final.get('train/loss'),
          validation_bits_per_byte=final.get('validation/bits_per_byte'),
        )
      except _DeadlineReached:
        # Outside the loop (set-up, compiling, the final evaluation): keep
        # whatever throughput the trainer had logged by then.
        windows = _logged_tokens_per_sec(run_dir)
        record.update(
          status='skipped' if not windows else 'partial',
          reason=budget.note('shakespeare'),
          tokens_per_sec=statistics.median(windows) if windows else None,
          window_tokens_per_sec=windows,
        )
      except Exception as e:  # noqa: BLE001 - recorded, the next runs.
        record.update(
          status=timing.failure_status(e), reason=timing.describe_error(e)
        )
    record['wall_s'] = time.perf_counter() - start
    records.append(record)
    report.log(
      f'  {variant}: {record["status"]}'
      + (
        f', {record["tokens_per_sec"]:,.0f} tokens/s over '
        f'{record.get("steps", "?")} steps'
        if record.get('tokens_per_sec')
        else f' ({record["reason"]})'
      )
    )
  return {
    'status': 'ok' if all(r['status'] == 'ok' for r in records) else 'partial',
    'records': records,
  }


def _logged_tokens_per_sec(run_dir: str) -> list[float]:
  """The tokens/s of every train window a run has logged so far."""
  path = workdir.metrics_path(run_dir)
  if not os.path.exists(path):
    return []
  return [
    r['tokens_per_sec']
    for r in workdir.read_jsonl(path)
    if r.get('split') == 'train' and r.get('tokens_per_sec')
  ]


class _DeadlineReached(Exception):
  """A SIGTERM of `_sigterm_after` arrived outside the trainer's loop."""


@contextlib.contextmanager
def _sigterm_after(seconds: float):
  """Sends this process a SIGTERM after `seconds`, unless the block ends.

  The trainer's loop answers a SIGTERM with a checkpoint and a clean
  return; elsewhere (set-up, compilation, the final evaluation) this
  context's own handler turns it into `_DeadlineReached`.
  """
  if threading.current_thread() is not threading.main_thread():
    yield  # Signal handlers can only be set from the main thread.
    return

  def on_sigterm(signum, frame):
    del signum, frame
    raise _DeadlineReached()

  previous = signal.signal(signal.SIGTERM, on_sigterm)
  timer = threading.Timer(
    max(seconds, 0.0), lambda: os.kill(os.getpid(), signal.SIGTERM)
  )
  timer.daemon = True
  timer.start()
  try:
    yield
  finally:
    timer.cancel()
    signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------
# The summary.


def summary(results: dict[str, Any]) -> str:
  """The markdown summary of every part that ran."""
  info = results['platform']
  lines = [
    '# Device check',
    '',
    '```',
    describe_platform(info),
    '```',
    '',
  ]
  writers = {
    'cudnn': _cudnn_summary,
    'attention': _attention_summary,
    'lra_text': _lra_summary,
    'shakespeare': _shakespeare_summary,
  }
  titles = {
    'cudnn': '1. cuDNN fused attention (softmax, bf16)',
    'attention': '2. Attention forward+backward, every variant',
    'lra_text': '3. LRA Text training steps/s, softmax and FAVOR+',
    'shakespeare': '4. The default Shakespeare job, GPU-sized model',
  }
  for part in PARTS:
    if part not in results:
      continue
    result = results[part]
    lines += [
      f'## {titles[part]}',
      '',
      f'Status: {result["status"]}'
      + (f' ({result["reason"]})' if result.get('reason') else '')
      + f'; {result["wall_s"]:.0f} s'
      + ('; smoke sizes' if result.get('smoke') else ''),
      '',
    ]
    if result.get('records'):
      lines += [writers[part](result).rstrip('\n'), '']
  return '\n'.join(lines).rstrip('\n') + '\n'


def _yes_no(x) -> str:
  return '-' if x is None else ('yes' if x else 'no')


def _cudnn_summary(result) -> str:
  columns = [
    ('case', 'case', str),
    ('implementation', 'implementation', str),
    ('cudnn_used', 'cuDNN used', _yes_no),
    ('fwd_bwd_cudnn_targets', 'cuDNN calls (fwd+bwd)', _targets),
    ('fwd_peak_bytes', 'fwd peak', report.format_bytes),
    ('max_abs_error', 'max abs err', _fmt_error),
    ('status', 'status', str),
  ]
  text = (
    f'L={result["length"]}, {result["heads"]} heads, head_dim '
    f'{result["head_dim"]}; cuDNN used = the compiled forward and '
    f'forward+backward programs call `{CUDNN_TARGET_PREFIX}*`; error '
    f'against the float32 reference (bf16 tolerance {BF16_OUTPUT_ATOL}).\n\n'
  )
  text += report.markdown_table(result['records'], columns)
  notes = [
    f'- {r["case"]}, {r["implementation"]}: {r["reason"]}'
    for r in result['records']
    if r['reason']
  ]
  return text + ('\n' + '\n'.join(notes) + '\n' if notes else '')


def _targets(targets) -> str:
  if targets is None:
    return '-'
  return ', '.join(sorted(set(targets))) or 'none'


def _fmt_error(x) -> str:
  return '-' if x is None else f'{x:.1e}'


def _attention_summary(result) -> str:
  records = result['records']
  dtypes = list(dict.fromkeys(r['dtype'] for r in records))
  variants = list(dict.fromkeys(r['variant'] for r in records))
  lengths = sorted({r['length'] for r in records})
  first = records[0]
  features = first['options'].get('num_features') or next(
    (
      r['options']['num_features']
      for r in records
      if 'num_features' in r['options']
    ),
    None,
  )
  text = (
    f'B={first["batch"]}, H={first["heads"]}, D={first["head_dim"]}, '
    f'M={features} random features; median of the timed calls.\n\n'
  )
  for dtype in dtypes:
    text += (
      f'fwd+bwd ms, {dtype} (XLA peak estimate in brackets; - not run):\n\n'
    )
    header = '| variant | causal | ' + ' | '.join(
      _fmt_length(n) for n in lengths
    )
    text += header + ' |\n|' + '---|' * (len(lengths) + 2) + '\n'
    cells = {
      (r['variant'], r['causal'], r['length']): r
      for r in records
      if r['dtype'] == dtype
    }
    for name in variants:
      for causal in (True, False):
        row = [name, 'yes' if causal else 'no']
        for n in lengths:
          r = cells.get((name, causal, n))
          if r and r['status'] == 'ok':
            row.append(
              f'{report.format_ms(r["fwd_bwd_ms"])} '
              f'({report.format_bytes(r["peak_bytes"])})'
            )
          else:
            row.append('-')
        text += '| ' + ' | '.join(row) + ' |\n'
    text += '\n'
  t = result['targets']
  speedup = ', '.join(
    f'{_fmt_length(int(n))}: {s:.2f}x' for n, s in t['speedup'].items()
  )
  text += (
    f'Causal FAVOR+ vs causal softmax (bf16, softmax time / FAVOR+ time): '
    f'{speedup or "not measured"}.\n'
    f'- faster from L = {t["faster_from"]} (target <= '
    f'{t["faster_from_target"]}): {_met(t["faster_from_met"])}\n'
    f'- at 64K: {_fmt_ratio(t["speedup_at_64k"])} (target >= '
    f'{t["speedup_at_64k_target"]:.0f}x): {_met(t["speedup_at_64k_met"])}\n'
  )
  skipped = [r for r in records if r['status'] != 'ok' and r['reason']]
  if skipped:
    text += '\nNot run or failed (first of each series):\n\n'
    seen = set()
    for r in skipped:
      series = (r['dtype'], r['variant'], r['causal'])
      if series in seen:
        continue
      seen.add(series)
      causal = 'causal' if r['causal'] else 'bidirectional'
      text += (
        f'- {r["dtype"]} {r["variant"]} {causal} from L={r["length"]}: '
        f'{r["status"]}: {r["reason"]}\n'
      )
  return text


def _fmt_length(n: int) -> str:
  return f'{n // 1024}K' if n % 1024 == 0 else str(n)


def _fmt_ratio(x) -> str:
  return '-' if x is None else f'{x:.2f}x'


def _met(x) -> str:
  return {None: 'not measured', True: 'met', False: 'NOT met'}[x]


def _lra_summary(result) -> str:
  columns = [
    ('variant', 'variant', str),
    ('length', 'L', str),
    ('steps', 'steps', str),
    ('steps_per_sec', 'steps/s', _fmt_rate),
    ('lra_table2_steps_per_sec', 'LRA Table 2 steps/s', _fmt_rate),
    ('peak_bytes', 'peak (XLA estimate)', report.format_bytes),
    ('compile_s', 'compile s', _fmt_rate),
    ('status', 'status', str),
  ]
  first = result['records'][0]
  model = first.get('model') or {}
  text = (
    f'configs/lra_text.py in bf16: {model.get("num_layers")} layers, emb '
    f'{model.get("emb_dim")}, {model.get("num_heads")} heads, mlp '
    f'{model.get("mlp_dim")}; batch {first["batch_size"]}.\n\n'
  )
  text += report.markdown_table(result['records'], columns)
  text += '\nFAVOR+ steps/s over softmax steps/s:\n\n'
  for length, r in result['favor_over_softmax'].items():
    text += (
      f'- L={length}: ours {_fmt_ratio(r["ours"])}, LRA Table 2 '
      f'{_fmt_ratio(r["lra_table2"])}\n'
    )
  text += (
    '\nRandom bytes with random padded lengths (no dataset on the '
    'device); LRA Table 2 ran on a 4x4 TPU v3 at batch 32.\n'
  )
  return text


def _fmt_rate(x) -> str:
  return '-' if x is None else f'{x:.2f}'


def _shakespeare_summary(result) -> str:
  columns = [
    ('variant', 'variant', str),
    ('steps', 'steps', str),
    ('tokens_per_sec', 'tokens/s (median window)', _fmt_tokens),
    ('train_loss', 'train loss', _fmt_rate),
    ('validation_bits_per_byte', 'val bits/byte', _fmt_rate),
    ('wall_s', 'wall s', lambda s: '-' if s is None else f'{s:.0f}'),
    ('status', 'status', str),
  ]
  first = result['records'][0]
  model = first.get('model') or {}
  text = (
    f'configs/lm_shakespeare.py in bf16, {model.get("num_layers")} layers, '
    f'emb {model.get("emb_dim")}, '
    f'{model.get("num_heads")} heads, mlp {model.get("mlp_dim")}; '
    f'context {first.get("seq_len")}, batch {first.get("batch_size")}.\n\n'
  )
  return text + report.markdown_table(result['records'], columns)


def _fmt_tokens(x) -> str:
  return '-' if x is None else f'{x:,.0f}'
