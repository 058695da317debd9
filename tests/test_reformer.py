"""Reformer (shared-QK LSH attention) against dense references.

The reference takes the buckets the module drew (`hash`), ranks positions
within their buckets by hand and builds the dense mask of the definition:
query i sees key j when, in some round, both share a bucket and j's chunk
(rank // bucket_size) is i's or the one before, j != i, j real (and j <= i
when causal). Attention is then a dense softmax over that union with the
normalized queries as keys; a query that sees nothing outputs its own value.
fp32 against float64, 1e-5. Prefill + decode against the parallel pass is
tests/test_decode.py's generic check (the reformer case of its CASES).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import attention
from tests import jaxpr_walk, reference, test_model

B, L, H, D = 2, 37, 2, 8
RTOL, ATOL = 1e-5, 1e-5
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _create(causal=False, **opts):
  return attention.create(
    'reformer', head_dim=D, causal=causal, rngs=nnx.Rngs(0), **opts
  )


def _inputs(seed=0, length=L):
  keys = jax.random.split(jax.random.key(seed), 2)
  return [jax.random.normal(k, (B, length, H, D), jnp.float32) for k in keys]


def _mask(length=L):
  mask = np.ones((B, length), bool)
  mask[0, length - 5 :] = False
  mask[0, 3] = False
  return jnp.asarray(mask)


def _visible(buckets_BHRL, real_BL, bucket_size, causal):
  """The dense [B, H, L, L] pattern of the definition, by loops."""
  b, h, rounds, length = buckets_BHRL.shape
  allowed = np.zeros((b, h, length, length), bool)
  for bi in range(b):
    for hi in range(h):
      for r in range(rounds):
        bucket = buckets_BHRL[bi, hi, r]
        rank, seen = np.zeros(length, int), {}
        for p in range(length):
          if real_BL[bi, p]:
            rank[p] = seen.get(bucket[p], 0)
            seen[bucket[p]] = rank[p] + 1
        for i in range(length):
          for j in range(length):
            allowed[bi, hi, i, j] |= (
              real_BL[bi, i]
              and real_BL[bi, j]
              and i != j
              and bucket[i] == bucket[j]
              and rank[i] // bucket_size - rank[j] // bucket_size in (0, 1)
              and (not causal or j <= i)
            )
  return allowed


def _dense(q, v, allowed):
  """Shared-QK softmax under `allowed`; a query with no key: its value."""
  q64, v64 = np.asarray(q, np.float64), np.asarray(v, np.float64)
  k64 = q64 / np.linalg.norm(q64, axis=-1, keepdims=True)
  out = reference.masked_softmax_attention(q64, k64, v64, allowed)
  alone_BLH1 = np.swapaxes(~allowed.any(-1), 1, 2)[..., None]
  return np.where(alone_BLH1, v64, out)


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize(
  'opts',
  [
    {'bucket_size': 4, 'n_buckets': 4, 'n_hashes': 2},
    {'bucket_size': 4, 'n_hashes': 3},  # n_buckets from the length: 8.
    {'bucket_size': 5, 'n_buckets': 2, 'n_hashes': 1},
  ],
  ids=['4x4x2', 'derived', '5x2x1'],
)
def test_matches_dense_reference_with_its_buckets(causal, opts):
  attn = _create(causal, **opts)
  q, v = _inputs()
  mask = _mask()
  buckets = np.asarray(attn.hash(q))
  assert buckets.shape == (B, H, opts['n_hashes'], L)
  assert len(np.unique(buckets)) > 1  # The hash really splits.
  allowed = _visible(buckets, np.asarray(mask), opts['bucket_size'], causal)
  expected = _dense(q, v, allowed)
  got = attn(q, q, v, mask=mask)
  real = np.asarray(mask)
  np.testing.assert_allclose(
    np.asarray(got)[real], expected[real], rtol=RTOL, atol=ATOL
  )
  # Padded queries output zeros.
  np.testing.assert_array_equal(np.asarray(got)[~real], 0.0)


@pytest.mark.parametrize('causal', [False, True])
def test_one_bucket_one_chunk_is_dense_shared_qk_without_self(causal):
  attn = _create(causal, bucket_size=L, n_buckets=1, n_hashes=1)
  q, v = _inputs()
  not_self = ~np.eye(L, dtype=bool)
  if causal:
    not_self &= reference.causal_pattern(L)
  q64 = np.asarray(q, np.float64)
  k64 = q64 / np.linalg.norm(q64, axis=-1, keepdims=True)
  expected = reference.masked_softmax_attention(q64, k64, v, not_self)
  if causal:  # Position 0 sees nothing but itself.
    expected[:, 0] = np.asarray(v[:, 0])
  np.testing.assert_allclose(attn(q, q, v), expected, rtol=RTOL, atol=ATOL)


def test_rounds_count_each_key_once():
  # Identical rounds find the same keys: the union is one round's set, so
  # the output must equal one round's (without N_ij each key would count
  # n_hashes times, which also gives the same softmax; so compare against
  # a round set where the keys overlap only partly, via the reference).
  attn = _create(False, bucket_size=3, n_buckets=4, n_hashes=4)
  q, v = _inputs(seed=3)
  buckets = np.asarray(attn.hash(q))
  allowed = _visible(buckets, np.ones((B, L), bool), 3, False)
  per_round = [
    _visible(buckets[:, :, r : r + 1], np.ones((B, L), bool), 3, False)
    for r in range(4)
  ]
  # Some key is found in two rounds and some in one: N_ij matters.
  found = np.sum(per_round, axis=0)
  assert np.any(found >= 2) and np.any(found == 1)
  np.testing.assert_allclose(
    attn(q, q, v), _dense(q, v, allowed), rtol=RTOL, atol=ATOL
  )


def test_padded_positions_change_nothing():
  attn = _create(False, bucket_size=4, n_buckets=4, n_hashes=2)
  q, v = _inputs()
  q2, v2 = _inputs(seed=5)
  mask = _mask()
  pad = ~mask[:, :, None, None]
  # Padded queries are also the padded keys: change both.
  out = attn(q, q, v, mask=mask)
  changed = attn(
    jnp.where(pad, 5.0 * q2, q), q, jnp.where(pad, 100.0 * v2, v), mask=mask
  )
  np.testing.assert_allclose(changed, out, rtol=0, atol=1e-6)


def test_ignores_k_and_model_has_no_key_projection():
  attn = _create(False, bucket_size=4, n_buckets=4)
  q, v = _inputs()
  np.testing.assert_array_equal(attn(q, q, v), attn(q, 3.0 * v, v))
  assert attention.uses(attn) == ('q', 'v')
  net = test_model.build(test_model.small_config('reformer', 'lm'))
  block = net.encoder.blocks[0]
  assert block.key is None and block.query is not None


def test_hashes_follow_seed_and_step():
  q, _ = _inputs()
  a, b = (
    _create(bucket_size=4, n_buckets=8),
    _create(bucket_size=4, n_buckets=8),
  )
  np.testing.assert_array_equal(a.hash(q), b.hash(q))
  first = np.asarray(a.hash(q))
  a.redraw(1)
  assert not np.array_equal(a.hash(q), first)
  a.redraw(0)
  np.testing.assert_array_equal(a.hash(q), first)
  fixed = _create(bucket_size=4, n_buckets=8, redraw_interval=0)
  fixed.redraw(7)
  np.testing.assert_array_equal(fixed.hash(q), first)
  # Another seed hashes differently.
  other = attention.create(
    'reformer',
    head_dim=D,
    causal=False,
    rngs=nnx.Rngs(1),
    bucket_size=4,
    n_buckets=8,
  )
  assert not np.array_equal(other.hash(q), first)


_DEVICE_SCRIPT = """
import json, sys
import jax, jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from performer import attention
attn = attention.create('reformer', head_dim=8, causal=False,
                        rngs=nnx.Rngs(0), bucket_size=4, n_buckets=8)
attn.redraw(3)
q = jax.random.normal(jax.random.key(0), (4, 16, 2, 8))
mesh = Mesh(jax.devices(), ('data',))
q = jax.device_put(q, NamedSharding(mesh, P('data')))
buckets = nnx.jit(lambda m, q: m.hash(q))(attn, q)
print(json.dumps({'devices': jax.device_count(),
                  'buckets': jax.device_get(buckets).tolist()}))
"""


def test_hashes_are_the_same_on_any_device_count():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = (
    env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2'
  )
  done = subprocess.run(
    [sys.executable, '-c', _DEVICE_SCRIPT],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result['devices'] == 2
  attn = attention.create(
    'reformer',
    head_dim=8,
    causal=False,
    rngs=nnx.Rngs(0),
    bucket_size=4,
    n_buckets=8,
  )
  attn.redraw(3)
  q = jax.random.normal(jax.random.key(0), (4, 16, 2, 8))
  np.testing.assert_array_equal(result['buckets'], attn.hash(q))


@pytest.mark.parametrize(
  'opts,words',
  [
    ({'n_hashes': 0}, 'n_hashes must be an int >= 1, got 0'),
    ({'n_buckets': 3}, 'got 3'),
    ({'n_buckets': 0}, 'n_buckets must be an int >= 1, got 0'),
    ({'bucket_size': 0}, 'bucket_size must be an int >= 1, got 0'),
    ({'redraw_interval': -1}, 'redraw_interval must be an int >= 0, got -1'),
  ],
)
def test_bad_options_are_named(opts, words):
  with pytest.raises(ValueError, match=words):
    _create(**opts)


def test_bucket_size_that_does_not_fit_is_named():
  attn = _create(bucket_size=32)  # n_buckets from the length: L >= 64.
  q, v = _inputs()
  with pytest.raises(ValueError, match='bucket_size=32 does not fit .* 37'):
    attn(q, q, v)


def test_memory_is_linear_in_length():
  # No [.., L, L] intermediate at L = 1024 with chunks of 32.
  attn = _create(True, bucket_size=32, n_hashes=2)
  q = jnp.zeros((1, 1024, 1, D))
  jaxpr = jax.make_jaxpr(jax.grad(lambda q: attn(q, q, q).sum()))(q)
  shapes = list(jaxpr_walk.all_shapes(jaxpr.jaxpr))
  assert len(shapes) > 100  # The walk reached the inner jaxprs.
  for shape in shapes:
    assert sum(n >= 1024 for n in shape) <= 1, shape
