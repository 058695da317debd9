r"""Default job: byte-level Shakespeare LM with causal FAVOR+ attention.

A 2-layer, 128-wide causal transformer (0.48M parameters, 64 random
features per head) on the complete plays as bytes, split by play, with a
context of 128 bytes. Sized for a 2-core CPU: measured 8m54s wall clock
including compilation, evaluation and the sample, on 2 cores shared with
other jobs (load ~4, ~7.5k tokens/s), reaching 2.44 validation and 2.40 test
bits per byte (target: below 2.5).

  python scripts/train.py
  python scripts/train.py --config=configs/lm_shakespeare.py:attention=softmax
  python scripts/train.py --config=configs/lm_shakespeare.py \
    --config.num_train_steps=500 --workdir=/tmp/shakespeare

Arguments (after the colon): attention=favor|softmax|local|sparse|...
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; `arg` as described in the module docstring."""
  args = common.parse_arg(arg, attention='favor')
  config = common.base_config()

  config.data.name = 'shakespeare'
  config.data.tokenizer = 'byte'
  config.data.seq_len = 128

  # Small enough for a 2-core CPU: ~0.5M parameters, ~2k tokens per step.
  config.model.attention = common.check_attention(args.attention)
  config.model.num_layers = 2
  config.model.emb_dim = 128
  config.model.qkv_dim = 128
  config.model.num_heads = 4
  config.model.mlp_dim = 512
  config.model.dropout_rate = 0.0  # Far too few steps to overfit.
  # FAVOR+ and its successors with the same features, for comparisons.
  for name in ('favor', 'favorpp', 'favorsharp'):
    config.model.attention_options[name].num_features = 64
    config.model.attention_options[name].chunk_size = 64

  config.batch_size = 16
  config.num_train_steps = 1800
  config.learning_rate = 4e-3
  config.warmup_steps = 100
  config.schedule = 'cosine'
  config.end_lr_fraction = 0.1
  config.weight_decay = 0.1

  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.eval_max_batches = 16
  config.test_max_batches = 32
  config.keep_checkpoints = 2

  config.sample_prompt = 'ROMEO:'
  config.sample_num_tokens = 200
  config.lock()
  return config
