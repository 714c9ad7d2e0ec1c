"""Config files, command-line overrides and validation."""

import glob
import importlib.util
import os
import re

from absl import flags
from ml_collections import config_flags
import pytest

from cnn_zoo.train import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(*argv):
  """Parses argv as experiments/ launchers do (overrides are read from the argv given)."""
  argv = ['prog', *argv]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


def test_any_field_is_overridden_from_the_command_line():
  config = _parse(f'--config={ROOT}/configs/default.py:smoke', '--config.batch_size=7',
                  '--config.learning_rate=0.3', '--config.optimizer=adamw',
                  '--config.lr_boundaries=(0.3,0.6)')
  assert (config.batch_size, config.learning_rate, config.optimizer) == (7, 0.3, 'adamw')
  assert tuple(config.lr_boundaries) == (0.3, 0.6)
  assert config.num_epochs == 1.0  # the smoke variant
  config_lib.validate(config)


def test_unknown_field_or_wrong_type_is_refused_on_the_command_line():
  with pytest.raises((flags.Error, KeyError, AttributeError), match='bach_size'):
    _parse(f'--config={ROOT}/configs/default.py', '--config.bach_size=7')
  with pytest.raises(flags.Error, match='num_epochs'):
    _parse(f'--config={ROOT}/configs/default.py', '--config.num_epochs=ten')


def _config_files():
  return sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py')))


@pytest.mark.parametrize('path', [p for p in _config_files() if not p.endswith('__init__.py')],
                         ids=os.path.basename)
def test_every_config_file_is_documented_and_every_documented_variant_is_valid(path):
  spec = importlib.util.spec_from_file_location('config_file', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):  # a helper the recipes share (cifar10_common.py)
    assert 'def ' in open(path, encoding='utf-8').read()
    return
  rel = os.path.relpath(path, ROOT)
  assert f'python -m experiments.train --config={rel}' in module.__doc__
  variants = set(re.findall(re.escape(rel) + r':(\S+)', module.__doc__))
  for arg in [None, *sorted(variants)]:
    config_lib.validate(module.get_config(arg))
  with pytest.raises(ValueError, match='unknown config argument'):
    module.get_config('no_such_argument')


@pytest.mark.parametrize('field,value,message', [
    ('model', 'lenet6', "config.model='lenet6' is not valid; did you mean lenet5"),
    ('dataset', 'imagenet21k', "unknown dataset 'imagenet21k'"),
    ('optimizer', 'lion', "config.optimizer='lion' is not valid"),
    ('schedule', 'linear', "config.schedule='linear' is not valid"),
    ('batch_size', 0, 'config.batch_size=0 is out of range'),
    ('learning_rate', -0.1, 'config.learning_rate=-0.1 is out of range'),
    ('label_smoothing', 1.0, 'must be in [0, 1)'),
    ('lr_boundaries', (0.5, 1.5), 'must be fractions'),
    ('dtype', 'float16', "config.dtype='float16' is not valid"),
    ('weight_decay_on', 'biases', "config.weight_decay_on='biases' is not valid; valid choices: "
                                  "all, kernels"),
])
def test_bad_values_are_named(field, value, message):
  config = config_lib.defaults()
  with config.unlocked():
    config[field] = value
  with pytest.raises(ValueError) as error:
    config_lib.validate(config)
  assert message in str(error.value)
  assert '\n' not in str(error.value)


def test_unknown_field_is_refused_by_validation():
  config = config_lib.defaults()
  config.bach_size = 7
  with pytest.raises(ValueError, match='unknown config field'):
    config_lib.validate(config)
