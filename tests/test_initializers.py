"""Each family starts where its reference implementation starts (cnn_zoo.models.initializers)."""

import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_zoo import models
from cnn_zoo.models import resnet

# Expected std of a kernel of shape (..., fan_in_channels, out) by (family, layer kind).
_RECEPTIVE = lambda shape: int(np.prod(shape[:-2])) if len(shape) == 4 else 1
_FAN_IN = lambda shape: _RECEPTIVE(shape) * shape[-2]
_FAN_OUT = lambda shape: _RECEPTIVE(shape) * shape[-1]
TORCH_DEFAULT = lambda shape: 1 / math.sqrt(3 * _FAN_IN(shape))  # uniform +-1/sqrt(fan_in)
KERNEL_STD = {
    ('lenet', 'conv'): TORCH_DEFAULT, ('lenet', 'dense'): TORCH_DEFAULT,
    ('alexnet', 'conv'): TORCH_DEFAULT, ('alexnet', 'dense'): TORCH_DEFAULT,
    ('vgg', 'conv'): lambda s: math.sqrt(2 / _FAN_OUT(s)), ('vgg', 'dense'): lambda s: 0.01,
    ('resnet', 'conv'): lambda s: math.sqrt(2 / _FAN_OUT(s)), ('resnet', 'dense'): TORCH_DEFAULT,
    ('resnet_cifar', 'conv'): lambda s: math.sqrt(2 / _FAN_IN(s)),
    ('resnet_cifar', 'dense'): lambda s: math.sqrt(2 / _FAN_IN(s)),
    ('densenet', 'conv'): lambda s: math.sqrt(2 / _FAN_IN(s)), ('densenet', 'dense'): TORCH_DEFAULT,
    ('densenet_cifar', 'conv'): lambda s: math.sqrt(2 / _FAN_OUT(s)),
    ('densenet_cifar', 'dense'): TORCH_DEFAULT,
    ('googlenet', 'conv'): lambda s: 0.01, ('googlenet', 'dense'): lambda s: 0.01,
}
# Bias rule by (family, layer kind): 'zero' or 'torch' (uniform +-1/sqrt(fan_in)).
BIAS = {('lenet', 'conv'): 'torch', ('lenet', 'dense'): 'torch',
        ('alexnet', 'conv'): 'torch', ('alexnet', 'dense'): 'torch',
        ('vgg', 'conv'): 'zero', ('vgg', 'dense'): 'zero',
        ('resnet', 'dense'): 'torch', ('densenet', 'dense'): 'zero',
        ('resnet_cifar', 'dense'): 'torch', ('densenet_cifar', 'dense'): 'zero',
        ('googlenet', 'dense'): 'torch'}
LARGE = 4096  # kernels with at least this many weights have their std checked (error ~1%)


def _rule_name(name):
  """The initializers.PAPER rule of a registered model: the CIFAR ResNets and DenseNet-BC have
  their own (their references'), every other model its family's."""
  family = models.spec(name).family
  cifar = family in ('resnet', 'densenet') and models.get(name).stem == 'cifar'
  return f'{family}_cifar' if cifar else family


def _init(name, **kwargs):
  model = models.get(name, **kwargs)
  h, _, c = models.input_shape(name)
  size = min(h, max(64, models.spec(name).min_input_size))  # ImageNet models on a small image
  init = jax.jit(lambda: model.init({'params': jax.random.PRNGKey(0),
                                     'dropout': jax.random.PRNGKey(1)},
                                    jnp.zeros((1, size, size, c)), train=False))
  return jax.device_get(init())


def _layers(params, prefix=()):
  """(path, kernel, bias or None) of every Conv and Dense layer."""
  for key, value in params.items():
    if 'kernel' in value:
      yield prefix + (key,), value['kernel'], value.get('bias')
    elif not {'scale', 'bias'} >= set(value):
      yield from _layers(value, prefix + (key,))


def _batch_norms(params):
  for key, value in params.items():
    if set(value) == {'scale', 'bias'}:
      yield key, value
    elif 'kernel' not in value:
      yield from _batch_norms(value)


ONE_PER_FAMILY = ('lenet5', 'alexnet_cifar', 'zfnet_cifar', 'vgg11_bn_cifar', 'resnet20',
                  'densenet_bc_100', 'googlenet_cifar')
EVERY_OTHER = [pytest.param(n, marks=pytest.mark.slow) for n in models.names()
               if n not in ONE_PER_FAMILY]


@pytest.mark.parametrize('name', list(ONE_PER_FAMILY) + EVERY_OTHER)
def test_every_layer_follows_its_family_rule(name):
  """Reached through the registry: every kernel, bias and BatchNorm of the model."""
  family = _rule_name(name)
  variables = _init(name)
  checked = 0
  for path, kernel, bias in _layers(variables['params']):
    kind = 'conv' if kernel.ndim == 4 else 'dense'
    if kernel.size >= LARGE:
      expected = KERNEL_STD[family, kind](kernel.shape)
      assert abs(kernel.std() / expected - 1) < 0.1, (path, kernel.std(), expected)
      assert abs(kernel.mean()) < 0.1 * expected, path
      checked += 1
    if bias is not None:
      rule = BIAS[family, kind]
      bound = 1 / math.sqrt(_FAN_IN(kernel.shape))
      if rule == 'zero':
        assert not np.any(bias), path
      else:
        assert np.all(np.abs(bias) <= bound) and np.any(bias), path
  assert checked >= 1
  if family == 'googlenet':  # torchvision's trunc_normal_(std=0.01, a=-2, b=2)
    assert all(np.abs(k).max() <= 2.0 for _, k, _ in _layers(variables['params']))
  for path, bn in _batch_norms(variables['params']):
    assert np.all(bn['scale'] == 1) and not np.any(bn['bias']), path


def test_the_cifar_resnet_linear_is_he_normal_fan_in_as_in_its_reference():
  """akamaster/pytorch_resnet_cifar10 applies kaiming_normal_ to the Linear too (ResNet-20's own
  640 weights are too few for the std check above: 100 classes give 6,400)."""
  dense = _init('resnet20', num_classes=100)['params']['Dense_0']
  assert abs(dense['kernel'].std() / math.sqrt(2 / 64) - 1) < 0.05
  bound = 1 / math.sqrt(64)
  assert np.all(np.abs(dense['bias']) <= bound) and np.abs(dense['bias']).max() > bound / 2
  # ImageNet ResNets keep torchvision's rule: fan_out convolutions, PyTorch's default Linear.
  assert _rule_name('resnet18') == 'resnet' and _rule_name('resnet20') == 'resnet_cifar'
  assert _rule_name('densenet121') == 'densenet'
  assert _rule_name('densenet_bc_100') == 'densenet_cifar'


def test_every_name_takes_its_family_rule():
  """What the slow cases check by value, every registered name checks by construction."""
  for name in models.names():
    module = models.get(name)
    assert module.layers.weight_init == 'paper' and module.layers.init_rule == _rule_name(name)
    assert models.get(name, weight_init='flax').layers.weight_init == 'flax'


def test_zero_init_last_bn_starts_each_residual_block_at_the_identity():
  def first_block(block, zero_init_last_bn):
    small = resnet.ResNet(num_classes=10, stage_sizes=(1,), block=block, widths=(8,),
                          stem='cifar', zero_init_last_bn=zero_init_last_bn)
    params = small.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))['params']
    return params[f'{block.__name__}_0']

  basic = first_block(resnet.BasicBlock, True)
  assert not np.any(basic['BatchNorm_1']['scale']) and np.all(basic['BatchNorm_0']['scale'] == 1)
  assert np.all(first_block(resnet.BasicBlock, False)['BatchNorm_1']['scale'] == 1)
  bottleneck = first_block(resnet.Bottleneck, True)
  assert not np.any(bottleneck['BatchNorm_2']['scale'])
  assert np.all(bottleneck['BatchNorm_1']['scale'] == 1)
  assert np.all(bottleneck['downsample_bn']['scale'] == 1)
  assert models.get('resnet20', zero_init_last_bn=True).zero_init_last_bn  # reached by name


# Digests of model.init's variables from the code before weight_init existed (flax's defaults),
# jax 0.10.2, PRNGKey(0): weight_init='flax' must repeat earlier runs bit for bit.
FLAX_DIGESTS = {'lenet5': '0b65c75f868ccac8', 'resnet20': '9246b84539b1233a',
                'vgg11_bn_cifar': 'fea53601e4497835', 'alexnet_cifar': 'bed4981acdf0688c'}


@pytest.mark.parametrize('name', sorted(FLAX_DIGESTS))
def test_flax_init_repeats_the_earlier_weights_bit_for_bit(name):
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(_init(name, weight_init='flax'))[0]:
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.asarray(leaf).tobytes())
  assert digest.hexdigest()[:16] == FLAX_DIGESTS[name]


def test_paper_is_the_default_and_differs_from_flax():
  paper, flax_ = _init('lenet5'), _init('lenet5', weight_init='flax')
  assert np.any(paper['params']['Conv_0']['bias'])  # PyTorch's default bias, not zeros
  assert not np.any(flax_['params']['Conv_0']['bias'])


def test_unknown_weight_init_is_refused():
  with pytest.raises(ValueError, match="weight_init='he' is not valid; valid choices: paper, flax"):
    _init('lenet5', weight_init='he')


def test_the_config_field_reaches_the_model(smoke_config, tmp_path):
  from cnn_zoo.train import config as config_lib
  from cnn_zoo.train import loop
  smoke_config.num_train_steps = 1
  digests = {}
  for rule in ('paper', 'flax'):
    smoke_config.weight_init = rule
    digests[rule] = loop.train_and_evaluate(smoke_config, str(tmp_path / rule))['weights_sha256']
  assert digests['paper'] != digests['flax']
  smoke_config.weight_init = 'he'
  with pytest.raises(ValueError, match="config.weight_init='he' is not valid; valid choices: "
                                       "paper, flax"):
    config_lib.validate(smoke_config)
