r"""Long Range Arena Image: CIFAR-10 as 1024-pixel grayscale sequences.

Each 32x32 image becomes a sequence of 1024 grayscale intensities (one
token per pixel, no 2-D structure given to the model); 10 classes. The
TFDS `cifar10` train split is cut 90% / 10% into train / validation; needs
the dataset prepared in data.data_dir (without a download,
scripts/make_lra_standins.py writes a stand-in).

Full settings (the public LRA code): batch 256, 35,000 steps (200 epochs of
45,000 images), Adam 5e-4 with one epoch (175 steps) of warmup and a cosine
decay, no weight decay, a 1-layer encoder (emb 128, 8 heads, qkv 64,
mlp 128), CLS pooling, dropout 0.3 (LRA's separate attention dropout of
0.2 has no counterpart here). Attention options: configs/lra_common.py.

lite: the same 1024-pixel sequences (the task is the length) with a
1-layer 64-wide encoder, batch 16, 400 steps at Adam 2e-3 with a cosine
schedule; validation on 256 images and the test on the first 1,024. Sized
for softmax, the slowest variant: dense 1024 x 1024 attention costs about
2 s of CPU per layer and step of 16 (measured on Pathfinder-32 lite).

  python scripts/train.py --config=configs/lra_image.py:favor \
    --config.data.data_dir=/data/tfds --workdir=workdirs/lra_image_favor
  python scripts/train.py --config=configs/lra_image.py:attention=softmax,lite

Arguments (after the colon): attention=favor|softmax|local|sparse|...,
lite (bool), pretrain_steps=N (self-pretraining steps first, see
configs/lra_common.py).
"""

import ml_collections

from configs import common, lra_common

TRAIN_EXAMPLES = 45_000  # 90% of the CIFAR-10 train split.
EPOCHS = 200


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; `arg` as described in the module docstring."""
  args = common.parse_arg(arg, attention='favor', lite=False, pretrain_steps=0)
  config = lra_common.base_config(args, data_name='cifar10', num_classes=10)
  config.data.seq_len = 1024
  # LRA's Sinkhorn used blocks of 64 on CIFAR-10 (32 x 32 = 16 blocks).
  config.model.attention_options.sinkhorn.block_size = 64
  lra_common.set_model(
    config,
    emb=128,
    heads=8,
    layers=1,
    qkv=64,
    mlp=128,
    pool='cls',
    dropout=0.3,
  )
  config.batch_size = 256
  steps_per_epoch = TRAIN_EXAMPLES // config.batch_size
  config.num_train_steps = EPOCHS * steps_per_epoch
  lra_common.set_cosine_schedule(config, lr=5e-4, warmup=steps_per_epoch)
  config.weight_decay = 0.0
  config.eval_every_steps = steps_per_epoch * 5

  if args.lite:
    lra_common.set_model(
      config,
      emb=64,
      heads=4,
      layers=1,
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
