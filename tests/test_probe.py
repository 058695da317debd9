"""Tests of what is read from a trained run: probe.py, attention maps and the
approximation errors on a trained model's own queries and keys.

A tiny LM is trained for two steps once per module. The queries, keys and
values `probe.attention_inputs` returns are compared with those the model's
own forward pass hands its attention modules (recorded by a wrapper), and
the matrices of `probe.effective_attention` with the float64 references.
"""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from performer import approximation, attention, probe, train
from performer.attention import features
from tests import multiprocess_worker as worker
from tests import reference


def _script(name):
  import importlib.util
  import os

  path = os.path.join(os.path.dirname(__file__), '..', 'scripts', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'script_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  rng = np.random.default_rng(1)
  words = 'we few we happy few we band of brothers for he today'.split()
  corpus = tmp_path_factory.mktemp('corpus') / 'corpus.txt'
  corpus.write_text(
    '\n'.join(' '.join(rng.choice(words, size=8)) for _ in range(200))
  )
  workdir = str(tmp_path_factory.mktemp('run'))
  config = worker.tiny_config(
    str(corpus),
    **{'num_train_steps': 2, 'eval_every_steps': 2, 'model.num_layers': 2},
  )
  train.train_and_evaluate(config, workdir)
  return workdir


class _Recorder(nnx.Module):
  """Wraps an attention module and keeps what it is called with."""

  def __init__(self, inner, calls):
    self.inner = inner
    self.calls = calls

  def __call__(self, q, k, v, mask=None):
    self.calls.append((np.asarray(q), np.asarray(k), np.asarray(v)))
    return self.inner(q, k, v, mask=mask)


def test_attention_inputs_are_what_the_forward_pass_feeds(run_dir):
  model, config = probe.load_run(run_dir)
  tokens, mask = probe.example(config, text='we few, we happy few')
  # Cut to the run's sequence length (16 bytes).
  assert mask is None and tokens.shape == (1, 16)
  inputs = probe.attention_inputs(model, tokens, mask)
  calls = []
  for block in model.encoder.blocks:
    block.attention = _Recorder(block.attention, calls)
  model(jnp.asarray(tokens))
  assert len(inputs) == len(calls) == 2
  for (q, k, v, real), recorded in zip(inputs, calls, strict=True):
    assert real.all()
    for got, expected in zip((q, k, v), recorded, strict=True):
      np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-6)


def test_example_by_index_and_bad_requests(run_dir):
  _, config = probe.load_run(run_dir)
  tokens, _ = probe.example(config, index=1)
  assert tokens.shape == (1, config.data.seq_len)
  with pytest.raises(ValueError, match="unknown split 'dev'"):
    probe.example(config, split='dev')
  with pytest.raises(ValueError, match='index must be an int >= 0, got -1'):
    probe.example(config, index=-1)
  with pytest.raises(ValueError, match='the text is empty'):
    probe.example(config, text='')
  with pytest.raises(ValueError, match='index 100000 is out of range'):
    probe.example(config, index=100_000)


@pytest.mark.parametrize('causal', [True, False])
def test_effective_attention_of_softmax_and_favor(causal):
  rng = np.random.default_rng(0)
  t, h, d = 21, 2, 8
  q, k = (rng.standard_normal((2, t, h, d))).astype(np.float32)
  real = np.ones(t, bool)
  real[[4, 17]] = False
  eye = np.eye(t)[None, :, None, :].repeat(h, 2)  # v = identity per head.
  pattern = reference.causal_pattern(t) if causal else None
  expected = reference.masked_softmax_attention(
    q[None], k[None], eye[..., :t], pattern, real[None]
  )[0]
  exact = attention.create(
    'softmax', head_dim=d, causal=causal, rngs=nnx.Rngs(0)
  )
  got = probe.effective_attention(exact, q, k, real)
  np.testing.assert_allclose(got, np.transpose(expected, (1, 0, 2)), atol=1e-5)

  fav = attention.create(
    'favor', head_dim=d, causal=causal, rngs=nnx.Rngs(0), num_features=16
  )
  w = fav.projection[...]
  phi_q = features.feature_map(jnp.asarray(q), w)
  phi_k = features.feature_map(jnp.asarray(k), w)
  expected = reference.linear_attention(
    phi_q[None], phi_k[None], eye, causal, real[None]
  )[0]
  got = probe.effective_attention(fav, q, k, real)
  np.testing.assert_allclose(
    got, np.transpose(expected, (1, 0, 2)), rtol=1e-5, atol=1e-6
  )


def test_trained_error_sweep_averages_heads(run_dir):
  model, config = probe.load_run(run_dir)
  tokens, _ = probe.example(config, index=0)
  layers = probe.attention_inputs(model, tokens)
  settings = {
    'kernels': ['softmax', 'favorpp'],
    'a_scales': [1.0, 0.5],
    'projections': ['orthogonal'],
    'num_features': [8],
    'samples': 2,
    'seed': 0,
    'eps': 1e-3,
    'small_quantile': 0.1,
  }
  records = approximation.trained_error_sweep(
    layers, settings, causal=True, log=lambda _: None
  )
  assert [(r['source'], r['label']) for r in records] == [
    ('trained', 'softmax'),
    ('trained', 'favorpp'),
    ('trained', 'favorpp@0.5'),
  ]
  heads = config.model.num_heads
  for r in records:
    per_head = r['output_mse_per_head']
    assert len(per_head) == 2 and all(len(row) == heads for row in per_head)
    # The mean over samples of the mean over heads is the mean over heads
    # of the per-head means.
    flat = [x for row in per_head for x in row]
    assert math.isclose(r['output_mse_mean'], np.mean(flat), rel_tol=1e-5)


def test_attention_maps_script(run_dir, tmp_path, capsys):
  script = _script('attention_maps')
  png = tmp_path / 'maps.png'
  result = script.main(
    [
      f'--workdir={run_dir}',
      '--text=we few we happy few',
      '--layers=0,1',
      '--heads=1',
      '--variants=favor,favorpp,local',
      f'--png={png}',
    ]
  )
  assert png.stat().st_size > 0
  saved = json.loads((tmp_path / 'maps.json').read_text())
  assert saved == json.loads(json.dumps(result))
  errors = saved['errors']['layer1_head1']
  assert set(errors) == {
    'exact',
    'favor',
    'favorpp',
    'local',
    'favor (trained)',
  }
  assert errors['exact']['max_abs_error'] == 0.0
  for name, e in errors.items():
    assert 0.0 <= e['mean_abs_error'] <= e['max_abs_error'] <= 1.0, name
  with pytest.raises(SystemExit):
    script.main([f'--workdir={run_dir}', '--layers=5', f'--png={png}'])
  assert '--layers: 5 is out of range; the model has 2 layers' in (
    capsys.readouterr().err
  )


def test_approximation_script_on_a_trained_run(run_dir, tmp_path):
  script = _script('approximation_error')
  result = script.main(
    [
      '--length=16',
      '--dim=8',
      '--samples=2',
      '--num_features=8',
      '--kernels=softmax,favorpp',
      '--projections=iid,orthogonal',
      '--qk_std=0.5,1',
      '--a_scales=1,0.5',
      f'--trained_workdir={run_dir}',
      f'--json={tmp_path / "errors.json"}',
    ]
  )
  sources = {(r['source'], r.get('qk_std')) for r in result['records']}
  assert sources == {('random', 0.5), ('random', 1.0), ('trained', None)}
  # (softmax, favorpp, favorpp@0.5) x 2 projections, for 3 sets of inputs.
  assert len(result['records']) == 3 * 3 * 2
  compared = {(c['source'], c['compared']) for c in result['comparisons']}
  assert ('trained', 'favorpp / softmax (iid)') in compared
  assert ('random', 'orthogonal / iid (favorpp)') in compared
  assert ('random', 'favorpp@0.5 / softmax (orthogonal)') in compared
  heads = result['trained_heads']
  assert [(h['layer'], h['head']) for h in heads] == [
    (0, 0),
    (0, 1),
    (1, 0),
    (1, 1),
  ]
  for h in heads:
    assert h['a_star'] <= 0 and 0 < h['psi_min'] <= h['psi_max']
  saved = json.loads((tmp_path / 'errors.json').read_text())
  assert saved['comparisons'] == json.loads(json.dumps(result['comparisons']))
