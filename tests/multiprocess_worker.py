"""Training runs in a subprocess, for tests/test_parallel.py and test_faults.py.

  python tests/multiprocess_worker.py '<json request>'

The request's 'job' picks what to do:

- 'train': one `train_and_evaluate` of `tiny_config(corpus, **overrides)`
  in 'workdir', after joining a multi-process run when 'distributed' gives
  {coordinator_address, num_processes, process_id}; 'step_delay' seconds of
  sleep before each step keep a run alive long enough to be killed.
- 'variants': one run per entry of 'variants' (overrides), each in its own
  workdir under 'workdir', in one process so the imports are paid once.

The last stdout line is JSON: the runs' results (train losses and grad
norms per step, the last validation loss).

Device counts come from XLA_FLAGS=--xla_force_host_platform_device_count=N
in the environment the test starts this with.
"""

import json
import os
import sys
import time

# The repository root, so that `configs` and `performer` import when this
# file runs as a script.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from configs import common  # noqa: E402
from performer import parallel  # noqa: E402

# Small enough to compile in seconds: one layer, 16-wide, 16 tokens.
TINY_MODEL = {
  'num_layers': 1,
  'emb_dim': 16,
  'qkv_dim': 16,
  'num_heads': 2,
  'mlp_dim': 32,
  'dropout_rate': 0.0,
  'attention': 'favor',
}
# Few features and a redraw every 2 steps, so redraws happen in the runs.
FAVOR = {'num_features': 8, 'chunk_size': 8, 'redraw_interval': 2}


def tiny_config(corpus: str, **overrides):
  """A tiny byte-level LM run; `overrides` use dotted names ('model.x')."""
  config = common.base_config()
  config.data.name = 'text_files'
  config.data.path = corpus
  config.data.seq_len = 16
  config.data.read_threads = 1
  config.model.update(TINY_MODEL)
  config.model.attention_options.favor.update(FAVOR)
  config.update(
    batch_size=8,
    num_train_steps=4,
    learning_rate=3e-3,
    warmup_steps=1,
    log_every_steps=1,
    eval_every_steps=4,
    eval_max_batches=1,
    test_max_batches=1,
    keep_checkpoints=2,
    sample_num_tokens=0,
  )
  config.lock()
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def summary(workdir: str) -> dict:
  """Per-step train losses and grad norms, and the last validation loss."""
  from performer import workdir as workdir_lib

  path = workdir_lib.metrics_path(workdir)
  if not os.path.exists(path):
    return {}
  records = workdir_lib.read_jsonl(path)
  train = [r for r in records if r['split'] == 'train']
  validation = [r for r in records if r['split'] == 'validation']
  return {
    'steps': [r['step'] for r in train],
    'loss': [r['loss'] for r in train],
    'grad_norm': [r['grad_norm'] for r in train],
    'validation_loss': validation[-1]['loss'] if validation else None,
  }


def main(request: dict) -> dict:
  if 'distributed' in request:
    parallel.initialize_distributed('on', **request['distributed'])
  from performer import steps, train

  delay = request.get('step_delay', 0)
  if delay:
    real_step = steps.train_step

    def slow_step(*args):
      time.sleep(delay)
      return real_step(*args)

    steps.train_step = slow_step

  corpus, workdir = request['corpus'], request['workdir']
  if request['job'] == 'train':
    config = tiny_config(corpus, **request.get('overrides', {}))
    result = train.train_and_evaluate(config, workdir)
    return {'step': result['step'], 'preempted': 'preempted' in result}
  if request['job'] == 'variants':
    results = {}
    for name, overrides in request['variants'].items():
      run_dir = os.path.join(workdir, name)
      train.train_and_evaluate(tiny_config(corpus, **overrides), run_dir)
      results[name] = summary(run_dir)
    return results
  raise ValueError(f'unknown job {request["job"]!r}')


if __name__ == '__main__':
  print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
