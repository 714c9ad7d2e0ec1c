"""Densely connected networks, DenseNet-BC (Huang et al. 2016).

- densenet121, densenet169, densenet201: torchvision's: growth rate 32, bottleneck width 4 x 32,
  compression 0.5, a 64-channel 7x7/2 conv + BN + ReLU + 3x3/2 max pool stem, dense blocks of
  (6, 12, 24, 16), (6, 12, 32, 32) and (6, 12, 48, 32) layers, a final BN + ReLU, global average
  pool, Linear.
- densenet_bc_100: the paper's CIFAR DenseNet-BC with L=100, k=12: a 3x3 conv to 2k = 24 channels
  (no BN in the stem, as in the authors' code), three dense blocks of 16 bottleneck layers,
  compression 0.5, 769,162 params for 10 classes.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnn_zoo.models import conv as conv_lib, initializers, norm, pooling, registry
from cnn_zoo.models import remat as remat_lib


class DenseLayer(nn.Module):
  """BN - ReLU - 1x1 conv (bn_size * growth) - BN - ReLU - 3x3 conv (growth), concatenated to x."""
  growth_rate: int
  bn_size: int = 4
  dtype: Any = jnp.float32
  weight_init: str = 'paper'
  conv_impl: str = 'auto'  # how convolutions compute: see cnn_zoo.models.conv

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = functools.partial(norm.batch_norm, train, self.dtype)
    conv = functools.partial(
        conv_lib.conv_module(self.conv_impl), use_bias=False, dtype=self.dtype,
        kernel_init=initializers.rule('densenet', self.weight_init).conv_kernel)
    y = conv(self.bn_size * self.growth_rate, (1, 1))(nn.relu(bn()(x)))
    y = conv(self.growth_rate, (3, 3), padding=((1, 1), (1, 1)))(nn.relu(bn()(y)))
    return jnp.concatenate([x, y], axis=-1)


class DenseNet(nn.Module):
  """A stem, dense blocks joined by transitions (BN - ReLU - 1x1 conv compressing the channels -
  2x2/2 average pool), final BN - ReLU, global average pool, Dense. `stem` is 'imagenet' (7x7/2
  conv, BN, ReLU, 3x3/2 max pool) or 'cifar' (3x3 conv)."""
  num_classes: int
  dtype: Any = jnp.float32
  block_sizes: Sequence[int] = (6, 12, 24, 16)
  growth_rate: int = 32
  bn_size: int = 4
  compression: float = 0.5
  init_features: int = 64
  stem: str = 'imagenet'
  weight_init: str = 'paper'  # see cnn_zoo.models.initializers
  conv_impl: str = 'auto'  # how convolutions compute: see cnn_zoo.models.conv
  remat: str = 'none'  # what the dense layers keep for the backward pass: see cnn_zoo.models.remat

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = functools.partial(norm.batch_norm, train, self.dtype)
    init = initializers.rule('densenet', self.weight_init)
    conv = functools.partial(conv_lib.conv_module(self.conv_impl), use_bias=False, dtype=self.dtype,
                             kernel_init=init.conv_kernel)
    x = x.astype(self.dtype)
    if self.stem == 'imagenet':
      x = conv(self.init_features, (7, 7), strides=2, padding=((3, 3), (3, 3)))(x)
      x = pooling.max_pool(nn.relu(bn()(x)), 3, 2, 1)
    elif self.stem == 'cifar':
      x = conv(self.init_features, (3, 3), padding=((1, 1), (1, 1)))(x)
    else:
      raise ValueError(f"unknown stem {self.stem!r}; valid choices: 'imagenet', 'cifar'")
    for i, size in enumerate(self.block_sizes):
      for _ in range(size):
        x = remat_lib.block(DenseLayer, self.remat)(self.growth_rate, self.bn_size, dtype=self.dtype,
                       weight_init=self.weight_init, conv_impl=self.conv_impl)(x, train)
      if i < len(self.block_sizes) - 1:
        features = int(x.shape[-1] * self.compression)
        x = conv(features, (1, 1))(nn.relu(bn()(x)))
        x = pooling.avg_pool(x, 2, 2)
    x = pooling.global_avg_pool(nn.relu(bn()(x)))
    return nn.Dense(self.num_classes, dtype=self.dtype, **init.dense(x.shape[-1]))(x)


for _depth, _sizes in {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}.items():
  registry.register(f'densenet{_depth}', functools.partial(DenseNet, block_sizes=_sizes),
                    input_shape=(224, 224, 3), min_input_size=29, num_classes=1000,
                    family='densenet', description=f'DenseNet-{_depth} (BC, k=32), torchvision')
registry.register('densenet_bc_100',
                  functools.partial(DenseNet, block_sizes=(16, 16, 16), growth_rate=12,
                                    init_features=24, stem='cifar'),
                  input_shape=(32, 32, 3), min_input_size=4, num_classes=10, family='densenet',
                  description='DenseNet-BC, L=100, k=12, for CIFAR (Huang et al. 2016)')
