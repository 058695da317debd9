"""Test-session settings shared by every test module."""

import os

# The suite compiles hundreds of tiny XLA programs, and on a CPU LLVM's
# optimization of them costs more than running them: level 0 cuts the suite's
# time by about a quarter. It changes no float semantics (XLA's CPU fast-math
# stays off), so results and golden values are the same as at the default
# level. Must be set before jax creates its CPU backend, hence here.
_FLAG = '--xla_backend_optimization_level=0'
if _FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {_FLAG}'.strip()
