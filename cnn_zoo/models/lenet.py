"""LeNet-5 (LeCun et al. 1998): conv 6@5x5, pool, conv 16@5x5, pool, fully connected, on 32x32x1."""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnn_zoo.models import layers as layers_lib, pooling, registry

ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh, 'sigmoid': nn.sigmoid}
POOLS = {'max': pooling.max_pool, 'avg': pooling.avg_pool}


class LeNet5(nn.Module):
  """LeNet-5; the hidden widths of the fully connected head are an argument."""
  num_classes: int = 10
  hidden: Sequence[int] = (120, 84)
  activation: str = 'relu'
  pool: str = 'max'
  layers: layers_lib.Layers = layers_lib.Layers('lenet')  # what models.get builds: see layers.py

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm, no dropout
    act, pool, layers = ACTIVATIONS[self.activation], POOLS[self.pool], self.layers
    x = x.astype(layers.dtype)
    for features in (6, 16):
      x = layers.conv_with_bias(features, 5, x.shape[-1], padding='VALID')(x)
      x = pool(act(x), 2, 2)
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = act(layers.dense(width, x.shape[-1])(x))
    return layers.dense(self.num_classes, x.shape[-1])(x)


registry.register('lenet5', LeNet5, input_shape=(32, 32, 1), min_input_size=32,
                  num_classes=10, family='lenet',
                  description='LeNet-5, head 120-84 (LeCun et al. 1998)')
registry.register('lenet5_fc100', functools.partial(LeNet5, hidden=(120, 100)),
                  input_shape=(32, 32, 1), min_input_size=32, num_classes=10,
                  family='lenet', description='LeNet-5, head 120-100')
