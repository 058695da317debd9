r"""Long Range Arena ListOps: nested list operations, 10 classes.

Sequences of up to 2000 tokens such as `[MAX 4 3 [MIN 2 3 ] 1 0 ]`; the
label is the value of the expression. Generated (seeded) by
performer.data.listops: 96,000 / 2,000 / 2,000 unique trees of length
500 < n < 2000.

Full settings (the public LRA code): batch 32, 5,000 steps, LRA's rsqrt
schedule with base 0.05 and 1,000 warmup steps (peak 0.05 / sqrt(1000)),
weight decay 0.1, a 4-layer encoder (emb 512, 8 heads, qkv 512, mlp 1024),
CLS pooling, dropout 0.1. FAVOR+ as the LRA ListOps Performer config set
it: positive softmax features, 2 orthogonal random features (chi row
norms), redrawn every step; FAVOR++ and FAVOR# (favorpp, favorsharp) draw
their features the same way. See configs/lra_common.py for every variant's
options. The best-validation checkpoint is evaluated on the test split
(LRA evaluated the last one).

lite: trees of length 50 < n < 200 padded to 200 tokens, 20,000 / 1,000 /
1,000 examples (generated in seconds), a 2-layer 64-wide encoder, batch 32,
1,000 steps at Adam 2e-3 with a cosine schedule. Shorter trees keep the
task (nested operators, 10 classes) while making a CPU run take minutes:
softmax reached 35% validation accuracy after 500 steps (10 classes).

  python scripts/train.py --config=configs/lra_listops.py:favor \
    --workdir=workdirs/lra_listops_favor
  python scripts/train.py --config=configs/lra_listops.py:attention=softmax,lite

Arguments (after the colon): attention=favor|softmax|local|sparse|...,
lite (bool), pretrain_steps=N (self-pretraining steps first, see
configs/lra_common.py).
"""

import ml_collections

from configs import common, lra_common

# The LRA ListOps Performer config (performer_base.py): softmax kernel,
# nb_features=2, ortho_scaling=0 (chi norms), redraw_features=True.
LISTOPS_FAVOR = {
  'kernel': 'softmax',
  'projection': 'orthogonal',
  'row_norm': 'chi',
  'num_features': 2,
  'redraw_interval': 1,
}
LISTOPS_PROJECTION = {k: v for k, v in LISTOPS_FAVOR.items() if k != 'kernel'}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; `arg` as described in the module docstring."""
  args = common.parse_arg(arg, attention='favor', lite=False, pretrain_steps=0)
  config = lra_common.base_config(args, data_name='listops', num_classes=10)
  lra_common.set_attention_options(config, favor=LISTOPS_FAVOR)
  # FAVOR++ and FAVOR# draw their features as this FAVOR+ does (2
  # orthogonal, redrawn every call), so that the three differ by the
  # kernel alone (their kernels are their own: no `kernel` option).
  for name in ('favorpp', 'favorsharp'):
    config.model.attention_options[name].update(LISTOPS_PROJECTION)
  config.data.seq_len = 2000
  config.data.min_length = 500
  config.data.max_length = 2000
  lra_common.set_model(
    config,
    emb=512,
    heads=8,
    layers=4,
    qkv=512,
    mlp=1024,
    pool='cls',
    dropout=0.1,
  )
  config.batch_size = 32
  config.num_train_steps = 5000
  lra_common.set_rsqrt_schedule(config, base_lr=0.05, warmup=1000)
  config.weight_decay = 0.1
  config.eval_every_steps = 500

  if args.lite:
    config.data.seq_len = 200
    config.data.min_length = 50
    config.data.max_length = 200
    config.data.num_train = 20_000
    config.data.num_validation = 1000
    config.data.num_test = 1000
    lra_common.set_model(
      config,
      emb=64,
      heads=4,
      layers=2,
      qkv=64,
      mlp=128,
      pool='cls',
      dropout=0.0,
    )
    lra_common.set_lite(
      config,
      steps=1000,
      batch_size=32,
      lr=2e-3,
      eval_every=250,
      eval_examples=512,
    )
  config.lock()
  return config
