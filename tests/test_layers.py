"""A model's layers come from one object (cnn_zoo.models.layers.Layers) that models.get builds
from the run's choices and every block of the model shares; a wrong choice is refused by name."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from cnn_zoo import models
from cnn_zoo.models import layers as layers_lib

ONE_PER_FAMILY = ('lenet5', 'alexnet_cifar', 'vgg11_bn_cifar', 'resnet20', 'densenet_bc_100',
                  'googlenet_cifar')


@pytest.mark.parametrize('name', ONE_PER_FAMILY)
def test_every_block_of_a_model_shares_its_one_layers(name):
  model = models.get(name, dtype='bfloat16', conv_impl='xla', weight_init='flax',
                     norm_impl='flax')
  assert model.layers == layers_lib.Layers(model.layers.init_rule, 'flax', 'xla', jnp.bfloat16,
                                           'flax')
  holders = []

  def record(next_fun, args, kwargs, context):
    if hasattr(context.module, 'layers'):
      holders.append(context.module)
    return next_fun(*args, **kwargs)

  size = models.input_shape(name)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                   jnp.zeros((1, *size)))
  assert holders and all(m.layers is model.layers for m in holders)
  blocks = {type(m).__name__ for m in holders} - {type(model).__name__}
  assert bool(blocks) == (name in ('resnet20', 'densenet_bc_100', 'googlenet_cifar')), blocks


@pytest.mark.parametrize('field, value, choices', [
    ('conv_impl', 'fft', 'auto, xla, im2col, im2col_bf16, ffi_wgrad'),
    ('weight_init', 'he', 'paper, flax'), ('norm_impl', 'sync', 'vjp, flax')])
def test_a_wrong_choice_is_refused_in_one_line_when_the_model_is_built(field, value, choices):
  with pytest.raises(ValueError, match=f"^{field}='{value}' is not valid; valid choices: "
                                       f"{choices}$"):
    models.get('resnet20', **{field: value})


def test_an_unknown_rule_is_refused():
  with pytest.raises(ValueError, match="init_rule='resnet_imagenet' is not valid"):
    layers_lib.Layers('resnet_imagenet')


def test_the_stem_picks_the_initialisation_rule():
  """The CIFAR stems start as their references do, an override of the stem too."""
  assert models.get('resnet20').layers.init_rule == 'resnet_cifar'
  assert models.get('resnet18').layers.init_rule == 'resnet'
  assert models.get('resnet18', stem='cifar').layers.init_rule == 'resnet_cifar'
  assert models.get('densenet_bc_100').layers.init_rule == 'densenet_cifar'
  assert models.get('googlenet_cifar').layers.init_rule == 'googlenet'


def test_layers_are_a_value():
  """Equal choices give equal, hashable Layers, so two models built alike compare equal."""
  assert layers_lib.Layers('vgg', dtype='float32') == layers_lib.Layers('vgg')
  assert hash(layers_lib.Layers('vgg')) == hash(layers_lib.Layers('vgg'))
  assert models.get('lenet5', conv_impl='xla') == models.get('lenet5', conv_impl='xla')
  assert models.get('lenet5', conv_impl='xla') != models.get('lenet5', conv_impl='im2col')
