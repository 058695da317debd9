r"""Long Range Arena Text: byte-level IMDb sentiment, 2 classes.

Reviews of the TFDS dataset `imdb_reviews` as bytes, cut or padded to
`length` (1000 as in the public LRA code, 4000 as in the LRA paper).
Validation is every 10th training review (LRA validated on the test
split; see performer.data.imdb). Needs the dataset prepared in
data.data_dir (docs/data.md says how; without a download,
scripts/make_lra_standins.py writes a stand-in).

Full settings (the public LRA code): batch 32, 20,000 steps, LRA's rsqrt
schedule with base 0.05 and 8,000 warmup steps (peak 0.05 / sqrt(8000)),
weight decay 0.1, a 4-layer encoder (emb 256, 4 heads, qkv 256, mlp 1024),
CLS pooling, dropout 0.1. Attention options: configs/lra_common.py.

lite: reviews cut to 512 bytes, a 2-layer 64-wide encoder, batch 16, 400
steps at Adam 2e-3 with a cosine schedule; validation every 100 steps on
512 reviews and the test on the first 2,048 (whole splits take longer than
the training on a CPU). Softmax takes about 5 minutes of the shared 2-core
CPU; on the Text stand-in every variant fits its training set well within
the 400 steps.

  python scripts/train.py --config=configs/lra_text.py:favor \
    --config.data.data_dir=/data/tfds --workdir=workdirs/lra_text_favor
  python scripts/train.py \
    --config=configs/lra_text.py:attention=local,length=4000
  python scripts/train.py --config=configs/lra_text.py:attention=softmax,lite

Arguments (after the colon): attention=favor|softmax|local|sparse|...,
lite (bool), pretrain_steps=N (self-pretraining steps first, see
configs/lra_common.py), length=N (bytes per review; 0 = 1000, or 512 with lite).
"""

import ml_collections

from configs import common, lra_common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; `arg` as described in the module docstring."""
  args = common.parse_arg(
    arg, attention='favor', lite=False, pretrain_steps=0, length=0
  )
  if args.length < 0:
    raise ValueError(f'length must be >= 0 (0: the default), got {args.length}')
  config = lra_common.base_config(args, data_name='imdb', num_classes=2)
  config.data.seq_len = args.length or (512 if args.lite else 1000)
  lra_common.set_model(
    config,
    emb=256,
    heads=4,
    layers=4,
    qkv=256,
    mlp=1024,
    pool='cls',
    dropout=0.1,
  )
  config.batch_size = 32
  config.num_train_steps = 20_000
  lra_common.set_rsqrt_schedule(config, base_lr=0.05, warmup=8000)
  config.weight_decay = 0.1
  config.eval_every_steps = 1000

  if args.lite:
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
      eval_every=100,
      eval_examples=512,
    )
  config.lock()
  return config
