r"""Backward compatibility (paper Fig. 5 left): softmax weights into FAVOR+.

One command:

  1. trains the softmax Transformer LM of configs/lm_backward_compat.py
     (stage=pretrain) in <root>/softmax, or reuses a finished run there
     (or the one given by --pretrained, e.g. the redraw sweep's softmax
     run, which has the same config);
  2. builds the same model with FAVOR+ attention, loads the softmax
     model's best checkpoint into it (config.init_from, see
     performer/transfer.py) and fine-tunes it (stage=finetune) in
     <root>/favor_finetune; the trainer evaluates it at step 0, right
     after the swap;
  3. draws the validation accuracy of both runs against their own steps
     (the softmax model from scratch, FAVOR+ from the swap), writes the
     PNG and the JSON of the points, and prints the accuracy right after
     the swap and when FAVOR+ gets back to the softmax model's level.

  python scripts/backward_compat.py --root=/tmp/compat \
    --png=docs/experiments/backward_compat.png \
    --json=docs/experiments/backward_compat.json

A finished run (one with results.json) is reused, not trained again; an
interrupted one resumes.
"""

import json
import os
import sys
from collections.abc import Sequence

from configs import lm_backward_compat
from performer import workdir as workdir_lib
from performer.bench import curves as curves_lib
from performer.bench import flags


def _train(arg: str, workdir: str) -> None:
  """Trains config lm_backward_compat:`arg` in `workdir` unless finished."""
  if workdir_lib.read_results(workdir) is not None:
    print(f'reusing the finished run in {workdir}')
    return
  from performer import train  # Imported late: --help stays fast.

  config = lm_backward_compat.get_config(arg)
  print(f'training lm_backward_compat:{arg} in {workdir}')
  train.train_and_evaluate(config, workdir)


def main(argv: Sequence[str] | None = None) -> int:
  parser = flags.new_parser(__doc__.split('\n\n')[0])
  parser.add_argument('--root', default='/tmp/backward_compat')
  parser.add_argument(
    '--pretrained',
    default='',
    help='a finished softmax run to start from (default: <root>/softmax, '
    'trained if missing)',
  )
  parser.add_argument(
    '--finetune_steps', type=int, default=0, help='0: the config default'
  )
  parser.add_argument('--metric', default='accuracy')
  parser.add_argument('--png', default='backward_compat.png')
  parser.add_argument('--json', default='')
  args = parser.parse_args(argv)

  pretrained = os.path.abspath(
    args.pretrained or os.path.join(args.root, 'softmax')
  )
  finetuned = os.path.abspath(os.path.join(args.root, 'favor_finetune'))
  if args.pretrained:
    if not os.path.isdir(pretrained):
      print(f'error: --pretrained {pretrained} does not exist', file=sys.stderr)
      return 1
  else:
    _train('stage=pretrain', pretrained)
  if ',' in pretrained:
    print(f'error: a comma in {pretrained} breaks the config argument')
    return 1
  arg = f'stage=finetune,init_from={pretrained}'
  if args.finetune_steps:
    arg += f',steps={args.finetune_steps}'
  _train(arg, finetuned)

  try:
    summary = curves_lib.transfer_summary(pretrained, finetuned, args.metric)
    curves = curves_lib.curves_of(
      [
        ('softmax Transformer (from scratch)', pretrained),
        ('FAVOR+ from the softmax weights', finetuned),
      ],
      args.metric,
    )
  except (FileNotFoundError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  record = curves_lib.plot_curves(
    curves,
    metric=args.metric,
    split='validation',
    png=args.png,
    title='Backward compatibility: softmax weights into FAVOR+',
  )
  record['summary'] = summary
  if args.json:
    workdir_lib.write_json(args.json, record)
  print(json.dumps(summary, indent=1))
  print(
    f'{args.metric} right after the swap: {summary["favor_after_swap"]:.4f} '
    f'(softmax model: best {summary["softmax_best"]:.4f}); after '
    f'{summary["finetune_steps"]} fine-tuning steps: '
    f'{summary["favor_final"]:.4f}'
  )
  print(curves_lib.written(args.png, args.json))
  return 0


if __name__ == '__main__':
  sys.exit(main())
