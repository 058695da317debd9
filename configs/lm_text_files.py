r"""Byte-level LM on your own text files (e.g. enwik8), causal FAVOR+.

`path` is one file or a directory (all files below it, sorted, joined); its
bytes are cut into train / validation / test by data.validation_fraction
and data.test_fraction (5% each: enwik8's standard 90M / 5M / 5M).

  python scripts/train.py --config=configs/lm_text_files.py:path=/data/enwik8
  python scripts/train.py \
    --config=configs/lm_text_files.py:path=/data/enwik8,attention=softmax \
    --workdir=workdirs/enwik8_softmax

Separate files per split: --config.data.path='' --config.data.train_path=A
--config.data.validation_path=B --config.data.test_path=C.

Arguments (after the colon): path=FILE_OR_DIR, attention=favor|softmax|...
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; `arg` as described in the module docstring."""
  args = common.parse_arg(arg, path='', attention='favor')
  config = common.base_config()

  config.data.name = 'text_files'
  config.data.tokenizer = 'byte'
  config.data.path = args.path
  config.data.seq_len = 1024

  config.model.attention = common.check_attention(args.attention)
  config.model.num_layers = 8
  config.model.emb_dim = 512
  config.model.qkv_dim = 512
  config.model.num_heads = 8
  config.model.mlp_dim = 2048
  config.model.dropout_rate = 0.1
  config.model.attention_options.favor.num_features = 256

  config.batch_size = 32
  config.num_train_steps = 100_000
  config.learning_rate = 1e-3
  config.warmup_steps = 2000
  config.schedule = 'cosine'
  config.end_lr_fraction = 0.1

  config.log_every_steps = 100
  config.eval_every_steps = 2000
  config.eval_max_batches = 100
  config.checkpoint_every_steps = 1000
  config.sample_prompt = 'The '
  config.lock()
  return config
