r"""Draws training curves of several runs from their metrics.jsonl files.

Each workdir's metrics.jsonl (written by the trainer: one JSON object per
line, {"step", "split", <metric>: value, ...}) gives one curve of --metric
on --split (validation by default). The PNG has one line per run; the JSON
beside it holds the plotted points, so the figure can be redrawn or quoted
without the workdirs.

  python scripts/plot_curves.py /tmp/redraw/never /tmp/redraw/every100 \
    --labels='no redraw,redraw every 100' --metric=accuracy \
    --png=docs/experiments/redraw.png --json=docs/experiments/redraw.json

Runs given the same label are the seeds of one setting: they are drawn as
their mean with a band of one standard deviation, and the JSON keeps every
run's values besides (`--labels=softmax,softmax,softmax,favor,...`).

Errors name the problem: a missing workdir or metrics.jsonl, or a metric
that the file does not hold (the message lists those it does).
"""

import os
import sys
from collections.abc import Sequence

from performer.bench import curves as curves_lib
from performer.bench import flags


def main(argv: Sequence[str] | None = None) -> int:
  parser = flags.new_parser(__doc__.split('\n\n')[0])
  parser.add_argument('workdirs', nargs='+', help='trainer workdirs')
  parser.add_argument(
    '--labels',
    default='',
    help='comma-separated curve labels (default: the directory names)',
  )
  parser.add_argument(
    '--split', default='validation', choices=curves_lib.SPLITS
  )
  parser.add_argument(
    '--metric',
    default='',
    help='metric to draw (default: accuracy; loss for --split=train)',
  )
  parser.add_argument('--png', default='curves.png', help='PNG to write')
  parser.add_argument('--json', default='', help='JSON of the plotted points')
  parser.add_argument('--title', default='')
  parser.add_argument('--log_y', action='store_true', help='log y axis')
  args = parser.parse_args(argv)

  labels = [s.strip() for s in args.labels.split(',')] if args.labels else []
  if labels and len(labels) != len(args.workdirs):
    parser.error(
      f'--labels has {len(labels)} labels for {len(args.workdirs)} workdirs'
    )
  labels = labels or [os.path.basename(w.rstrip('/')) for w in args.workdirs]
  metric = args.metric or curves_lib.default_metric(args.split)
  try:
    curves = curves_lib.grouped(
      curves_lib.curves_of(
        list(zip(labels, args.workdirs, strict=True)), metric, args.split
      )
    )
  except (FileNotFoundError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 1
  curves_lib.plot_curves(
    curves,
    metric=metric,
    split=args.split,
    png=args.png,
    json_path=args.json,
    title=args.title,
    log_y=args.log_y,
  )
  for c in curves:
    print(
      f'{c["label"]}: {len(c["steps"])} points, last {metric} at step '
      f'{c["steps"][-1]}: {c["values"][-1]:.4f}'
    )
  print(curves_lib.written(args.png, args.json))
  return 0


if __name__ == '__main__':
  sys.exit(main())
