"""LM1B and PG-19, read from prepared TFDS array_record files.

`tfds.data_source` reads them without TensorFlow. Preparing them is a
one-time download (`tfds build lm1b --file_format=array_record`, or
`data.tfds_download=True`), which needs network access and, for TFDS's own
builders, TensorFlow and `importlib_resources` installed; see docs/data.md.
Nothing here downloads unless asked.
"""

import dataclasses

import tensorflow_datasets as tfds

from performer.data.lm import DocumentSplit


@dataclasses.dataclass(frozen=True)
class Spec:
  """Where a TFDS corpus keeps its text and which TFDS split is which.

  Attributes:
    tfds_name: the TFDS dataset name.
    feature: the text feature of each example.
    splits: our split name -> TFDS split (slices allowed).
  """

  tfds_name: str
  feature: str
  splits: dict[str, str]


# LM1B has only train and test (the 50 heldout files). Validation is the
# first 30k sentences of TFDS's (hash-shuffled) train split, held out of
# training, so that test stays the standard heldout set.
LM1B_VALIDATION_SENTENCES = 30_000
SPECS = {
  'lm1b': Spec(
    'lm1b',
    'text',
    {
      'train': f'train[{LM1B_VALIDATION_SENTENCES}:]',
      'validation': f'train[:{LM1B_VALIDATION_SENTENCES}]',
      'test': 'test',
    },
  ),
  'pg19': Spec(
    'pg19',
    'book_text',
    {'train': 'train', 'validation': 'validation', 'test': 'test'},
  ),
}


def load(
  name: str, *, data_dir: str = '', download: bool = False
) -> dict[str, DocumentSplit]:
  """Opens the TFDS data source of each split of `name`.

  Args:
    name: 'lm1b' or 'pg19'.
    data_dir: TFDS data directory ('' for TFDS's default).
    download: download and prepare the dataset if it is not there.

  Raises:
    FileNotFoundError: the dataset is not prepared in `data_dir`.
  """
  spec = SPECS[name]
  splits = {}
  for split, tfds_split in spec.splits.items():
    try:
      source = tfds.data_source(
        spec.tfds_name,
        split=tfds_split,
        data_dir=data_dir or None,
        download=download,
        builder_kwargs={'file_format': 'array_record'},
      )
    except (KeyError, FileNotFoundError, AssertionError) as e:
      where = data_dir or '$TFDS_DATA_DIR or ~/tensorflow_datasets'
      raise FileNotFoundError(
        f'TFDS dataset {spec.tfds_name!r} (split {tfds_split!r}) is not '
        f'prepared in {where}. Prepare it once with `tfds build '
        f'{spec.tfds_name} --file_format=array_record --data_dir=...` '
        '(see docs/data.md) or set data.tfds_download=True.'
      ) from e
    splits[split] = DocumentSplit(f'{name}:{split}', source, spec.feature)
  return splits
