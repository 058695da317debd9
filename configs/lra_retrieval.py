r"""Long Range Arena Retrieval: ACL Anthology citation links, 2 classes.

Pairs of papers as bytes, 4000 per document; the label says whether one
cites the other. Two-tower: both documents go through one shared encoder,
pooled and compared by an MLP (model.head='dual_encoder'). Reads the TSV
files of the LRA release from data.path (performer.data.aan lists them;
without a download, scripts/make_lra_standins.py writes a stand-in).

Full settings (the public LRA code): batch 32, 5,000 steps, LRA's rsqrt
schedule with base 0.05 and 8,000 warmup steps (so the run ends still in
warmup, at 5/8 of the peak 0.05 / sqrt(8000), as in LRA), weight decay
0.1, a 4-layer encoder (emb 128, 4 heads, qkv 128, mlp 512), CLS pooling,
dropout 0.1. Attention options: configs/lra_common.py.

lite: documents cut to 512 bytes, a 2-layer 64-wide encoder, batch 16
(pairs: 32 encoded documents), 400 steps at Adam 2e-3 with a cosine
schedule; validation on 256 pairs and the test on the first 1,024.

  python scripts/train.py --config=configs/lra_retrieval.py:favor \
    --config.data.path=/data/lra_release/tsv_data \
    --workdir=workdirs/lra_retrieval_favor
  python scripts/train.py \
    --config=configs/lra_retrieval.py:attention=softmax,lite \
    --config.data.path=/data/lra_release/tsv_data

Arguments (after the colon): attention=favor|softmax|local|sparse|...,
lite (bool), pretrain_steps=N (self-pretraining steps first, see
configs/lra_common.py).
"""

import ml_collections

from configs import common, lra_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; `arg` as described in the module docstring."""
  args = common.parse_arg(arg, attention='favor', lite=False, pretrain_steps=0)
  config = lra_common.base_config(
    args, data_name='aan', num_classes=2, head='dual_encoder'
  )
  config.data.seq_len = 4000
  lra_common.set_model(
    config,
    emb=128,
    heads=4,
    layers=4,
    qkv=128,
    mlp=512,
    pool='cls',
    dropout=0.1,
  )
  config.batch_size = 32
  config.num_train_steps = 5000
  lra_common.set_rsqrt_schedule(config, base_lr=0.05, warmup=8000)
  config.weight_decay = 0.1
  config.eval_every_steps = 500

  if args.lite:
    config.data.seq_len = 512
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
      steps=400,
      batch_size=16,
      lr=2e-3,
      eval_every=200,
      eval_examples=256,
    )
  config.lock()
  return config
