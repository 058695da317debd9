"""Which config changes make a workdir's run one this config cannot resume."""

import copy

from configs import common
from performer import workdir as workdir_lib


def _configs():
  current = common.base_config().to_dict()
  return copy.deepcopy(current), current


def test_a_run_saved_before_an_option_existed_still_matches():
  saved, current = _configs()
  # A config.json written before FAVOR+ had these options.
  for option in ('num_heads', 'stats_momentum', 'a_scale'):
    saved['model']['attention_options']['favor'].pop(option, None)
  assert workdir_lib.differing_fields(saved, current) == []


def test_a_changed_or_non_default_option_of_the_used_variant_differs():
  saved, current = _configs()
  current['model']['attention_options']['favor']['num_features'] += 1
  saved['model']['attention_options']['favor'].pop('a_scale')
  current['model']['attention_options']['favor']['a_scale'] = 0.5
  assert workdir_lib.differing_fields(saved, current) == [
    'model.attention_options.favor.a_scale',
    'model.attention_options.favor.num_features',
  ]


def test_options_of_unused_variants_and_other_fields():
  saved, current = _configs()
  current['model']['attention_options']['local']['window'] = 7
  assert workdir_lib.differing_fields(saved, current) == []
  current['model']['num_layers'] += 1
  assert workdir_lib.differing_fields(saved, current) == ['model.num_layers']
