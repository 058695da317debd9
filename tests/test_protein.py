"""Protein data (performer/data/protein.py): FASTA parsing, split, batches.

Every test writes its own small FASTA file; references are computed here
from the raw sequences with plain Python.
"""

import os

import numpy as np
import pytest

from performer import data
from performer.data import build as data_build
from performer.data import protein

LETTERS = protein.AMINO_ACIDS


def _write(path, text: str, newline: str = '\n') -> str:
  with open(path, 'w', newline='') as f:
    f.write(text.replace('\n', newline))
  return str(path)


def _records(n: int, seed: int = 0, max_len: int = 80) -> list[tuple]:
  """(id, sequence) pairs of random proteins."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    length = int(rng.integers(3, max_len))
    out.append(
      (f'tr|Q{i:05d}|T{i}', ''.join(rng.choice(list(LETTERS), length)))
    )
  return out


def _fasta(records, width: int = 30) -> str:
  lines = []
  for rid, seq in records:
    lines.append(f'>{rid} some protein OS=Homo sapiens')
    lines += [seq[i : i + width] for i in range(0, len(seq), width)]
  return '\n'.join(lines) + '\n'


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else value


def _ids(seq: str) -> list[int]:
  """Reference encoding, straight from the documented vocabulary."""
  return [4 + LETTERS.index(c) for c in seq.upper()]


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """(fasta path, data_dir, records) of 400 proteins."""
  root = tmp_path_factory.mktemp('protein')
  records = _records(400)
  path = _write(root / 'proteins.fasta', _fasta(records))
  return path, str(root / 'tfds'), records


def _datasets(corpus, **options):
  path, data_dir, _ = corpus
  config = data.default_config()
  config.update(name='protein', path=path, data_dir=data_dir, read_threads=1)
  config.update(seq_len=options.pop('seq_len', 32))
  config.update(options)
  batch_size = 4
  return data_build.create(config, batch_size=batch_size, seed=3)


def _split_records(records, split):
  return [(r, s) for r, s in records if protein.split_of(r) == split]


# ---------------------------------------------------------------------------
# Parsing.


def test_parse_headers_multiline_crlf_blank_lines_lower_case(tmp_path):
  text = '\n>sp|P1|A first protein\nMKV\nlla\n\n>sp|P2|B\n\nWY\nUOBZX\n\n'
  for newline in ('\n', '\r\n'):
    path = _write(tmp_path / 'a.fasta', text, newline)
    parsed = list(protein.parse_fasta(path))
    assert parsed == [
      ('sp|P1|A first protein', 'MKVLLA', 2),
      ('sp|P2|B', 'WYUOBZX', 6),
    ]
  assert protein.record_id('sp|P1|A first protein') == 'sp|P1|A'


def test_vocabulary_ids():
  assert protein.VOCAB_SIZE == 29
  assert (protein.PAD, protein.MASK, protein.BOS, protein.EOS) == (0, 1, 2, 3)
  np.testing.assert_array_equal(
    protein.encode_sequence('ACYUOBZXa'), [4, 5, 23, 24, 25, 26, 27, 28, 4]
  )
  assert protein.decode_tokens([2, 4, 5, 3, 0, 1]) == 'AC\n#'


@pytest.mark.parametrize(
  'text, pattern',
  [
    # The bad letter, its line and the record's header.
    (
      '>r1\nMKV\n>r2 second\nMK*V\n',
      r":4: invalid amino-acid letter '\*'.*'r2 second'",
    ),
    ('>r1\nMKV\n>r2\nMKJ\n', r":4: invalid amino-acid letter 'J'.*'r2'"),
    ('MKV\n>r1\nMKV\n', r':1: sequence data before the first header'),
    (
      '>r1\nMKV\n>r2 empty\n\n>r3\nMK\n',
      r":3: record 'r2 empty' has an empty sequence",
    ),
    ('>r1\nMKV\n>r2\n', r":3: record 'r2' has an empty sequence"),
    ('>r1\nMKV\n>\nMK\n', r':3: empty header'),
    ('', 'holds no FASTA record: the file is empty'),
    ('\n\r\n\n', 'holds no FASTA record: the file is empty'),
  ],
)
def test_malformed_fasta_names_record_and_line(tmp_path, text, pattern):
  path = _write(tmp_path / 'bad.fasta', text)
  with pytest.raises(ValueError, match=pattern) as error:
    list(protein.parse_fasta(path))
  assert path in str(error.value)


def test_malformed_file_fails_when_the_data_is_created(tmp_path):
  path = _write(tmp_path / 'bad.fasta', '>r1\nMKV\n>r2\nMK-V\n')
  config = data.default_config()
  config.update(name='protein', path=path, data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(ValueError, match=r"bad.fasta:4: invalid .*'-'.*'r2'"):
    data_build.create(config, batch_size=2, seed=0)


def test_empty_or_missing_path_is_a_clear_error(tmp_path):
  config = data.default_config()
  config.update(name='protein', data_dir=str(tmp_path))
  with pytest.raises(ValueError, match='data.path is empty'):
    data_build.create(config, batch_size=2, seed=0)
  config.path = str(tmp_path / 'missing.fasta')
  with pytest.raises(FileNotFoundError, match='missing.fasta'):
    data_build.create(config, batch_size=2, seed=0)


# ---------------------------------------------------------------------------
# Split and cache.


def test_split_is_fixed_by_id_and_disjoint(tmp_path):
  records = _records(3000, seed=1, max_len=6)
  first = {s: set() for s in protein.SPLITS}
  for order, name in ((records, 'a'), (records[::-1], 'b')):
    path = _write(tmp_path / f'{name}.fasta', _fasta(order))
    sources = protein.data_sources(path, str(tmp_path / 'tfds'))
    got = {s: {_text(r['id']) for r in src} for s, src in sources.items()}
    if name == 'a':
      first = got
    else:  # The file's order does not change the split.
      assert got == first
  ids = [rid for rid, _ in records]
  assert set().union(*first.values()) == set(ids)
  assert sum(len(v) for v in first.values()) == len(ids)  # Disjoint.
  # 90/5/5 by hash: binomial standard deviations are 16 (train) and 12
  # records; 5 of them is the tolerance.
  assert abs(len(first['train']) - 2700) < 80
  assert abs(len(first['validation']) - 150) < 60
  assert abs(len(first['test']) - 150) < 60
  for split, members in first.items():
    assert all(protein.split_of(rid) == split for rid in members)


def test_changed_file_is_rebuilt_unchanged_one_reused(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  path = _write(tmp_path / 'p.fasta', _fasta(_records(50, seed=2)))
  protein.data_sources(path, data_dir)
  built = os.listdir(os.path.join(data_dir, protein.TFDS_NAME))
  protein.data_sources(path, data_dir)
  assert os.listdir(os.path.join(data_dir, protein.TFDS_NAME)) == built
  new = _records(60, seed=3)
  _write(tmp_path / 'p.fasta', _fasta(new))
  os.utime(path, ns=(1, 10**18))  # A different modification time for sure.
  sources = protein.data_sources(path, data_dir)
  assert len(os.listdir(os.path.join(data_dir, protein.TFDS_NAME))) == 2
  assert sum(len(s) for s in sources.values()) == 60


def _ids_in_split(split: str, n: int, start: int = 0) -> list[str]:
  """The first `n` ids 'r<i>' (i >= start) that the hash puts in `split`."""
  out, i = [], start
  while len(out) < n:
    if protein.split_of(f'r{i}') == split:
      out.append(f'r{i}')
    i += 1
  return out


def test_empty_split_is_a_clear_error(tmp_path):
  # Twelve records, none in 'test': the error names the split, the count
  # and the file, and nothing is left behind.
  ids = _ids_in_split('train', 10) + _ids_in_split('validation', 2)
  path = _write(tmp_path / 'tiny.fasta', _fasta([(r, 'MKV') for r in ids]))
  data_dir = str(tmp_path / 'tfds')
  with pytest.raises(ValueError, match=r"'test' split is empty.* 12 records"):
    protein.data_sources(path, data_dir)
  with pytest.raises(ValueError, match='tiny.fasta'):
    protein.data_sources(path, data_dir)
  assert not [n for n in os.listdir(data_dir) if 'spill' in n]


def test_build_parses_the_file_once_and_cleans_up(tmp_path, monkeypatch):
  calls = []
  parse = protein.parse_fasta

  def counting_parse(path):
    calls.append(path)
    return parse(path)

  monkeypatch.setattr(protein, 'parse_fasta', counting_parse)
  path = _write(tmp_path / 'p.fasta', _fasta(_records(60, seed=3)))
  data_dir = str(tmp_path / 'tfds')
  sources = protein.data_sources(path, data_dir)
  assert len(calls) == 1
  assert sum(len(s) for s in sources.values()) == 60
  assert not [n for n in os.listdir(data_dir) if 'spill' in n]
  # A malformed file fails in that same pass and leaves no spill behind.
  bad = _write(tmp_path / 'bad.fasta', _fasta(_records(30)) + '>z\nM*\n')
  with pytest.raises(ValueError, match=r"bad.fasta:\d+: invalid .*'z'"):
    protein.data_sources(bad, data_dir)
  assert not [n for n in os.listdir(data_dir) if 'spill' in n]


def _tree(root: str) -> list[tuple[str, int | None]]:
  """Every path under `root`: (relative path, file size or None for a dir)."""
  out = []
  for directory, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(directory, name)
      size = None if name in dirs else os.path.getsize(path)
      out.append((os.path.relpath(path, root), size))
  return sorted(out, key=lambda item: item[0])


def test_failed_parse_leaves_nothing_under_data_dir(tmp_path):
  bad = _write(tmp_path / 'bad.fasta', _fasta(_records(30)) + '>z\nM*\n')
  data_dir = tmp_path / 'tfds'
  data_dir.mkdir()
  for _ in range(2):  # The same error again: no empty cache in the way.
    with pytest.raises(ValueError, match=r"bad.fasta:\d+: invalid .*'z'"):
      protein.data_sources(bad, str(data_dir))
    assert _tree(str(data_dir)) == []


def test_failed_parse_keeps_an_existing_cache(tmp_path, monkeypatch):
  data_dir = str(tmp_path / 'tfds')
  good = _write(tmp_path / 'good.fasta', _fasta(_records(60, seed=3)))
  protein.data_sources(good, data_dir)
  built = _tree(data_dir)
  assert any(size for _, size in built)  # The dataset's files.
  bad = _write(tmp_path / 'bad.fasta', _fasta(_records(30)) + '>z\nM*\n')
  with pytest.raises(ValueError, match='bad.fasta'):
    protein.data_sources(bad, data_dir)
  assert _tree(data_dir) == built
  # The good file's dataset is still there: read without parsing again.
  monkeypatch.setattr(protein, 'parse_fasta', None)
  sources = protein.data_sources(good, data_dir)
  assert sum(len(s) for s in sources.values()) == 60


def test_keys_spread_over_tfds_disk_buckets(tmp_path):
  """Keys in file order, spread over TFDS's buckets (see the builder).

  Past 1 GB per split TFDS sorts one disk bucket (a key range) at a time;
  keys 0, 1, ... would put a whole TrEMBL split in the first bucket.
  """
  from tensorflow_datasets.core import shuffle

  spill = tmp_path / 'train'
  spill.write_text(''.join(f'r{i}\tMKV\n' for i in range(5000)))
  builder = protein.ProteinFasta.__new__(protein.ProteinFasta)
  keys = [key for key, _ in builder._generate_examples(str(spill), 5000)]
  assert keys == sorted(keys) and len(set(keys)) == 5000
  assert 0 <= keys[0] and keys[-1] < 2**shuffle.HKEY_SIZE
  buckets = np.bincount(
    [shuffle.get_bucket_number(k, shuffle.BUCKETS_NUMBER) for k in keys]
  )
  # 5000 keys over 1000 buckets: exactly 5 each.
  assert len(buckets) == shuffle.BUCKETS_NUMBER and (buckets == 5).all()
  assert not spill.exists()  # Consumed spill files are deleted.


def test_file_order_kept_when_tfds_spills_to_disk(tmp_path, monkeypatch):
  """Past TFDS's in-memory buffer, splits go through its disk buckets.

  A 2 kB buffer instead of 1 GB sends this file down the path TrEMBL
  takes; every split must keep the file's order. TFDS's buckets need
  TensorFlow (tf.io.gfile): skipped without it.
  """
  pytest.importorskip('tensorflow')
  from tensorflow_datasets.core import shuffle

  monkeypatch.setattr(shuffle, 'MAX_MEM_BUFFER_SIZE', 2000)
  records = _records(300, seed=4)
  path = _write(tmp_path / 'p.fasta', _fasta(records))
  sources = protein.data_sources(path, str(tmp_path / 'tfds'))
  for split in protein.SPLITS:
    got = [(_text(r['id']), _text(r['sequence'])) for r in sources[split]]
    assert got == _split_records(records, split)


# ---------------------------------------------------------------------------
# Batches.


def test_causal_eval_batches_are_the_shifted_proteins(corpus):
  ds = _datasets(corpus, objective='causal', seq_len=32)
  assert ds.task == 'lm' and ds.vocab_size == 29
  expected = _split_records(corpus[2], 'validation')
  rows = [
    {k: b[k][i] for k in b}
    for b in ds.eval_batches('validation')
    for i in range(4)
  ]
  assert len(rows) == 4 * -(-len(expected) // 4)
  for row, (_, seq) in zip(rows, expected, strict=False):
    tokens = [protein.BOS] + _ids(seq) + [protein.EOS]
    n = min(len(tokens) - 1, 32)  # Long proteins keep their first window.
    np.testing.assert_array_equal(row['inputs'][:n], tokens[:n])
    np.testing.assert_array_equal(row['targets'][:n], tokens[1 : n + 1])
    np.testing.assert_array_equal(row['weights'], np.arange(32) < n)
    assert not row['inputs'][n:].any() and not row['targets'][n:].any()
  for row in rows[len(expected) :]:  # Padding rows.
    assert not row['weights'].any()


def test_causal_train_batches(corpus):
  ds = _datasets(corpus, objective='causal', seq_len=32)
  batch = next(iter(ds.train_loader()))
  assert batch['inputs'].shape == (4, 32) and batch['inputs'].dtype == np.int32
  assert batch['weights'].dtype == np.float32
  train = {tuple(_ids(s)) for _, s in _split_records(corpus[2], 'train')}
  for inputs, targets, weights in zip(
    batch['inputs'], batch['targets'], batch['weights'], strict=True
  ):
    n = int(weights.sum())
    assert inputs[0] == protein.BOS
    np.testing.assert_array_equal(inputs[1:n], targets[: n - 1])
    letters = tuple(int(t) for t in targets[:n] if t != protein.EOS)
    assert any(seq[: len(letters)] == letters for seq in train)


def test_masked_example_proportions():
  """Selection rate and the 80/10/10 replacement over 60k amino acids."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, 29, 60_000)
  example = protein.masked_example(tokens, 60_000, 0.15, rng)
  selected = example['weights'] == 1
  # Binomial: the standard deviation of the rate is 0.0015; 0.006 is 4 sd.
  assert abs(selected.mean() - 0.15) < 0.006
  np.testing.assert_array_equal(example['targets'], tokens)
  inputs, n = example['inputs'][selected], selected.sum()
  masked = (inputs == protein.MASK).mean()
  changed = ((inputs != protein.MASK) & (inputs != tokens[selected])).mean()
  kept = (inputs == tokens[selected]).mean()
  # A random replacement equals the original letter with probability 1/25.
  # With n ~ 9000 the standard deviations are 0.0042 and 0.0031; 0.017 and
  # 0.013 are 4 sd.
  assert n > 8000
  assert abs(masked - 0.8) < 0.017
  assert abs(changed - 0.1 * 24 / 25) < 0.013
  assert abs(kept - (0.1 + 0.1 / 25)) < 0.013
  # Unselected positions are untouched.
  np.testing.assert_array_equal(example['inputs'][~selected], tokens[~selected])


def test_masked_batches_weights_targets_and_special_tokens(corpus):
  ds = _datasets(corpus, objective='masked', seq_len=64, mask_rate=0.3)
  assert ds.task == 'mlm'
  it = iter(ds.train_loader())
  selected = total = 0
  for _ in range(10):
    batch = next(it)
    for inputs, targets, weights in zip(
      batch['inputs'], batch['targets'], batch['weights'], strict=True
    ):
      real = targets != protein.PAD
      n = int(real.sum())
      assert targets[0] == protein.BOS
      letters = targets[1:n]
      # Original tokens: bos, letters, eos unless cut at seq_len.
      assert ((letters >= 4) | (letters == protein.EOS)).all()
      on = weights == 1
      assert (targets[on] >= 4).all()  # Only amino acids are selected.
      # Unselected positions show the original token.
      np.testing.assert_array_equal(inputs[~on], targets[~on])
      assert not weights[~real].any()
      selected += on.sum()
      total += (targets >= 4).sum()
  # About 1,500 amino acids: the rate's sd is 0.012; 0.05 is 4 sd.
  assert abs(selected / total - 0.3) < 0.05


def test_masked_iterator_restores_exactly(corpus):
  ds = _datasets(corpus, objective='masked', seq_len=32)
  it = iter(ds.train_loader())
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  other = iter(_datasets(corpus, objective='masked', seq_len=32).train_loader())
  other.set_state(state)
  for want in expected:
    got = next(other)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_eval_masks_are_identical_across_passes(corpus):
  ds = _datasets(corpus, objective='masked', seq_len=32)
  first = list(ds.eval_batches('validation'))
  second = list(ds.eval_batches('validation'))
  assert len(first) == len(second) > 0
  for a, b in zip(first, second, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert sum(b['weights'].sum() for b in first) > 0


def test_concatenated_windows(corpus):
  expected = _split_records(corpus[2], 'validation')
  stream = []
  for _, seq in expected:
    stream += _ids(seq) + [protein.EOS]
  stream = np.array(stream)
  seq_len = 16
  causal = _datasets(corpus, objective='causal', concatenate=True, seq_len=16)
  batches = list(causal.eval_batches('validation'))
  rows = np.concatenate([b['inputs'] for b in batches])
  targets = np.concatenate([b['targets'] for b in batches])
  weights = np.concatenate([b['weights'] for b in batches])
  # Window j: inputs stream[jL : (j+1)L], targets shifted by one.
  for j in range(3):
    np.testing.assert_array_equal(
      rows[j], stream[j * seq_len : (j + 1) * seq_len]
    )
    np.testing.assert_array_equal(
      targets[j], stream[j * seq_len + 1 : (j + 1) * seq_len + 1]
    )
  assert weights.sum() == len(stream) - 1  # Every token but the first.

  masked = _datasets(corpus, objective='masked', concatenate=True, seq_len=16)
  batches = list(masked.eval_batches('validation'))
  targets = np.concatenate([b['targets'] for b in batches])
  flat = targets.reshape(-1)[: len(stream)]
  np.testing.assert_array_equal(flat, stream)  # Windows tile the stream.
  train = next(iter(masked.train_loader()))
  assert train['inputs'].shape == (4, 16)
  on = train['weights'] == 1
  assert (train['targets'][on] >= 4).all()


def test_generate_from_a_protein_lm_speaks_amino_acids(corpus, tmp_path):
  """The run's own tokenizer: letters in, letters out (not bytes)."""
  from configs import common
  from performer import generate, train

  path, data_dir, _ = corpus
  config = common.base_config()
  config.data.update(
    name='protein', path=path, data_dir=data_dir, seq_len=32, read_threads=1
  )
  config.model.update(
    num_layers=1, emb_dim=16, qkv_dim=16, num_heads=2, mlp_dim=32
  )
  config.model.attention_options.favor.update(num_features=8, chunk_size=8)
  config.update(
    batch_size=4,
    num_train_steps=2,
    warmup_steps=1,
    eval_every_steps=2,
    eval_max_batches=1,
    test_max_batches=1,
    sample_num_tokens=0,
  )
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  text = generate.generate_text(
    workdir, 'MKV', num_tokens=20, temperature=1.0, seed=0
  )
  assert text.startswith('MKV')
  # Letters, end-of-sequence newlines or masks: never control bytes.
  assert set(text) <= set(protein.AMINO_ACIDS) | {'\n', '#'}, text
  # The default prompt (a newline) is whitespace: generation starts at bos.
  text = generate.generate_text(
    workdir, '\n', num_tokens=5, temperature=1.0, seed=0
  )
  assert set(text) <= set(protein.AMINO_ACIDS) | {'\n', '#'}, text


def test_protein_tokenizer_round_trip():
  tokenizer = data_build.load_tokenizer({'name': 'protein', 'path': 'x.fa'})
  ids = tokenizer.encode('MK V\n')
  np.testing.assert_array_equal(ids, [protein.BOS, *_ids('MKV')])
  assert tokenizer.decode(ids) == 'MKV'
