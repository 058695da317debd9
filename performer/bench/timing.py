"""Compiling, memory estimates and timing of jitted programs.

The pattern every benchmark follows: compile ahead of time and time the
compilation on its own (`compile_timed`), read the compiled program's memory
estimate before running it (`memory_stats`, so a config that would not fit
can be skipped instead of crashing the machine), then time the executable
alone (`time_executable`: warm-up calls, then the median of repeats, each
call waited on with `jax.block_until_ready`). `measure_compiled` does the
three in order and turns any failure into a record.

Peak memory is XLA's static estimate for the compiled program, not a
measurement:

  peak_bytes = argument_size + output_size + temp_size - alias_size

`temp_size` is the size of XLA's one temporary allocation, whose buffer
assignment already reuses memory between values that are not live at the
same time; arguments and outputs are live for the whole call, and aliased
(donated) outputs share their argument's buffer. The same formula works on
CPU, GPU and TPU. XLA's own `peak_memory_in_bytes` field is kept in the raw
statistics too, but on CPU (jax 0.10.2) it leaves out the temporaries, so it
is not used as the estimate.
"""

import dataclasses
import gc
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from performer.bench import report

# The fields of `Compiled.memory_analysis()` that `memory_stats` copies.
_MEMORY_FIELDS = (
  'argument_size_in_bytes',
  'output_size_in_bytes',
  'temp_size_in_bytes',
  'alias_size_in_bytes',
  'generated_code_size_in_bytes',
  'peak_memory_in_bytes',
)


@dataclasses.dataclass(frozen=True)
class Settings:
  """How every config of a benchmark is timed.

  `flags.timing_settings` reads them from --warmup, --repeats, --seed and
  --max_peak_gib.
  """

  warmup: int
  repeats: int
  seed: int
  # The largest estimated peak allowed; None: no limit.
  budget_bytes: int | None

  def record_fields(self, info: dict[str, Any]) -> dict[str, Any]:
    """The fields of a record that say how it was timed and where.

    Args:
      info: `device_info()`, placed between the repeats and the budget so
        that every benchmark's records list them in the same order.
    """
    return {
      'warmup': self.warmup,
      'repeats': self.repeats,
      **info,
      'memory_budget_bytes': self.budget_bytes,
    }

  def measure(
    self,
    build: Callable[[], tuple[Callable, Sequence[Any]]],
    *,
    xla_flops: bool = False,
  ) -> dict[str, Any]:
    """`measure_compiled` with these settings' budget, warm-up and repeats."""
    return measure_compiled(
      build,
      budget_bytes=self.budget_bytes,
      warmup=self.warmup,
      repeats=self.repeats,
      xla_flops=xla_flops,
    )


def device_info(device: jax.Device | None = None) -> dict[str, Any]:
  """Describes the device and software a benchmark ran on.

  Args:
    device: the device to describe; the default device when None.

  Returns:
    A JSON-serializable dict: backend, device_kind, device_count, jax and
    jaxlib versions, and the number of host CPUs.
  """
  device = device or jax.devices()[0]
  import jaxlib  # Only for its version.

  return {
    'backend': jax.default_backend(),
    'device_kind': device.device_kind,
    'device_count': jax.device_count(),
    'jax_version': jax.__version__,
    'jaxlib_version': jaxlib.__version__,
    'host_cpu_count': os.cpu_count(),
  }


def compile_timed(fn: Callable, *args, **jit_kwargs) -> tuple[Any, float]:
  """Jits, lowers and compiles `fn` for `args`, timing the whole of it.

  Args:
    fn: the function to compile.
    *args: example arguments (arrays or `jax.ShapeDtypeStruct`s).
    **jit_kwargs: passed to `jax.jit` (e.g. `donate_argnums`).

  Returns:
    (the compiled executable, seconds spent tracing, lowering and
    compiling).
  """
  start = time.perf_counter()
  compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile()
  return compiled, time.perf_counter() - start


def memory_stats(compiled) -> dict[str, int | None]:
  """XLA's memory estimate for a compiled executable.

  Args:
    compiled: the result of `jax.jit(f).lower(...).compile()`.

  Returns:
    The raw fields of `compiled.memory_analysis()` that this jax version
    exposes (None for a missing one) plus `peak_bytes`, the estimate given
    in the module docstring (None when the backend gives no analysis).
  """
  analysis = compiled.memory_analysis()
  # Some backends return a list with one entry per program.
  if isinstance(analysis, list | tuple):
    analysis = analysis[0] if analysis else None
  stats = {f: _int_or_none(getattr(analysis, f, None)) for f in _MEMORY_FIELDS}
  stats['peak_bytes'] = peak_bytes(stats)
  return stats


def peak_bytes(stats: dict[str, int | None]) -> int | None:
  """argument + output + temp - alias bytes; None when a field is missing."""
  needed = (
    'argument_size_in_bytes',
    'output_size_in_bytes',
    'temp_size_in_bytes',
  )
  if any(stats.get(f) is None for f in needed):
    return None
  return (
    stats['argument_size_in_bytes']
    + stats['output_size_in_bytes']
    + stats['temp_size_in_bytes']
    - (stats.get('alias_size_in_bytes') or 0)
  )


def cost_flops(compiled) -> float | None:
  """XLA's FLOP count for a compiled executable, when the backend has one."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 - an optional statistic.
    return None
  if isinstance(cost, list | tuple):
    cost = cost[0] if cost else None
  if not cost or 'flops' not in cost:
    return None
  return float(cost['flops'])


def time_executable(
  compiled, *args, warmup: int = 1, repeats: int = 5
) -> dict[str, float]:
  """Times calls of a compiled executable.

  Args:
    compiled: a compiled executable (or any jitted function).
    *args: its arguments, already on the device.
    warmup: untimed calls first (allocator and caches warm up).
    repeats: timed calls.

  Returns:
    `median_s` (the number to report: robust to a stray slow call on a
    shared machine), `min_s` and `times_s`, all in seconds.
  """
  if repeats < 1:
    raise ValueError(f'repeats must be >= 1, got {repeats}')
  for _ in range(warmup):
    jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return {
    'median_s': statistics.median(times),
    'min_s': min(times),
    'times_s': times,
  }


def measure_compiled(
  build: Callable[[], tuple[Callable, Sequence[Any]]],
  *,
  budget_bytes: int | None,
  warmup: int,
  repeats: int,
  xla_flops: bool = False,
) -> dict[str, Any]:
  """Builds, compiles, checks the memory estimate and times one program.

  Never raises for the program: a failure anywhere (building it included)
  becomes the status 'oom' or 'error' with a reason, and a program whose
  estimated peak exceeds the budget is not run ('skipped').

  Args:
    build: returns (the function, its example arguments); called inside
      the error handling, so that a config that cannot even be built is
      recorded like one that fails to compile.
    budget_bytes: the largest estimated peak allowed; None: no limit.
    warmup: untimed calls.
    repeats: timed calls.
    xla_flops: also read XLA's FLOP count.

  Returns:
    status ('ok', 'skipped', 'oom' or 'error'), reason, compile_s, memory
    (`memory_stats`), peak_bytes, median_s, min_s and xla_flops, None where
    not reached.
  """
  result = dict.fromkeys(
    (
      'status',
      'reason',
      'compile_s',
      'memory',
      'peak_bytes',
      'median_s',
      'min_s',
      'xla_flops',
    )
  )
  compiled = None
  try:
    fn, args = build()
    compiled, result['compile_s'] = compile_timed(fn, *args)
    stats = memory_stats(compiled)
    result['memory'], result['peak_bytes'] = stats, stats['peak_bytes']
    if xla_flops:
      result['xla_flops'] = cost_flops(compiled)
    if budget_bytes is not None and (stats['peak_bytes'] or 0) > budget_bytes:
      result['status'] = 'skipped'
      result['reason'] = (
        f'estimated peak {report.format_bytes(stats["peak_bytes"])} exceeds '
        f'the budget {report.format_bytes(budget_bytes)} (--max_peak_gib)'
      )
      return result
    timing = time_executable(compiled, *args, warmup=warmup, repeats=repeats)
    result.update(
      status='ok', median_s=timing['median_s'], min_s=timing['min_s']
    )
  except Exception as e:  # noqa: BLE001 - recorded, the run goes on.
    result['status'] = failure_status(e)
    result['reason'] = describe_error(e)
  finally:
    # Free the executable's buffers before the next, larger program.
    del compiled
    gc.collect()
  return result


def matmul_peak(
  size: int = 4096,
  dtype: jnp.dtype = jnp.float32,
  *,
  warmup: int = 1,
  repeats: int = 5,
) -> dict[str, Any]:
  """Measures this device's dense matmul rate, a practical peak.

  Args:
    size: n of the n x n by n x n product (2 n^3 FLOPs).
    dtype: operand dtype.
    warmup: untimed calls.
    repeats: timed calls; the median is reported.

  Returns:
    `gflops_per_s` (2 n^3 / median time / 1e9), `size`, `dtype` and
    `median_s`.
  """
  keys = jax.random.split(jax.random.key(0), 2)
  a, b = (jax.random.normal(k, (size, size), dtype) for k in keys)
  compiled, _ = compile_timed(jnp.dot, a, b)
  timing = time_executable(compiled, a, b, warmup=warmup, repeats=repeats)
  return {
    'gflops_per_s': 2 * size**3 / timing['median_s'] / 1e9,
    'size': size,
    'dtype': jnp.dtype(dtype).name,
    'median_s': timing['median_s'],
  }


def memory_budget_bytes(device: jax.Device | None = None) -> int | None:
  """A default memory budget: what the device (or host RAM) can hold.

  Args:
    device: the device; the default device when None.

  Returns:
    The accelerator's allocator limit, or 80% of physical RAM on a CPU (the
    kernel's OOM killer would end the process rather than raise); None
    when neither is known.
  """
  device = device or jax.devices()[0]
  if device.platform != 'cpu':
    try:
      limit = (device.memory_stats() or {}).get('bytes_limit')
    except Exception:  # noqa: BLE001 - not every backend has statistics.
      limit = None
    return int(limit) if limit else None
  try:
    ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  except (ValueError, OSError, AttributeError):
    return None
  return int(0.8 * ram)


def is_out_of_memory(error: BaseException) -> bool:
  """Whether an exception raised by jax means the device ran out of memory."""
  text = f'{type(error).__name__}: {error}'.lower()
  return any(
    marker in text
    for marker in ('resource_exhausted', 'out of memory', 'memoryerror')
  )


def failure_status(error: BaseException) -> str:
  """A failed config's status: 'oom' when out of memory, else 'error'."""
  return 'oom' if is_out_of_memory(error) else 'error'


def describe_error(error: BaseException, limit: int = 500) -> str:
  """A one-line description of an exception for a benchmark record."""
  lines = str(error).strip().splitlines()
  first = lines[0] if lines else ''
  text = f'{type(error).__name__}: {first}'
  return text if len(text) <= limit else text[: limit - 3] + '...'


def _int_or_none(value) -> int | None:
  return None if value is None else int(value)
