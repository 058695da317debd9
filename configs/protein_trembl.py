r"""Protein language modeling on TrEMBL (paper Table 2 and the L=8192 run).

Unidirectional (objective=causal: next amino acid) or bidirectional
(objective=masked: BERT-style masked amino acids, a bidirectional model)
language models of protein sequences from the user's FASTA file (data.path:
TrEMBL or any UniProt download; see performer/data/protein.py for the
format, the 29-token vocabulary and the fixed 90/5/5 split by id hash).
Metrics: accuracy and perplexity of the predicted amino acids.

size=paper: the paper's setting: L = 1024 (one protein per example, cut to
its first 1024 positions), 36 layers, 8 heads, d_ff 1024, d 512,
Adam(0.9, 0.98, 1e-9), learning rate 1e-3, gradient clip 0.5, weight decay
0.1, dropout 0.1. concat=True: proteins concatenated into one stream cut
into windows of L = 8192 (the paper's concatenated TrEMBL experiment).
The paper gives no batch size, step count or schedule for these runs; ours
(batch 32, or 8 at L = 8192; 100k steps, 5k warmup steps, then
inverse-square-root decay) are a choice.
size=small: a CPU size that trains in a few minutes (2 layers, d 128,
L = 128, 600 steps), with or without concat (--config.data.seq_len sets a
longer window; docs/experiments.md section 5 runs it at L = 2048).

attention=favor with kernel=relu is the paper's "Performer" (Performer-ReLU,
the default); kernel=softmax is Performer-softmax (positive features);
attention=softmax is the Transformer baseline.

  python scripts/train.py --config=configs/protein_trembl.py \
    --config.data.path=/data/uniprot_trembl.fasta --workdir=/tmp/trembl_uni
  python scripts/train.py \
    --config=configs/protein_trembl.py:objective=masked,attention=softmax \
    --config.data.path=/data/uniprot_trembl.fasta --workdir=/tmp/trembl_bi
  python scripts/train.py --config=configs/protein_trembl.py:concat \
    --config.data.path=/data/uniprot_trembl.fasta --workdir=/tmp/trembl_8k

Arguments (after the colon): attention=favor|softmax|..., objective=causal|
masked, kernel=relu|softmax (FAVOR+'s kernel), size=paper|small, concat
(bool), path=FASTA file (or --config.data.path; required: an empty path
fails when training starts).
"""

import ml_collections

from configs import common
from performer import data

KERNELS = ('relu', 'softmax')
SIZES = ('paper', 'small')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; `arg` as described in the module docstring."""
  args = common.parse_arg(
    arg,
    attention='favor',
    objective='causal',
    kernel='relu',
    size='paper',
    concat=False,
    path='',
  )
  for key, valid in (
    ('objective', data.OBJECTIVES),
    ('kernel', KERNELS),
    ('size', SIZES),
  ):
    if args[key] not in valid:
      raise ValueError(f'{key}={args[key]!r}; valid: {", ".join(valid)}')
  config = common.base_config()

  config.data.name = 'protein'
  config.data.path = args.path
  config.data.objective = args.objective
  config.data.mask_rate = 0.15
  config.data.concatenate = args.concat

  config.model.attention = common.check_attention(args.attention)
  config.model.causal = args.objective == 'causal'
  config.model.head = 'lm'
  favor = config.model.attention_options.favor
  favor.kernel = args.kernel
  favor.num_features = 256
  favor.projection = 'orthogonal'

  # Published training settings (published.md).
  config.b1, config.b2, config.eps = 0.9, 0.98, 1e-9
  config.learning_rate = 1e-3
  config.grad_clip_norm = 0.5
  config.weight_decay = 0.1
  config.schedule = 'rsqrt'
  config.best_metric = 'loss'
  config.sample_num_tokens = 0

  if args.size == 'paper':
    config.data.seq_len = 8192 if args.concat else 1024
    config.model.num_layers = 36
    config.model.num_heads = 8
    config.model.emb_dim = 512
    config.model.qkv_dim = 512
    config.model.mlp_dim = 1024
    config.model.dropout_rate = 0.1
    favor.chunk_size = 256
    config.batch_size = 8 if args.concat else 32
    config.num_train_steps = 100_000
    config.warmup_steps = 5000
    config.log_every_steps = 100
    config.eval_every_steps = 2000
    config.eval_max_batches = 50
    config.checkpoint_every_steps = 2000
  else:
    config.data.seq_len = 128
    config.model.num_layers = 2
    config.model.num_heads = 4
    config.model.emb_dim = 128
    config.model.qkv_dim = 128
    config.model.mlp_dim = 256
    config.model.dropout_rate = 0.0  # Too few steps to overfit.
    favor.num_features = 64
    favor.chunk_size = 64
    config.batch_size = 16
    config.num_train_steps = 600
    config.warmup_steps = 50
    config.learning_rate = 3e-3
    config.schedule = 'cosine'
    config.end_lr_fraction = 0.1
    config.log_every_steps = 50
    config.eval_every_steps = 100
    config.eval_max_batches = 16
    config.test_max_batches = 0
  config.keep_checkpoints = 2
  config.lock()
  return config
