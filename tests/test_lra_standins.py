"""Stand-in data of LRA Text, Retrieval and Image (performer.data.lra_standins).

The stand-ins are checked against the plays they are cut from (labels from
each play's genre, no play in two splits, texts found verbatim in their
play) and read back through the real loaders (imdb, aan, cifar10), which is
what the LRA configs do with them.
"""

import logging

import numpy as np
import pytest

from performer.data import aan, cifar10, imdb, lra_standins, shakespeare

SEQ_LEN = 64


@pytest.fixture(scope='module')
def plays():
  """{play: (genre, full text)} read here from the package's files."""
  return {
    play: (genre, path.read_text('utf-8'))
    for genre, play, path in shakespeare.play_files()
  }


def test_passages_are_whole_lines_in_order():
  text = ''.join(f'line {i} ' + 'x' * (i % 7) + '\n' for i in range(200))
  cut = lra_standins.passages(text, size=50)
  joined = ''.join(cut)
  assert text.startswith(joined)
  # Only a last passage shorter than size // 2 may be dropped.
  assert len(text) - len(joined) < 25
  for passage in cut:
    assert passage.endswith('\n')
    assert len(passage) >= 50
    # It ends at the first line end at or past 50 bytes.
    assert len(passage) - len(passage.rstrip('\n').rsplit('\n', 1)[-1]) <= 50


def test_text_labels_genres_and_held_out_plays(plays):
  examples = lra_standins.text_examples()
  for split, rows in examples.items():
    labels = np.array([r['label'] for r in rows])
    assert labels.sum() * 2 == len(labels), split  # balanced
    for row in rows[:: max(1, len(rows) // 150)]:
      holders = [p for p, (_, text) in plays.items() if row['text'] in text]
      assert len(holders) >= 1
      genre = plays[holders[0]][0]
      assert row['label'] == int(genre == 'comedies')
      assert genre in ('comedies', 'tragedies', 'roman')
      held_out = (
        'test'
        if holders[0] in lra_standins.TEXT_TEST_PLAYS
        else 'validation'
        if holders[0] in lra_standins.TEXT_VALIDATION_PLAYS
        else 'train'
      )
      assert held_out == split, (split, holders)
  assert len(examples['train']) == 9 * len(examples['validation'])
  assert len(examples['validation']) > 100 and len(examples['test']) > 300
  assert lra_standins.text_examples() == examples  # deterministic


def test_pairs_labels_ids_and_splits(plays):
  pairs = lra_standins.pair_examples()
  flat = {play: ' '.join(text.split()) for play, (_, text) in plays.items()}
  split_plays = {}
  for split, rows in pairs.items():
    assert len(rows) == lra_standins.PAIR_COUNTS[split]
    labels = np.array([r[0] for r in rows])
    assert labels.sum() * 2 == len(labels)
    names = set()
    for label, id1, id2, text1, text2 in rows:
      play1, play2 = id1.split('/')[0], id2.split('/')[0]
      assert label == int(play1 == play2)
      assert id1 != id2
      for text, play in ((text1, play1), (text2, play2)):
        assert '\t' not in text and '\n' not in text
        assert text in flat[play]
      names |= {play1, play2}
    split_plays[split] = names
  assert split_plays['test'] <= set(lra_standins.PAIR_TEST_PLAYS)
  assert split_plays['validation'] <= set(lra_standins.PAIR_VALIDATION_PLAYS)
  assert not split_plays['train'] & (
    split_plays['test'] | split_plays['validation']
  )


def test_aan_files_read_by_the_release_loader(tmp_path):
  counts = lra_standins.write_aan(str(tmp_path))
  splits = aan.load(str(tmp_path), seq_len=SEQ_LEN)
  expected = lra_standins.pair_examples()
  for split, rows in expected.items():
    assert len(splits[split]) == counts[split] == len(rows)
    for i in (0, 1, len(rows) - 1):
      label, _, _, text1, text2 = rows[i]
      example = splits[split][i]
      assert example['targets'] == label
      reference = np.frombuffer(text1.encode()[:SEQ_LEN], np.uint8) + 1
      np.testing.assert_array_equal(example['inputs1'], reference)
      reference = np.frombuffer(text2.encode()[:SEQ_LEN], np.uint8) + 1
      np.testing.assert_array_equal(example['inputs2'], reference)


def test_digit_images():
  fonts = [str(lra_standins._fonts_dir() / name) for name in lra_standins.FONTS]
  rng = np.random.default_rng(0)
  images = [lra_standins.digit_image(d % 10, rng, fonts) for d in range(40)]
  for image in images:
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    gray = cifar10.grayscale(image).astype(float)
    # The glyph and the background differ by >= 60 gray levels before
    # noise: the spread of the gray levels shows both.
    assert np.percentile(gray, 98) - np.percentile(gray, 2) > 40
  again = np.random.default_rng(0)
  np.testing.assert_array_equal(
    images[3], [lra_standins.digit_image(d, again, fonts) for d in range(4)][3]
  )


def test_tfds_standins_read_by_the_loaders(tmp_path, caplog):
  counts = {'train': 30, 'test': 10}
  lra_standins.write_tfds(str(tmp_path), image_counts=counts)
  with caplog.at_level(logging.WARNING):
    text = imdb.load(seq_len=SEQ_LEN, data_dir=str(tmp_path))
    images = cifar10.load(data_dir=str(tmp_path))
  assert 'imdb_reviews/plain_text' in caplog.text and 'stand-in' in caplog.text
  assert 'cifar10' in caplog.text

  # The IMDb loader's own split rule gives the stand-in's three splits,
  # example for example, in the written order.
  written = lra_standins.text_examples()
  for split, rows in written.items():
    assert len(text[split]) == len(rows)
    for i in range(0, len(rows), 7):
      reference = np.frombuffer(rows[i]['text'].encode()[:SEQ_LEN], np.uint8)
      np.testing.assert_array_equal(text[split][i]['inputs'], reference + 1)
      assert text[split][i]['targets'] == rows[i]['label']

  assert len(images['train']) + len(images['validation']) == counts['train']
  assert len(images['test']) == counts['test']
  drawn = {
    key: ex for key, ex in lra_standins.image_examples('test', counts['test'])
  }
  source = images['test']
  labels = []
  for i in range(len(source)):
    example = source[i]
    assert example['inputs'].shape == (1024,)
    labels.append(example['targets'])
  assert sorted(labels) == sorted(ex['label'] for ex in drawn.values())
  # Pixels survive the PNG round trip exactly: compare by the record id.
  record = source._source[int(source.indices[0])]
  reference = np.asarray(drawn[record['id'].decode()]['image'])
  np.testing.assert_array_equal(record['image'], reference)
  np.testing.assert_array_equal(
    source[0]['inputs'], cifar10.grayscale(reference).reshape(-1)
  )
  for name in ('imdb', 'cifar10'):
    assert lra_standins.is_standin({'name': name, 'data_dir': str(tmp_path)})
    empty = {'name': name, 'data_dir': str(tmp_path / 'elsewhere')}
    assert not lra_standins.is_standin(empty)
  assert not lra_standins.is_standin({'name': 'listops'})


def test_a_real_dataset_is_never_overwritten(tmp_path):
  # A prepared dataset that is not a stand-in: a dataset_info.json without
  # the mark where the stand-in would go.
  version_dir = tmp_path / 'imdb_reviews' / 'plain_text' / '1.0.0'
  version_dir.mkdir(parents=True)
  (version_dir / 'dataset_info.json').write_text('{"description": "IMDb"}')
  with pytest.raises(FileExistsError, match='not a stand-in'):
    lra_standins.write_tfds(str(tmp_path), image_counts={'train': 1, 'test': 1})
  assert (version_dir / 'dataset_info.json').read_text() == (
    '{"description": "IMDb"}'
  )
  assert not (tmp_path / 'cifar10').exists()
