"""Metric computation and the writers that record them.

Every evaluation reduces to three sums per batch (weighted loss, weighted
correct predictions, total weight), which add up exactly across batches and
devices; the reported metrics are computed from the totals.

`MetricWriter` sends each record to TensorBoard (tag 'split/metric') and to
workdir/metrics.jsonl, one JSON object per line:

  {"step": 500, "split": "validation", "loss": 1.23, "accuracy": 0.61, ...}

Only process 0 writes; the others get a writer that does nothing.
"""

import json
import math
import os
import resource
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from performer import workdir as workdir_lib

SPLITS = ('train', 'validation', 'test')


def xent_sums(
  logits_XV: jax.Array, targets_X: jax.Array, weights_X: jax.Array
) -> dict[str, jax.Array]:
  """Weighted cross-entropy and accuracy sums of any batch of predictions.

  X is any leading shape: [B, L] for next-token or masked-token batches,
  [B] for one label per sequence.

  Args:
    logits_XV: float logits.
    targets_X: int target ids.
    weights_X: float weights; 0 for padding.

  Returns:
    {'loss_sum', 'correct_sum', 'weight_sum'}: float32 scalars.
  """
  logits_XV = logits_XV.astype(jnp.float32)
  xent_X = optax.softmax_cross_entropy_with_integer_labels(logits_XV, targets_X)
  correct_X = jnp.argmax(logits_XV, axis=-1) == targets_X
  weights_X = weights_X.astype(jnp.float32)
  return {
    'loss_sum': jnp.sum(xent_X * weights_X),
    'correct_sum': jnp.sum(correct_X * weights_X),
    'weight_sum': jnp.sum(weights_X),
  }


# Metrics derived from the loss: bits per byte for byte-level language
# models, perplexity for other token-level ones, none for classifiers.
EXTRA_METRICS = ('bits_per_byte', 'perplexity', None)


def _derived(loss: float, extra: str | None) -> dict[str, float]:
  if extra == 'bits_per_byte':
    return {'bits_per_byte': loss / math.log(2)}
  if extra == 'perplexity':
    return {'perplexity': math.exp(min(loss, 700.0))}
  if extra is None:
    return {}
  raise ValueError(
    f'extra metric must be one of {EXTRA_METRICS}, got {extra!r}'
  )


def eval_metric_names(extra: str | None) -> tuple[str, ...]:
  """Names of the metrics `from_sums` reports."""
  return ('loss', 'accuracy') + ((extra,) if extra else ())


def from_sums(sums: dict, extra: str | None) -> dict[str, float]:
  """Loss (nats per prediction), accuracy and the `extra` metric.

  Args:
    sums: totals of `xent_sums` (host or device scalars).
    extra: 'bits_per_byte' (loss / ln 2, the standard measure for
      character-level LMs), 'perplexity' (exp(loss)) or None.
  """
  sums = {k: float(v) for k, v in sums.items()}
  weight = max(sums['weight_sum'], 1.0)
  loss = sums['loss_sum'] / weight
  result = {'loss': loss, 'accuracy': sums['correct_sum'] / weight}
  result.update(_derived(loss, extra))
  return result


class MetricWriter:
  """Writes metrics to TensorBoard and metrics.jsonl (process 0 only).

  Args:
    workdir: directory of the run.
    start_step: the step training resumes from; records with a larger step
      left by an interrupted run (and test records, written again at the
      end) are dropped, so the file reads as one uninterrupted run.
  """

  def __init__(self, workdir: str, start_step: int = 0):
    self.enabled = jax.process_index() == 0
    self._path = workdir_lib.metrics_path(workdir)
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    _truncate(self._path, start_step)
    # Imported here so that processes other than 0 never touch TensorBoard.
    from tensorboardX import SummaryWriter

    self._tb = SummaryWriter(os.path.join(workdir, workdir_lib.TENSORBOARD_DIR))

  def write(self, step: int, split: str, metrics: dict) -> None:
    """Records `metrics` (name -> number) of `split` at `step`."""
    if split not in SPLITS:
      raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    if not self.enabled:
      return
    record = {'step': int(step), 'split': split}
    record.update({k: float(v) for k, v in metrics.items()})
    with open(self._path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for name, value in metrics.items():
      self._tb.add_scalar(f'{split}/{name}', float(value), int(step))

  def write_text(self, step: int, tag: str, text: str) -> None:
    """Records a text (e.g. a generated sample) in TensorBoard."""
    if self.enabled:
      self._tb.add_text(tag, text, int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _truncate(path: str, start_step: int) -> None:
  """Drops records after `start_step`, and test records, from `path`."""
  if not os.path.exists(path):
    return
  records = workdir_lib.read_jsonl(path)
  kept = [
    r for r in records if r['step'] <= start_step and r['split'] != 'test'
  ]
  if len(kept) == len(records):
    return
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in kept)
  os.replace(tmp, path)


def mean(records: list[dict]) -> dict[str, float]:
  """Mean of each metric over a list of per-step host metric dicts."""
  return {k: float(np.mean([r[k] for r in records])) for k in records[0]}


def summarize(window: list[dict], extra: str | None) -> dict[str, float]:
  """Means over the window's steps, with the `extra` metric of the loss."""
  averages = mean(window)
  summary = {'loss': averages.pop('loss')}
  summary.update(_derived(summary['loss'], extra))
  summary.update(averages)
  return summary


def format_line(step: int, split: str, values: dict[str, float]) -> str:
  """One concise console line, e.g. 'step 100 train: loss 2.1, ...'."""
  parts = []
  for name, value in values.items():
    if name == 'tokens_per_sec':
      parts.append(f'{value:,.0f} tokens/s')
    elif name == 'steps_per_sec':
      parts.append(f'{value:.2f} steps/s')
    elif name == 'learning_rate':
      parts.append(f'lr {value:.2e}')
    else:
      parts.append(f'{name} {value:.4f}')
  return f'step {step} {split}: ' + ', '.join(parts)


class Timer:
  """Wall time and tokens since the last reset, for throughput."""

  def __init__(self):
    self.reset()

  def reset(self):
    self._start = time.perf_counter()
    self._tokens = 0

  def lap(self) -> float:
    return time.perf_counter() - self._start

  def count(self, tokens: int):
    self._tokens += tokens

  def rate(self) -> float:
    return self._tokens / max(self.lap(), 1e-9)


# ---------------------------------------------------------------------------
# What a run reports on the console.


def peak_memory_bytes() -> int:
  """Peak memory of this process's first device (host RSS on a CPU).

  GPUs and TPUs report their allocator's peak; the CPU backend reports
  nothing, so there it is the process's peak resident set size.
  """
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use'])
  # ru_maxrss is in KiB on Linux.
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_HEAD_NAMES = {
  'lm': 'LM',
  'classifier': 'classifier',
  'dual_encoder': 'dual encoder',
}


def describe_run(config: Any, state: Any) -> str:
  """One line: the model, its size and the data, from the trainer state."""
  m = config.model
  params = nnx.filter_state(state['model'], nnx.Param)
  num_params = sum(x.size for x in jax.tree.leaves(params))
  return (
    f'{m.num_layers}-layer {m.attention} {_HEAD_NAMES[m.head]} (emb '
    f'{m.emb_dim}, {num_params / 1e6:.2f}M params) on {config.data.name}'
  )


def final_report(result: dict, reported: str | None) -> str:
  """The lines that end a run: metrics, best step, checkpoints, sample."""
  name = reported or 'accuracy'
  lines = [f'Finished at step {result["step"]}.']
  if f'validation/{name}' in result:
    lines.append(f'validation {name}: {result[f"validation/{name}"]:.4f}')
  if f'test/{name}' in result:
    lines.append(
      f'test {name}: {result[f"test/{name}"]:.4f} (best checkpoint, step '
      f'{result["best_step"]})'
    )
  lines.append(f'checkpoints: {result["checkpoint_dir"]}')
  if result['sample']:
    lines.append('sample:\n' + result['sample'])
  return '\n'.join(lines)
