r"""Writes a SYNTHETIC protein FASTA file (not TrEMBL) and its unigram baseline.

There is no TrEMBL file on the project's machine; this stands in for it in
the CPU-size runs of docs/experiments.md section 5. The sequences are drawn
from a model with structure at three ranges, so that the empirical
(unigram) baseline, a short-context model and an attention model differ:

* an order-2 Markov chain over the 25 letters: p(next | two previous) is
  the UniProt-like letter frequency times random log-normal factors of
  the previous letter, of the one before it and of the pair (see
  `_transitions`): a strong, far from deterministic, dependence;
* motifs: a fixed bank of 24 motifs (8 to 16 letters); a protein holds 0 to
  3 of them at random places (a motif is predictable once its first
  letters are seen);
* internal repeats: with probability 0.4 a segment of 10 to 40 letters is
  copied from earlier in the same protein to a later place (predictable
  only by looking back, i.e. by attention).

Lengths: uniform on 50..500. Ids 'syn|S000001|SYN1' etc. Everything is
seeded: the same arguments write the same file.

  python scripts/make_synthetic_fasta.py --out=/tmp/synthetic.fasta
  python scripts/make_synthetic_fasta.py --baseline \
    --out=/tmp/synthetic.fasta --seq_len=128

--baseline (on an existing file) prints the empirical baseline of the paper's
Table 2: every evaluated target (the same positions and masks as the
trainer's test evaluation, through performer.data) predicted by the train
split's unigram distribution; accuracy = the most frequent train token,
perplexity = exp(cross-entropy). Both objectives are reported, and for the
causal one also an order-2 count model (see `_order2`).
"""

import argparse
import json
import math

import numpy as np

from performer import data
from performer.data import build as data_build
from performer.data import protein

# UniProtKB amino-acid composition (percent, rounded), in the order of
# protein.STANDARD (ACDEFGHIKLMNPQRSTVWY); rare letters U O B Z X last.
FREQUENCIES = [
  8.3, 1.4, 5.5, 6.7, 3.9, 7.1, 2.3, 5.9, 5.8, 9.7,
  2.4, 4.1, 4.7, 3.9, 5.5, 6.6, 5.3, 6.9, 1.1, 2.9,
  0.001, 0.001, 0.01, 0.01, 0.05,
]  # fmt: skip
NUM_MOTIFS = 24


def _transitions(rng: np.random.Generator) -> np.ndarray:
  """[25 * 25, 25] cumulative next-letter probabilities per context.

  log p(c | a b) = log f(c) + 1.0 * M1[b, c] + 0.7 * M2[a, c]
  + 0.5 * N[a b, c] + const, with f the letter frequencies and M1, M2, N
  standard normal: the previous letter alone, the one before it alone and
  the pair each tell something about the next.
  """
  base = np.asarray(FREQUENCIES) / np.sum(FREQUENCIES)
  n = len(base)
  m1 = rng.standard_normal((n, n))
  m2 = rng.standard_normal((n, n))
  pair = rng.standard_normal((n * n, n))
  a, b = np.divmod(np.arange(n * n), n)
  logits = np.log(base)[None, :] + 1.0 * m1[b] + 0.7 * m2[a] + 0.5 * pair
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  return np.cumsum(p, axis=1)


def generate(
  num: int, seed: int, min_len: int = 50, max_len: int = 500
) -> list[str]:
  """`num` synthetic proteins (see the module docstring)."""
  rng = np.random.default_rng(seed)
  cumulative = _transitions(rng)
  base = np.asarray(FREQUENCIES) / np.sum(FREQUENCIES)
  n = len(base)
  lengths = rng.integers(min_len, max_len + 1, num)
  seq_ij = np.zeros((num, max_len), np.int64)
  seq_ij[:, :2] = rng.choice(n, (num, 2), p=base)
  # Every protein steps together: one vectorized draw per position.
  for t in range(2, max_len):
    context = seq_ij[:, t - 2] * n + seq_ij[:, t - 1]
    u = rng.random(num)[:, None]
    seq_ij[:, t] = np.minimum((u > cumulative[context]).sum(axis=1), n - 1)
  motifs = [
    rng.choice(20, int(rng.integers(8, 17)), p=base[:20] / base[:20].sum())
    for _ in range(NUM_MOTIFS)
  ]
  out = []
  for i in range(num):
    seq = seq_ij[i, : lengths[i]].copy()
    for _ in range(int(rng.integers(0, 4))):
      motif = motifs[int(rng.integers(NUM_MOTIFS))]
      at = int(rng.integers(0, len(seq) - len(motif)))
      seq[at : at + len(motif)] = motif
    size = int(rng.integers(10, 41))
    if rng.random() < 0.4 and len(seq) > 2 * (size + 1):
      src = int(rng.integers(0, len(seq) // 2 - size + 1))
      dst = int(rng.integers(src + size, len(seq) - size + 1))
      seq[dst : dst + size] = seq[src : src + size].copy()
    out.append(''.join(protein.AMINO_ACIDS[j] for j in seq))
  return out


def write_fasta(path: str, sequences: list[str], width: int = 60) -> None:
  with open(path, 'w') as f:
    for i, seq in enumerate(sequences, 1):
      f.write(f'>syn|S{i:06d}|SYN{i} synthetic protein (not TrEMBL)\n')
      for j in range(0, len(seq), width):
        f.write(seq[j : j + width] + '\n')


def baseline(path: str, seq_len: int, data_dir: str) -> dict:
  """Unigram baseline on the trainer's test targets, both objectives."""
  result = {}
  for objective in data.OBJECTIVES:
    config = data.default_config()
    config.update(
      name='protein',
      path=path,
      data_dir=data_dir,
      seq_len=seq_len,
      objective=objective,
      read_threads=1,
    )
    ds = data_build.create(config, batch_size=64, seed=0)
    # Train unigram over the tokens that can be targets (letters and eos).
    counts = np.zeros(protein.VOCAB_SIZE)
    stream = ds.stream('train').tokens()
    counts += np.bincount(stream, minlength=protein.VOCAB_SIZE)
    if objective == 'masked':
      counts[protein.EOS] = 0  # Only letters are ever selected.
    p = counts / counts.sum()
    best = int(np.argmax(p))
    nll = hits = total = 0.0
    for batch in ds.eval_batches('test'):
      w = batch['weights'].reshape(-1)
      t = batch['targets'].reshape(-1)
      on = w > 0
      nll -= np.sum(np.log(p[t[on]]))
      hits += np.sum(t[on] == best)
      total += on.sum()
    result[objective] = {
      'accuracy': hits / total,
      'perplexity': math.exp(nll / total),
      'targets': int(total),
      'most_frequent': protein.decode_tokens([best]) or '<eos>',
    }
    if objective == 'causal':
      result['causal_order2'] = _order2(ds)
    else:
      result['masked_neighbors'] = _neighbors(ds)
  return result


def _score(log_p: np.ndarray, ds, context_of) -> dict:
  """Accuracy and perplexity of log_p[context] on the test targets."""
  nll = hits = total = 0.0
  for batch in ds.eval_batches('test'):
    on = batch['weights'] > 0
    rows = log_p[context_of(batch['inputs'])[on]]
    targets = batch['targets'][on]
    nll -= np.sum(rows[np.arange(len(rows)), targets])
    hits += np.sum(rows.argmax(axis=1) == targets)
    total += on.sum()
  return {'accuracy': hits / total, 'perplexity': math.exp(nll / total)}


def _neighbors(ds) -> dict:
  """Count model of a masked letter given its two visible neighbours.

  p(letter | input token left, input token right), counted on the train
  split masked the same way (add-0.1 smoothing); a local reference for the
  bidirectional models.
  """
  v = protein.VOCAB_SIZE
  counts = np.full((v * v, v), 0.1)
  source = ds.splits['train']
  rng = np.random.default_rng(0)
  for i in range(len(source)):
    ids = protein.protein_tokens(source[i])
    tokens = np.concatenate([[protein.BOS], ids, [protein.EOS]])
    ex = protein.masked_example(tokens, len(tokens), ds.mask_rate, rng)
    inputs = np.pad(ex['inputs'], 1)
    on = np.flatnonzero(ex['weights'])
    np.add.at(counts, (inputs[on] * v + inputs[on + 2], tokens[on]), 1)
  log_p = np.log(counts / counts.sum(axis=1, keepdims=True))

  def context_of(inputs):
    padded = np.pad(inputs, ((0, 0), (1, 1)))
    return padded[:, :-2] * v + padded[:, 2:]

  return _score(log_p, ds, context_of)


def _order2(ds) -> dict:
  """Order-2 count model (the chain's order; motifs, repeats ignored).

  p(next | two previous tokens) from the train split's counts (bos opens a
  protein, pad stands before it; add-0.1 smoothing), scored on the same
  test targets as the trainer's causal evaluation.
  """
  v = protein.VOCAB_SIZE
  counts = np.full((v * v, v), 0.1)
  source = ds.splits['train']
  for i in range(len(source)):
    ids = protein.protein_tokens(source[i])
    tokens = np.concatenate([[protein.PAD, protein.BOS], ids, [protein.EOS]])
    np.add.at(counts, (tokens[:-2] * v + tokens[1:-1], tokens[2:]), 1)
  log_p = np.log(counts / counts.sum(axis=1, keepdims=True))

  def context_of(inputs):
    before = np.pad(inputs[:, :-1], ((0, 0), (1, 0)))  # pad before bos.
    return before * v + inputs

  return _score(log_p, ds, context_of)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True, help='FASTA file to write')
  parser.add_argument('--num', type=int, default=30_000)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--baseline', action='store_true')
  parser.add_argument('--seq_len', type=int, default=128)
  parser.add_argument('--data_dir', default='')
  args = parser.parse_args()
  if args.baseline:
    print(json.dumps(baseline(args.out, args.seq_len, args.data_dir), indent=2))
    return
  write_fasta(args.out, generate(args.num, args.seed))
  print(f'wrote {args.num} synthetic proteins to {args.out}')


if __name__ == '__main__':
  main()
