"""Per-block rematerialization (`model.remat`) changes no number.

`nnx.remat` only changes what the backward pass keeps: the loss, the
gradients and the variables a training call updates (causal FAVOR++'s
running statistics) must be those of the same model without it, with
dropout on.

- Strict, float32 to 1e-6 relative, in a process with XLA's default
  compile flags (as the trainer runs): the variants of the memory
  benchmark (softmax, favor, local, sparse) and causal FAVOR++ with its
  running statistics. Measured: bit-identical.
- Every other variant (classifier head; causal FAVOR# too), in the suite's
  own process, to 1e-5: the suite compiles at LLVM optimization level 0
  (tests/conftest.py), where the recomputed forward pass rounds
  differently (measured up to 1.6e-6 of the gradient's norm and 1.1e-6 of
  the loss, FAVOR++ and FAVOR#), while at the default level the numbers
  are bit-identical.

  python tests/test_remat.py '[["softmax", "lm"]]'  # JSON differences
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # Run as a script by the strict test.
  sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

from performer import attention, model, validate, workdir  # noqa: E402
from tests.test_model import (  # noqa: E402
  build,
  padding_mask,
  small_config,
  tokens,
)

STRICT_TOL = 1e-6
SUITE_TOL = 1e-5
STRICT_CASES = (
  ('softmax', 'classifier'),
  ('favor', 'classifier'),
  ('local', 'classifier'),
  ('sparse', 'classifier'),
  ('favorpp', 'lm'),
)
# A model with two blocks, so the rematerialized blocks chain.
LAYERS = 2


def _loss_grads_and_state(config, toks, mask):
  """(loss, flat gradients, flat running statistics after the call).

  The trainer's pattern (`performer.steps`): a functional loss of the
  parameters, the model merged inside it, dropout keys from one key.
  """
  net = build(config)
  graphdef, params, rest = nnx.split(net, nnx.Param, ...)

  @jax.jit
  def loss_and_grads(params, rest):
    def loss_fn(params):
      net = nnx.merge(graphdef, params, rest, copy=True)
      rngs = nnx.Rngs(dropout=jax.random.key(3))
      logits = net(toks, mask, train=True, rngs=rngs)
      return jnp.mean(jnp.square(logits)), nnx.state(net, nnx.BatchStat)

    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  (loss, stats), grads = loss_and_grads(params, rest)

  def flat(state):
    return {
      '.'.join(map(str, path)): np.asarray(var[...])
      for path, var in nnx.to_flat_state(state)
    }

  return float(loss), flat(grads), flat(stats)


def _suite_cases():
  cases = [(name, 'classifier') for name in attention.names()]
  cases.append(('favorsharp', 'lm'))  # Running statistics.
  return [case for case in cases if case not in STRICT_CASES]


def differences(name: str, head: str) -> dict[str, float]:
  """Relative differences, remat against plain, of one variant and head.

  Returns:
    {'loss': |dloss| / |loss|, 'grads': the 2-norm of the difference of
    all gradients over the 2-norm of the plain gradients, 'stats': the
    largest absolute difference of the running statistics (0 without),
    'stat_paths': whether both have the same statistics}.
  """
  base = small_config(name, head, num_layers=LAYERS, dropout_rate=0.1)
  toks, mask = tokens(0), padding_mask()
  plain = _loss_grads_and_state(base, toks, mask)
  base.remat = True
  remat = _loss_grads_and_state(base, toks, mask)
  if remat[1].keys() != plain[1].keys():
    raise AssertionError(f'gradient paths differ: {remat[1].keys()}')
  diff = sum(float(np.sum((remat[1][k] - g) ** 2)) for k, g in plain[1].items())
  norm = sum(float(np.sum(g**2)) for g in plain[1].values())
  stats = [float(np.max(np.abs(remat[2][k] - v))) for k, v in plain[2].items()]
  return {
    'loss': abs(remat[0] - plain[0]) / abs(plain[0]),
    'grads': (diff / norm) ** 0.5,
    'stats': max(stats, default=0.0),
    'stat_paths': remat[2].keys() == plain[2].keys(),
  }


def _check(case, values, tol: float) -> None:
  assert values['stat_paths'], case
  for key in ('loss', 'grads', 'stats'):
    assert values[key] <= tol, (case, values)


def test_remat_is_exact_under_the_default_compile_flags():
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  result = subprocess.run(
    [sys.executable, __file__, json.dumps(STRICT_CASES)],
    capture_output=True,
    text=True,
    env=env,
    timeout=600,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  found = json.loads(result.stdout.strip().splitlines()[-1])
  assert len(found) == len(STRICT_CASES)
  for case, values in zip(STRICT_CASES, found, strict=True):
    _check(case, values, STRICT_TOL)


@pytest.mark.parametrize(('name', 'head'), _suite_cases())
def test_remat_gives_the_same_loss_gradients_and_state(name, head):
  _check((name, head), differences(name, head), SUITE_TOL)


def test_causal_favorpp_statistics_are_updated_under_remat():
  """The lifted checkpoint carries the running statistics' update out."""
  config = small_config('favorpp', 'lm', num_layers=LAYERS, remat=True)
  _, _, state = _loss_grads_and_state(config, tokens(0), padding_mask())
  counts = [v for k, v in state.items() if k.endswith('running_count')]
  assert len(counts) == LAYERS and all(float(c) == 1.0 for c in counts)


def test_remat_must_be_a_bool():
  config = small_config('softmax', 'lm').to_dict()
  config['remat'] = 'yes'  # A typed ConfigDict would refuse it itself.
  with pytest.raises(ValueError, match=r"remat must be a bool, got 'yes'"):
    validate.check_model(config)


def test_remat_is_not_part_of_a_runs_identity():
  """Turning remat on to fit memory may resume a run saved without it."""
  saved = {'model': model.default_config().to_dict(), 'seed': 0}
  current = {'model': {**saved['model'], 'remat': True}, 'seed': 0}
  del saved['model']['remat']  # A run saved before the option existed.
  assert workdir.differing_fields(saved, current) == []


if __name__ == '__main__':
  cases = json.loads(sys.argv[1])
  print(json.dumps([differences(name, head) for name, head in cases]))
