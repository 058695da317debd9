"""The registry of attention variants: names -> NNX module classes.

Each family module registers its variants with `@registry.register(name)`;
`performer.attention` re-exports the functions below as its public API.
"""

import inspect
import typing
from collections.abc import Callable
from typing import Any

from flax import nnx

_REGISTRY: dict[str, type[nnx.Module]] = {}


def register(name: str) -> Callable[[type[nnx.Module]], type[nnx.Module]]:
  """Class decorator that registers an attention variant under `name`."""

  def decorate(cls: type[nnx.Module]) -> type[nnx.Module]:
    if name in _REGISTRY:
      raise ValueError(f'attention variant {name!r} is already registered')
    _REGISTRY[name] = cls
    return cls

  return decorate


def unregister(name: str) -> None:
  """Removes variant `name` (a test's or plugin's temporary variant)."""
  _lookup(name)
  del _REGISTRY[name]


def names() -> list[str]:
  """Returns the registered variant names, sorted."""
  return sorted(_REGISTRY)


def options(name: str) -> list[str]:
  """Returns the option names that variant `name` accepts in `create`."""
  params = inspect.signature(_lookup(name).__init__).parameters
  fixed = {'self', 'head_dim', 'causal', 'rngs'}
  return sorted(p for p in params if p not in fixed)


def defaults(name: str) -> dict:
  """Returns variant `name`'s options with their default values."""
  params = inspect.signature(_lookup(name).__init__).parameters
  return {key: params[key].default for key in options(name)}


def option_hints(name: str) -> dict[str, Any]:
  """The type annotations of variant `name`'s options ({} if unresolvable)."""
  try:
    hints = typing.get_type_hints(_lookup(name).__init__)
  except (NameError, TypeError):
    return {}
  return {key: hints[key] for key in options(name) if key in hints}


def with_sizes(name: str, opts: dict, *, max_len: int, num_heads: int) -> dict:
  """`options` plus the sizes that only the caller knows, where needed.

  A variant with learned [max_len, ...] parameters (Linformer, Sinkhorn,
  Synthesizer) declares `max_len: int | None = None`, and one with per-head
  parameters `num_heads`; whoever builds it (the transformer, a benchmark)
  knows the longest sequence and the head count. Those the variant accepts
  and `opts` leaves unset (or None) are filled in.

  Args:
    name: a registered variant.
    opts: its options for `create`.
    max_len: the longest sequence the module will see.
    num_heads: the number of heads of its inputs.

  Returns:
    A new dict.
  """
  accepted = options(name)
  sized = dict(opts)
  for key, value in (('max_len', max_len), ('num_heads', num_heads)):
    if key in accepted and sized.get(key) is None:
      sized[key] = value
  return sized


INPUTS = ('q', 'k', 'v')


def uses(module: nnx.Module) -> tuple[str, ...]:
  """Which of q, k, v the output of attention `module` depends on.

  A variant declares it with a `uses` attribute (Reformer's shared QK:
  ('q', 'v')); the default is all three. The transformer block builds
  projections for these only, so that none is left without a gradient; the
  module ignores whatever it receives for the others.

  Raises:
    ValueError: a `uses` that is empty or names anything but 'q', 'k', 'v'.
  """
  used = tuple(getattr(module, 'uses', INPUTS))
  if not used or not set(used) <= set(INPUTS):
    raise ValueError(
      f'{type(module).__name__}.uses must be a non-empty subset of '
      f'{INPUTS}, got {used!r}'
    )
  return tuple(name for name in INPUTS if name in used)


def redraw_features(model: nnx.Module, step) -> None:
  """Redraws the random features of every attention module inside `model`.

  Each module with a `redraw(step)` method (FAVOR+) draws its projection
  from (its seed, step // its redraw interval); modules with interval 0 keep
  theirs. Jittable: `step` may be a traced integer.

  Args:
    model: any NNX module tree.
    step: the global training step.
  """
  for _, module in nnx.iter_graph(model):
    if isinstance(module, nnx.Module) and hasattr(module, 'redraw'):
      module.redraw(step)


def create(
  name: str, *, head_dim: int, causal: bool, rngs: nnx.Rngs, **opts
) -> nnx.Module:
  """Builds the attention variant `name`.

  Args:
    name: a registered variant, one of `names()`.
    head_dim: size of each head's query, key and value vectors.
    causal: whether position i may only attend to positions <= i. Fixed at
      construction.
    rngs: random streams for the variant's own state (random features,
      random sparsity pattern).
    **opts: variant options; `options(name)` lists the valid ones.

  Returns:
    The attention module.

  Raises:
    ValueError: for an unknown name, an unknown option or an invalid value.
  """
  cls = _lookup(name)
  valid = options(name)
  unknown = sorted(set(opts) - set(valid))
  if unknown:
    raise ValueError(
      f'unknown option(s) {unknown} for attention {name!r}; valid options: '
      f'{valid}'
    )
  if not isinstance(head_dim, int) or head_dim <= 0:
    raise ValueError(f'head_dim must be a positive int, got {head_dim!r}')
  return cls(head_dim=head_dim, causal=bool(causal), rngs=rngs, **opts)


def _lookup(name: str) -> type[nnx.Module]:
  if name not in _REGISTRY:
    raise ValueError(f'unknown attention {name!r}; valid names: {names()}')
  return _REGISTRY[name]
