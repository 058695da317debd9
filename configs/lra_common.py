"""Pieces shared by the Long Range Arena configs (configs/lra_*.py).

Each task file states its own hyperparameters (those of the per-task configs
of the public LRA code, google-research/long-range-arena) and its `lite`
variant; this module holds what the five share:

- `base_config`: a bidirectional classifier (or dual encoder), Adam(0.9,
  0.98, 1e-9), learned positions sized by data.seq_len (some LRA encoders,
  ListOps' and Pathfinder-32's, kept a fixed sinusoidal table instead:
  --config.model.position=sinusoidal), no gradient clipping, the best
  checkpoint picked by validation accuracy, no text sample.
- `set_model`, `set_rsqrt_schedule`, `set_cosine_schedule`: the model sizes
  and the two learning-rate schedules the LRA code used.
- `set_attention_options`: the options of each attention variant as the
  LRA runs used them.
- `set_lite`: evaluation cadence and example counts of the CPU-sized runs.

Self-pretraining (`pretrain_steps=N` in every task's argument, or
--config.pretrain_steps=N): N steps of a masked-token model on the task's
own training inputs, then the task from its encoder, in one command
(`performer.pretrain`). The masking rates are those of Amos, Berant and
Gupta (ICLR 2024), `MASK_RATES` (data.mask_rate): 10% of ListOps' tokens,
15% of the text tasks' bytes (Text; Retrieval's two documents), 50% of the
pixels (Image, Pathfinder; a masked pixel is predicted among its 256
levels).

Attention options (checked against lra_benchmarks/models and the per-task
configs of the public code):

- favor (and favor_scan): the LRA Performer runs used the generalized-kernel
  variant by default: ReLU features f(x) + 1e-3 with no random projection
  (`features_type='deterministic'`, so the 256 features it declares are
  unused), no redraw. That is kernel='relu', projection='none' here, the
  default of `set_attention_options`. The LRA ListOps config alone asked for
  the positive softmax kernel with 2 orthogonal features (chi row norms),
  redrawn at every call; lra_listops.py passes that. For the paper's
  FAVOR+ instead: --config.model.attention_options.favor.kernel=softmax
  --config.model.attention_options.favor.projection=orthogonal
  --config.model.attention_options.favor.num_features=256.
- local: non-overlapping blocks of 50 positions (LRA's local encoder's
  block_size).
- sparse: the Sparse Transformer's fixed pattern with blocks of 50 and 10
  summary positions per block (what LRA's get_model passed). LRA applied
  it causally even in the encoders; here it is bidirectional like every
  other variant of a classifier.
- linformer: k = 16 slots, one projection shared by keys and values (and,
  as always here, by the heads). Unlike LRA's, padded keys are removed
  before the projection.
- reformer: 1 hash round into 10 buckets, chunks of 64 (LRA: 10 buckets, 1
  round). Unlike LRA's: logits scaled by 1/sqrt(d) (LRA multiplied),
  length-normalized keys, rotations drawn per layer from (seed, step), the
  padding mask applied.
- longformer: a sliding window of 512 (LRA's) plus the CLS token as the one
  global token, as the Longformer paper does for classification (LRA's had
  none, and built a dense L x L mask).
- sinkhorn: blocks of 50 (64 for Image, set in lra_image.py), 8 Sinkhorn
  iterations at temperature 0.75 (the paper's; LRA's defaults ran none and
  its sorting contracted the permutation away).
- synthesizer: 'random' + vanilla, softmax(R + Q K^T / sqrt(d)) with a
  learned [heads, max_len, max_len] R, as LRA ran it.
- linear: elu + 1 features (LRA ignored the padding mask; here padded keys
  are removed).
"""

import math

import ml_collections

from configs import common

# Adam as in every LRA task's train.py.
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.98, 1e-9
# LRA's local attention block and Sparse Transformer fixed pattern.
LOCAL_BLOCK = 50
SPARSE_BLOCK, SPARSE_SUMMARY = 50, 10
# The other LRA baselines (see the module docstring).
ZOO_OPTIONS = {
  'linformer': {'k': 16, 'share_kv': True},
  'reformer': {'n_hashes': 1, 'n_buckets': 10, 'bucket_size': 64},
  'longformer': {'window': 512, 'global_positions': (0,)},
  'sinkhorn': {'block_size': 50, 'sinkhorn_iters': 8, 'temperature': 0.75},
  'synthesizer': {'mode': 'random', 'vanilla': True},
}
# Self-pretraining's masking rate per dataset (module docstring).
MASK_RATES = {
  'listops': 0.10,
  'imdb': 0.15,
  'aan': 0.15,
  'cifar10': 0.50,
  'pathfinder': 0.50,
}
# The LRA Performer default: generalized attention, deterministic ReLU
# features (see the module docstring).
FAVOR_OPTIONS = {
  'kernel': 'relu',
  'projection': 'none',
  'kernel_eps': 1e-3,
  'num_features': 256,
  'redraw_interval': 0,
}


def base_config(
  args: ml_collections.ConfigDict,
  *,
  data_name: str,
  num_classes: int,
  head: str = 'classifier',
) -> ml_collections.ConfigDict:
  """The trainer fields every LRA task shares (unlocked; see module doc).

  Args:
    args: the parsed config argument; reads `attention` and
      `pretrain_steps`.
    data_name: the `performer.data` dataset.
    num_classes: labels of the task.
    head: 'classifier' or 'dual_encoder'.
  """
  config = common.base_config()
  config.data.name = data_name
  config.model.head = head
  config.model.causal = False
  config.model.num_classes = num_classes
  config.model.position = 'learned'  # Sized by data.seq_len (a reference).
  config.model.attention = common.check_attention(args.attention)
  set_attention_options(config)
  config.pretrain_steps = args.pretrain_steps
  config.data.mask_rate = MASK_RATES[data_name]

  config.b1, config.b2, config.eps = ADAM_B1, ADAM_B2, ADAM_EPS
  config.grad_clip_norm = 0.0  # LRA clips only Path-X.
  config.end_lr_fraction = 0.0
  config.best_metric = 'accuracy'
  config.best_mode = 'max'
  config.sample_num_tokens = 0  # Classifiers write no text.
  config.log_every_steps = 100
  config.keep_checkpoints = 1
  return config


def set_model(
  config: ml_collections.ConfigDict,
  *,
  emb: int,
  heads: int,
  layers: int,
  qkv: int,
  mlp: int,
  pool: str,
  dropout: float,
) -> None:
  """Sets the encoder sizes, pooling ('cls' or 'mean') and dropout."""
  m = config.model
  m.emb_dim, m.num_heads, m.num_layers = emb, heads, layers
  m.qkv_dim, m.mlp_dim = qkv, mlp
  m.pool = pool
  m.dropout_rate = dropout


def set_rsqrt_schedule(
  config: ml_collections.ConfigDict, *, base_lr: float, warmup: int
) -> None:
  """LRA's 'constant * linear_warmup * rsqrt_decay' schedule.

  LRA's rsqrt factor divides by sqrt(max(step, warmup)) without
  normalizing, so its peak (at the end of warmup) is base_lr / sqrt(warmup)
  and it decays as peak * sqrt(warmup / step), which is our 'rsqrt' with
  learning_rate = base_lr / sqrt(warmup). With warmup longer than the run
  (Retrieval: 8000 of 5000 steps) the peak is never reached, as in LRA.
  """
  config.learning_rate = base_lr / math.sqrt(warmup)
  config.warmup_steps = warmup
  config.schedule = 'rsqrt'


def set_cosine_schedule(
  config: ml_collections.ConfigDict, *, lr: float, warmup: int
) -> None:
  """LRA's 'constant * linear_warmup * cosine_decay' with one cycle."""
  config.learning_rate = lr
  config.warmup_steps = warmup
  config.schedule = 'cosine'


def set_attention_options(
  config: ml_collections.ConfigDict, favor: dict | None = None
) -> None:
  """Sets every variant's options as the LRA runs used them.

  Args:
    config: the config to change.
    favor: FAVOR+ options replacing `FAVOR_OPTIONS` (ListOps).
  """
  options = config.model.attention_options
  for name in ('favor', 'favor_scan'):
    if name in options:  # favor_scan: the same module, scanned per token.
      options[name].update(favor or FAVOR_OPTIONS)
  options.local.pattern = 'block'
  options.local.window = LOCAL_BLOCK
  options.sparse.pattern = 'fixed'
  options.sparse.block_size = SPARSE_BLOCK
  options.sparse.num_summary = SPARSE_SUMMARY
  for name, values in ZOO_OPTIONS.items():
    options[name].update(values)


def set_lite(
  config: ml_collections.ConfigDict,
  *,
  steps: int,
  batch_size: int,
  lr: float,
  eval_every: int,
  eval_examples: int,
) -> None:
  """Shared settings of the CPU-sized `lite` runs.

  A cosine schedule with 10% warmup at an Adam learning rate that suits a
  few thousand steps (LRA's rsqrt schedule barely leaves warmup in a short
  run); no dropout (too few steps to overfit); validation on the first
  `eval_examples` examples, the test on at most 4 times as many.
  """
  config.num_train_steps = steps
  config.batch_size = batch_size
  set_cosine_schedule(config, lr=lr, warmup=max(1, steps // 10))
  config.weight_decay = 0.0
  config.model.dropout_rate = 0.0
  config.eval_every_steps = eval_every
  config.log_every_steps = min(config.log_every_steps, eval_every)
  config.eval_max_batches = max(1, eval_examples // batch_size)
  config.test_max_batches = max(1, 4 * eval_examples // batch_size)
