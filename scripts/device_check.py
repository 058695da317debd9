r"""Checks a machine in one command: install, kernels, speed, training.

Prints the platform, devices and the versions of jax, jaxlib, the CUDA
plugin and CUDA, then runs four parts, each guarded (a failing part is
recorded with its reason and the next one runs) and each written to
--out as soon as it ends:

  1. cudnn        exact softmax in bf16: does the compiled program call
                  cuDNN's fused attention (a `__cudnn$fmha*` custom call)?
  2. attention    forward+backward of every attention variant, causal and
                  bidirectional, bf16 then fp32, L = 1K .. 64K (B=1, H=8,
                  D=64, M=256), with XLA's peak-memory estimate; lengths
                  that would not fit the device are skipped.
  3. lra_text     LRA Text at its published size, softmax and FAVOR+, a few
                  hundred training steps at L = 1K / 2K / 4K: steps/s and
                  peak memory beside LRA Table 2.
  4. shakespeare  the default job at a GPU-sized model (6 layers, emb 512,
                  context 1024, batch 32) through the trainer: tokens/s.

Outputs: platform.json, cudnn.json, attention.json, lra_text.json,
shakespeare.json and summary.md (also printed). Sized to end within 8
minutes on one H100/H200; --budget_s stops it cleanly earlier (each part
has a share; what a part cannot fit is recorded as left out).

  python scripts/device_check.py
  python scripts/device_check.py --out=docs/benchmarks/gpu_h100 --budget_s=420
  python scripts/device_check.py --parts=cudnn,attention
  python scripts/device_check.py --smoke   # Tiny sizes, seconds on a CPU.
"""

import sys

from performer.bench import device_check, flags


def _validate(args) -> list[str]:
  if not args.budget_s > 0:
    raise ValueError(f'--budget_s must be > 0 seconds, got {args.budget_s}')
  parts = flags.check_choices(
    flags.split_list(args.parts, '--parts'),
    device_check.PARTS,
    '--parts',
    'part',
  )
  if not args.out:
    raise ValueError("--out must name a directory, got ''")
  return parts


def main(argv: list[str] | None = None) -> dict:
  parser = flags.new_parser(__doc__)
  parser.add_argument(
    '--out', default='device_check', help='directory for the outputs'
  )
  parser.add_argument(
    '--budget_s',
    type=float,
    default=480.0,
    help='seconds for the whole check (default 480: 8 minutes)',
  )
  parser.add_argument(
    '--parts',
    default=','.join(device_check.PARTS),
    help=f'comma-separated subset of {",".join(device_check.PARTS)}',
  )
  parser.add_argument(
    '--smoke', action='store_true', help='every part at tiny sizes'
  )
  parser.add_argument(
    '--data_dir',
    default='',
    help="where part 4 prepares the Shakespeare data (default: the config's)",
  )
  args, parts = flags.parse(parser, argv, _validate)
  return device_check.run(
    args.out,
    budget_s=args.budget_s,
    smoke=args.smoke,
    parts=parts,
    data_dir=args.data_dir,
  )


if __name__ == '__main__':
  main(sys.argv[1:])
