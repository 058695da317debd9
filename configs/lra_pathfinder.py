r"""Long Range Arena Pathfinder and Path-X: are two marked dots connected?

Images of dashed curves with two marked endpoints, flattened to `size`^2
pixel tokens; the label says whether one curve joins the endpoints.
Generated (seeded) by performer.data.pathfinder, or read from the LRA
release images with data.path. size=32 is Pathfinder, size=128 is Path-X
(16,384 tokens), size=64 the intermediate LRA set; `difficulty` sets the
path length ('easy', 'medium', 'hard'; LRA's table uses 'hard').

Full settings (the public LRA code; 200 epochs of 160,000 images with
one epoch of warmup, Adam 1e-3 with a cosine decay, no weight decay):

  size   batch  steps    layers  heads  emb  qkv  mlp  pool  dropout
  32     512    62,400   4       4      32   16   32   mean  0.2
  64     256    125,000  2       4      32   32   32   cls   0.1
  128    64     500,000  1       2      32   16   32   mean  0.1

Path-X also clips gradients at norm 1.0. LRA's Performer used 8 heads on
Pathfinder-32; one model for every variant keeps attention the only
difference here (--config.model.num_heads=8 gives LRA's). Attention
options: configs/lra_common.py.

lite: 32x32 'easy' images unless size or difficulty is given, 10,000 /
1,000 / 1,000 examples, a 1-layer 32-wide encoder with mean pooling, batch
16, 400 steps at Adam 2e-3 with a cosine schedule, validation on 256
images, the test on 1,000; 'easy' (shorter paths) because 'hard'
Pathfinder stays at chance far longer. Sized for softmax, the slowest
variant: dense 1024 x 1024 attention took about 2 s of CPU per layer and
step of 16 images here, so a 2-layer model did not reach 100 steps in 9
minutes on the shared 2-core machine. Expect near-chance accuracy:
Pathfinder needs many epochs before any model leaves 50%.

  python scripts/train.py --config=configs/lra_pathfinder.py:favor \
    --workdir=workdirs/lra_pathfinder_favor
  python scripts/train.py \
    --config=configs/lra_pathfinder.py:attention=local,size=128
  python scripts/train.py \
    --config=configs/lra_pathfinder.py:attention=softmax,lite

Arguments (after the colon): attention=favor|softmax|local|sparse|...,
lite (bool), pretrain_steps=N (self-pretraining steps first, see
configs/lra_common.py), size=32|64|128, difficulty=easy|medium|hard ('' =
hard, or easy with lite).
"""

import ml_collections

from configs import common, lra_common

TRAIN_EXAMPLES = 160_000  # 80% of LRA's 200,000 images per difficulty.
EPOCHS = 200
DIFFICULTIES = ('easy', 'medium', 'hard')
# size -> (batch, layers, heads, emb, qkv, mlp, pool, dropout).
SETTINGS = {
  32: (512, 4, 4, 32, 16, 32, 'mean', 0.2),
  64: (256, 2, 4, 32, 32, 32, 'cls', 0.1),
  128: (64, 1, 2, 32, 16, 32, 'mean', 0.1),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked config; `arg` as described in the module docstring."""
  args = common.parse_arg(
    arg, attention='favor', lite=False, pretrain_steps=0, size=32, difficulty=''
  )
  if args.size not in SETTINGS:
    raise ValueError(
      f'size={args.size} is not a Pathfinder size; valid: {list(SETTINGS)}'
    )
  if args.difficulty and args.difficulty not in DIFFICULTIES:
    raise ValueError(
      f'difficulty={args.difficulty!r} is unknown; valid: {DIFFICULTIES}'
    )
  config = lra_common.base_config(args, data_name='pathfinder', num_classes=2)
  config.data.image_size = args.size
  config.data.seq_len = args.size**2
  config.data.difficulty = args.difficulty or 'hard'
  batch, layers, heads, emb, qkv, mlp, pool, dropout = SETTINGS[args.size]
  lra_common.set_model(
    config,
    emb=emb,
    heads=heads,
    layers=layers,
    qkv=qkv,
    mlp=mlp,
    pool=pool,
    dropout=dropout,
  )
  config.batch_size = batch
  steps_per_epoch = TRAIN_EXAMPLES // batch
  config.num_train_steps = EPOCHS * steps_per_epoch
  lra_common.set_cosine_schedule(config, lr=1e-3, warmup=steps_per_epoch)
  config.weight_decay = 0.0
  config.grad_clip_norm = 1.0 if args.size == 128 else 0.0
  config.eval_every_steps = steps_per_epoch * 5

  if args.lite:
    config.data.difficulty = args.difficulty or 'easy'
    config.data.num_train = 10_000
    config.data.num_validation = 1000
    config.data.num_test = 1000
    lra_common.set_model(
      config,
      emb=32,
      heads=4,
      layers=1,
      qkv=32,
      mlp=64,
      pool='mean',
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
