r"""Long Range Arena comparison: tasks x attention variants x seeds.

Runs (or, with --collect_only, only reads) one training run per task,
variant and seed (performer/bench/lra_grid.py), each in its own process so
that its peak memory is its own:

  python scripts/train.py --config=configs/lra_<task>.py:attention=<a>[,lite]
    --config.seed=<s> --workdir=<root>/<task>/<a>/seed<s> [overrides]

and writes, under --out, results.json (every run's record and the
summary), results.csv and results.md (per task and variant: test and
validation accuracy, mean and sample standard deviation over the seeds
that finished, their number n, training steps per second, minutes, peak
memory, and the published LRA Table 1 accuracy beside ours) and
accuracy.png (grouped bars with error bars, published numbers as
markers).

--pretrain_steps=0,N adds, per variant, a row of runs that first
self-pretrain for N steps (a masked-token model on the task's own inputs,
then the task from its encoder, one run: performer/pretrain.py), labelled
<variant>+pretrain<N>, with the pretraining stage's masked-token
accuracy in its own column.

  python scripts/compare.py --tasks=listops,text,retrieval,image,pathfinder \
    --attention=softmax,favor,local,sparse --seeds=0,1 --lite \
    --root=workdirs/lra_lite --out=docs/lra \
    --override=retrieval:data.path=/data/lra_release/tsv_data \
    --override=data.data_dir=/data/tfds

A run whose workdir holds results.json is not run again, nor one that an
earlier results.json of this script given with --previous records as
finished for the same task, variant, seed and --lite (its workdirs may be
gone, on another machine, say); one that stopped
part-way resumes from its checkpoints (the trainer does that); one that
fails (data not prepared, say) is recorded with its error, written to
<workdir>/compare_error.json, and the grid goes on. The log of each run is
<workdir>/compare.log. Collecting nothing (no run has results: a misspelt
--root, say) is an error, and so is a grid that lacks a finished run which
<out>/results.json records (give --previous=<out>/results.json to keep it):
then nothing is written. Paths in results.json are relative to the project
root (workdirs outside it: to --root). Published names map to ours as
Transformer = softmax, Performer = favor, Local Att. = local, Sparse
Trans. = sparse, Linear Trans. = linear, and Reformer, Linformer,
Longformer, Sinkhorn and Synthesizer by their names in lower case;
'pathx' is Pathfinder at 128x128 (configs/lra_pathfinder.py:size=128), on
which every LRA model failed.
"""

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from performer.bench import flags, lra_grid


def build_parser() -> argparse.ArgumentParser:
  """The command-line interface."""
  p = flags.new_parser(__doc__)
  p.add_argument(
    '--tasks',
    default='listops,text,retrieval,image,pathfinder',
    help=f'comma-separated, from {list(lra_grid.TASKS)}.',
  )
  p.add_argument(
    '--attention',
    default='softmax,favor,local,sparse',
    help='comma-separated registered attention variants.',
  )
  p.add_argument('--seeds', default='0,1', help='comma-separated ints.')
  p.add_argument(
    '--pretrain_steps',
    default='0',
    help='comma-separated ints >= 0: a row per variant and value, N > 0 '
    'self-pretraining for N steps on the masked task inputs before the '
    'task, in one run (0: from scratch), e.g. 0,500.',
  )
  p.add_argument(
    '--lite', action='store_true', help="the configs' CPU-sized variant."
  )
  p.add_argument(
    '--root', default='workdirs/lra', help='workdirs go under this folder.'
  )
  p.add_argument(
    '--out', default='docs/lra', help='folder for the tables and the plot.'
  )
  p.add_argument(
    '--collect_only',
    action='store_true',
    help='read existing workdirs; run nothing.',
  )
  p.add_argument(
    '--previous',
    action='append',
    default=[],
    metavar='RESULTS_JSON',
    help='a results.json this script wrote earlier (repeatable): its '
    'finished runs of the same task, variant, seed and --lite count as '
    'finished (not rerun, in the table) where the workdir has no results. '
    'The runs must have used the same overrides: that is not checked.',
  )
  p.add_argument(
    '--override',
    action='append',
    default=[],
    metavar='[TASK:]KEY=VALUE',
    help='a config override passed as --config.KEY=VALUE to every run, or '
    'to the runs of TASK only (repeatable), e.g. '
    'retrieval:data.path=/data/aan.',
  )
  return p


def make_plan(args: argparse.Namespace) -> lra_grid.Plan:
  """The grid of the flags (`lra_grid.make_plan`)."""
  return lra_grid.make_plan(
    tasks=args.tasks,
    variants=args.attention,
    seeds=args.seeds,
    lite=args.lite,
    root=args.root,
    out=args.out,
    collect_only=args.collect_only,
    previous=args.previous,
    overrides=args.override,
    pretrain_steps=args.pretrain_steps,
  )


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Parses flags, runs or collects the grid, writes the outputs.

  Returns:
    The per-run records.

  Raises:
    SystemExit: status 2 for bad flags, before anything runs; status 1
      when the outputs would lose results (nothing is written then).
  """
  _, plan = flags.parse(build_parser(), argv, make_plan)
  records = lra_grid.collect(plan)
  try:
    lra_grid.write_outputs(plan, records)
  except lra_grid.RefusedToWrite as e:
    sys.exit(f'error: {e}')
  return records


if __name__ == '__main__':
  main(sys.argv[1:])
