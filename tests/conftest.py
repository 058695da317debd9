"""Test-session settings shared by every test module."""

import os

# The suite compiles thousands of tiny XLA programs, and on a CPU compiling
# them costs more than running them. Two compile-time settings; XLA's CPU
# fast-math stays off with both, and the suite's golden values and
# tolerances hold as with the defaults:
# - LLVM optimization level 0 (cuts the suite's time by about a quarter);
# - XLA's older elemental emitters instead of the fusion emitters (MLIR),
#   whose per-program set-up is slower: this halves the time again
#   (tests/test_attention_interface.py + test_lra_configs.py, one process:
#   264 s -> 142 s). Must be set before jax creates its CPU backend, hence
#   here.
_FLAGS = (
  '--xla_backend_optimization_level=0',
  '--xla_cpu_use_fusion_emitters=false',
)
for _FLAG in _FLAGS:
  if _FLAG.split('=')[0] not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (
      f'{os.environ.get("XLA_FLAGS", "")} {_FLAG}'.strip()
    )

import jax  # noqa: E402  (after XLA_FLAGS, which jax reads on import)
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope='module')
def _free_compiled_programs():
  """Drops every compiled XLA program after each test module.

  Each CPU executable holds a few memory mappings, and jax caches every
  program a process compiles (eager ops included), so an xdist worker that
  runs half the suite would reach Linux's limit of 65530 mappings per
  process (vm.max_map_count; test_attention_interface.py and
  test_sinkhorn.py alone leave 16054), and LLVM's JIT then segfaults while
  compiling (CI's 'worker crashed' in a late trainer test).
  Most programs are only shared within a module, so this costs few
  recompiles (library-level jitted functions used by several modules
  compile again: 137 s vs 143 s over two heavy modules).
  """
  yield
  jax.clear_caches()
