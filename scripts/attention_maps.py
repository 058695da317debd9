r"""Draws a trained model's attention: exact, approximated, and the errors.

Reads a run's workdir (any variant, its best checkpoint) and one input: a
text for a language model (--text), or an example of a split for any task
(--index, --split). For each chosen layer and head it draws, from the
model's own queries and keys on that input:

  exact       softmax(q k^T / sqrt(D)), causal and padding masks as the
              model attends;
  <variant>   the attention matrix each --variants entry forms from the
              same q and k (FAVOR+, FAVOR++ and FAVOR# reconstructions with
              --num_features rows drawn from --seed; the masked patterns of
              local, sparse, longformer, ...), built with the run's options
              for that variant;
  <own> (trained)
              the run's own attention module with its trained state;

each in a row of matrices over a row of error maps (minus exact; a red-blue
scale symmetric about 0, its bound in the title). Padding is cut. The JSON
beside the PNG holds each map's mean and largest absolute error.

  python scripts/attention_maps.py --workdir=workdirs/lm_shakespeare \
    --text='ROMEO: What light through yonder window breaks?' \
    --layers=0,1 --heads=0,1 --png=docs/figures/attention_maps_lm.png

  python scripts/attention_maps.py --workdir=workdirs/lra_listops_favor \
    --index=3 --variants=favor,favorpp,favorsharp,local,sparse

Errors name the bad value: a missing workdir, a layer or head the model
does not have, an unknown variant, a text for a classifier.
"""

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from performer import attention, attention_maps, probe, workdir
from performer.bench import flags


def build_parser():
  p = flags.new_parser(__doc__)
  p.add_argument('--workdir', required=True, help='a training run.')
  p.add_argument('--text', default=None, help='input text (LMs).')
  p.add_argument('--index', type=int, default=0, help='example index.')
  p.add_argument('--split', default='validation')
  p.add_argument('--layers', default='0', help='comma-separated blocks.')
  p.add_argument('--heads', default='0', help='comma-separated heads.')
  p.add_argument(
    '--variants',
    default='favor,favorpp,favorsharp',
    help='comma-separated registry variants to form besides exact softmax.',
  )
  p.add_argument(
    '--num_features',
    type=int,
    default=None,
    help="M of the random-feature variants (default: the run's options).",
  )
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--png', required=True)
  p.add_argument('--json', default=None, help='default: the PNG with .json')
  return p


def run(args) -> dict[str, Any]:
  """Draws the figure; returns the JSON object (also written)."""
  variants = flags.check_choices(
    flags.split_list(args.variants, '--variants'),
    attention.names(),
    '--variants',
    'variant',
  )
  layers = _indices(args.layers, '--layers')
  heads = _indices(args.heads, '--heads')
  if args.num_features is not None:
    flags.positive_int(args.num_features, '--num_features')
  model, config = probe.load_run(args.workdir)
  num_layers, num_heads = config.model.num_layers, config.model.num_heads
  for layer in layers:
    if layer >= num_layers:
      raise ValueError(
        f'--layers: {layer} is out of range; the model has {num_layers} '
        f'layers (0 to {num_layers - 1})'
      )
  for head in heads:
    if head >= num_heads:
      raise ValueError(
        f'--heads: {head} is out of range; the model has {num_heads} heads '
        f'(0 to {num_heads - 1})'
      )
  tokens, mask = probe.example(
    config, text=args.text, index=args.index, split=args.split
  )
  inputs = probe.attention_inputs(model, tokens, mask)
  maps = {}
  for layer in layers:
    per_variant = attention_maps.maps_for_layer(
      model,
      config,
      layer,
      inputs[layer],
      variants,
      num_features=args.num_features,
      seed=args.seed,
    )
    for head in heads:
      maps[(layer, head)] = {n: a[head] for n, a in per_variant.items()}
  what = 'text' if args.text is not None else f'{args.split} #{args.index}'
  title = (
    f'{os.path.basename(os.path.abspath(args.workdir))}: '
    f'{config.model.attention} model, {what}, '
    f'{int(np.sum(inputs[0][3]))} positions'
  )
  summary = attention_maps.draw(maps, args.png, title, inputs[0][3])
  result = {
    'workdir': args.workdir,
    'input': what,
    'variants': variants,
    'num_features': args.num_features,
    'seed': args.seed,
    'errors': summary,
  }
  json_path = args.json or os.path.splitext(args.png)[0] + '.json'
  workdir.write_json(json_path, result)
  return result


def _indices(text: str, flag: str) -> list[int]:
  """A comma-separated list of ints >= 0, else a ValueError naming it."""
  out = []
  for item in flags.split_list(text, flag):
    try:
      out.append(flags.non_negative_int(int(item), flag))
    except ValueError:
      raise ValueError(f'{flag}: {item!r} is not an int >= 0') from None
  return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    return run(args)
  except (ValueError, FileNotFoundError) as e:
    parser.error(str(e))


if __name__ == '__main__':
  main(sys.argv[1:])
