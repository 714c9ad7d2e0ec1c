"""LeNet-5 (LeCun et al. 1998): conv 6@5x5, pool, conv 16@5x5, pool, fully connected, on 32x32x1."""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnn_zoo.models import conv, initializers, pooling, registry

ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh, 'sigmoid': nn.sigmoid}
POOLS = {'max': pooling.max_pool, 'avg': pooling.avg_pool}


class LeNet5(nn.Module):
  """LeNet-5; the hidden widths of the fully connected head are an argument."""
  num_classes: int = 10
  hidden: Sequence[int] = (120, 84)
  activation: str = 'relu'
  pool: str = 'max'
  dtype: Any = jnp.float32
  weight_init: str = 'paper'  # see cnn_zoo.models.initializers
  conv_impl: str = 'auto'  # how convolutions compute: see cnn_zoo.models.conv

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no BatchNorm, no dropout
    act, pool = ACTIVATIONS[self.activation], POOLS[self.pool]
    init = initializers.rule('lenet', self.weight_init)
    x = x.astype(self.dtype)
    for features in (6, 16):
      x = conv.conv_module(self.conv_impl)(features, (5, 5), padding='VALID', dtype=self.dtype,
                  **init.conv(x.shape[-1], 5))(x)
      x = pool(act(x), 2, 2)
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = act(nn.Dense(width, dtype=self.dtype, **init.dense(x.shape[-1]))(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, **init.dense(x.shape[-1]))(x)


registry.register('lenet5', LeNet5, input_shape=(32, 32, 1), min_input_size=32,
                  num_classes=10, family='lenet',
                  description='LeNet-5, head 120-84 (LeCun et al. 1998)')
registry.register('lenet5_fc100', functools.partial(LeNet5, hidden=(120, 100)),
                  input_shape=(32, 32, 1), min_input_size=32, num_classes=10,
                  family='lenet', description='LeNet-5, head 120-100')
