r"""Feature redraw (paper Fig. 5 right, Fig. 15): one LM, redraw or not.

The same causal language model trained with FAVOR+ whose random features
are redrawn every `redraw` steps or never (redraw=0), with positive
(features=positive, FAVOR+) or trigonometric (features=trig, sin/cos)
softmax features, and exact softmax attention as the reference curve.
Everything else (model, data, seed, optimizer) is identical across the
sweep, so the curves differ only in the attention's features.

data=shakespeare (default): byte-level Shakespeare at a CPU size (the
lm_shakespeare model, 2 layers, 128 wide, context 128, 64 features per
head; 300 steps, about 4 minutes per run on 2 shared cores).
data=pg19: the paper-like setting (PG-19, the lm_pg19 model: 8 layers, 512
wide, 4096-token windows, 256 features; redraw every 1000 steps is a
reasonable start), for those with PG-19 prepared in data.data_dir.

The CPU sweep (docs/experiments.md, part 3):

  W=/tmp/redraw
  python scripts/train.py --config=configs/lm_redraw.py:attention=softmax \
    --workdir=$W/softmax
  python scripts/train.py --config=configs/lm_redraw.py:redraw=0 \
    --workdir=$W/positive_never
  python scripts/train.py --config=configs/lm_redraw.py:redraw=50 \
    --workdir=$W/positive_every50
  python scripts/train.py \
    --config=configs/lm_redraw.py:features=trig,redraw=0 \
    --workdir=$W/trig_never
  python scripts/train.py \
    --config=configs/lm_redraw.py:features=trig,redraw=50 \
    --workdir=$W/trig_every50
  python scripts/plot_curves.py $W/softmax $W/positive_never \
    $W/positive_every50 $W/trig_never $W/trig_every50 \
    --png=docs/experiments/redraw.png --json=docs/experiments/redraw.json

Arguments (after the colon): attention=favor|softmax|... (the features and
redraw arguments apply to favor), features=positive|trig, redraw=N (steps
between redraws; 0 = never), data=shakespeare|pg19, steps=N (the run
length; 0 = the setting's, 300 or 100,000; warmup 10% of N, validation
about 24 times).
"""

import ml_collections

from configs import common

FEATURES = {'positive': 'softmax', 'trig': 'softmax_trig'}
DATA = ('shakespeare', 'pg19')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; `arg` as described in the module docstring."""
  args = common.parse_arg(
    arg,
    attention='favor',
    features='positive',
    redraw=0,
    data='shakespeare',
    steps=0,
  )
  if args.features not in FEATURES:
    raise ValueError(
      f'features={args.features!r}; valid: {", ".join(FEATURES)}'
    )
  if args.redraw < 0:
    raise ValueError(f'redraw must be >= 0 steps, got {args.redraw}')
  if args.steps < 0:
    raise ValueError(
      f"steps must be >= 0 (0: the setting's default), got {args.steps}"
    )
  if args.data not in DATA:
    raise ValueError(f'data={args.data!r}; valid: {", ".join(DATA)}')
  config = common.base_config()
  config.model.attention = common.check_attention(args.attention)
  favor = config.model.attention_options.favor
  favor.kernel = FEATURES[args.features]
  favor.redraw_interval = args.redraw
  favor.projection = 'orthogonal'

  if args.data == 'shakespeare':
    config.data.name = 'shakespeare'
    config.data.tokenizer = 'byte'
    config.data.seq_len = 128
    # The default job's model (configs/lm_shakespeare.py).
    config.model.num_layers = 2
    config.model.emb_dim = 128
    config.model.qkv_dim = 128
    config.model.num_heads = 4
    config.model.mlp_dim = 512
    config.model.dropout_rate = 0.0
    favor.num_features = 64
    favor.chunk_size = 64

    config.batch_size = 16
    config.num_train_steps = 300
    config.learning_rate = 4e-3
    config.warmup_steps = 30
    config.end_lr_fraction = 0.1
    config.log_every_steps = 25
    config.eval_every_steps = 25
    config.eval_max_batches = 8
    config.test_max_batches = 16
    config.sample_num_tokens = 0
  else:
    config.data.name = 'pg19'
    config.data.tokenizer = 'sentencepiece'
    config.data.spm_vocab_size = 32_000
    config.data.seq_len = 4096
    # The lm_pg19 model.
    config.model.num_layers = 8
    config.model.emb_dim = 512
    config.model.qkv_dim = 512
    config.model.num_heads = 8
    config.model.mlp_dim = 2048
    config.model.dropout_rate = 0.1
    config.model.position = 'rotary'
    config.dtype = 'bfloat16'
    favor.num_features = 256
    favor.chunk_size = 256

    config.batch_size = 16
    config.num_train_steps = 100_000
    config.learning_rate = 1e-3
    config.warmup_steps = 2000
    config.end_lr_fraction = 0.1
    config.log_every_steps = 100
    config.eval_every_steps = 2000
    config.eval_max_batches = 50
    config.checkpoint_every_steps = 2000
    config.sample_num_tokens = 0
  if args.steps:
    # A longer (or shorter) run of the same setting: the warmup stays 10%
    # of it and validation keeps about 24 points on the curve.
    config.num_train_steps = args.steps
    config.warmup_steps = max(1, args.steps // 10)
    cadence = max(25, args.steps // 24)
    config.eval_every_steps = cadence
    config.log_every_steps = cadence
  config.keep_checkpoints = 1
  config.schedule = 'cosine'
  config.weight_decay = 0.1
  config.lock()
  return config
