"""Walks a jaxpr and its sub-jaxprs, for tests of memory layouts.

A test that a method is linear in length checks that no value of the traced
forward+backward program has two axes of the sequence length.
"""

from collections.abc import Iterator


def all_shapes(jaxpr) -> Iterator[tuple[int, ...]]:
  """The shapes of every value in `jaxpr` and its sub-jaxprs (scan, remat,
  cond, custom_vjp, pjit bodies: any parameter holding a jaxpr)."""
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      yield tuple(getattr(var.aval, 'shape', ()))
    for param in eqn.params.values():
      for sub in param if isinstance(param, tuple | list) else (param,):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          yield from all_shapes(inner)
