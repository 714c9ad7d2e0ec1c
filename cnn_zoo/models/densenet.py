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
import jax
from jax import lax
import jax.numpy as jnp

from cnn_zoo.models import layers as layers_lib, norm, pooling, registry
from cnn_zoo.models import remat as remat_lib

# A block's features are kept as the list of the pieces it concatenates (its input, then each
# layer's `growth_rate` new channels), never as a growing concatenation: the concatenation a layer
# reads is built inside the layer and, with remat, not kept for the backward pass but rebuilt from
# the pieces (Pleiss et al. 2017, "Memory-efficient implementation of DenseNets"). In train mode a
# piece's batch statistics are computed once, when it is made, and shared by every BatchNorm that
# reads it: they are the statistics of the same channels over the same batch.


@jax.custom_vjp
def accumulate_here(pieces):
  """The identity on a block's pieces, whose gradients are summed here in the backward pass.

  Each piece's gradient is a sum over every later layer that reads it. Left to itself, XLA fuses
  each such sum into one kernel that reads a slice of every later layer's gradient, keeping all
  of those alive until the block's first piece has its gradient: memory quadratic in the depth
  even with remat. An optimisation barrier on the running sums between layers makes each layer's
  gradient fold into them and die (memory linear in the depth, as Pleiss et al.'s shared buffers
  make it); it is kept where barriers are (`conv.KEEP_BARRIERS`).
  """
  return pieces


def _accumulate_fwd(pieces):
  return pieces, None


def _accumulate_bwd(_, cotangents):
  return (lax.optimization_barrier(cotangents),)


accumulate_here.defvjp(_accumulate_fwd, _accumulate_bwd)


def moments(x):
  """Per-channel batch mean and (biased) variance of NHWC `x`, as BatchNorm computes them (in
  float32 at least)."""
  return norm.batch_stats(x.astype(jnp.promote_types(x.dtype, jnp.float32)))


class SharedStatsBatchNorm(nn.Module):
  """BatchNorm + ReLU of the concatenated `pieces`, given the pieces' batch `piece_moments` in
  train mode instead of computing them again. Its variables, their names and its numbers are
  nn.BatchNorm's (norm.py's momentum and epsilon) over the concatenated channels."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pieces, piece_moments, train: bool):
    x = jnp.concatenate(pieces, axis=-1)
    channels = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (channels,), jnp.float32)
    running_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros(channels, jnp.float32))
    running_var = self.variable('batch_stats', 'var', lambda: jnp.ones(channels, jnp.float32))
    if train:
      mean = jnp.concatenate([m for m, _ in piece_moments])
      var = jnp.concatenate([v for _, v in piece_moments])
      if not self.is_initializing():
        running_mean.value = norm.MOMENTUM * running_mean.value + (1 - norm.MOMENTUM) * mean
        running_var.value = norm.MOMENTUM * running_var.value + (1 - norm.MOMENTUM) * var
    else:
      mean, var = running_mean.value, running_var.value
    y = (x - mean) * (lax.rsqrt(var + norm.EPSILON) * scale) + bias
    return nn.relu(y.astype(self.dtype))


class DenseLayer(nn.Module):
  """BN - ReLU - 1x1 conv (bn_size * growth) - BN - ReLU - 3x3 conv (growth) over the
  concatenation of a block's pieces; returns the `growth_rate` new channels. Called as
  `layer((pieces, piece_moments), train)`."""
  growth_rate: int
  layers: layers_lib.Layers
  bn_size: int = 4

  @nn.compact
  def __call__(self, features, train: bool = False):
    pieces, piece_moments = features
    conv, dtype = self.layers.conv, self.layers.dtype
    x = SharedStatsBatchNorm(dtype, name='BatchNorm_0')(pieces, piece_moments, train)
    y = conv(self.bn_size * self.growth_rate, (1, 1), name='Conv_0')(x)
    y = nn.relu(self.layers.norm(train)(name='BatchNorm_1')(y))
    return conv(self.growth_rate, (3, 3), padding=((1, 1), (1, 1)), name='Conv_1')(y)


class DenseNet(nn.Module):
  """A stem, dense blocks joined by transitions (BN - ReLU - 1x1 conv compressing the channels -
  2x2/2 average pool), final BN - ReLU, global average pool, Dense. `stem` is 'imagenet' (7x7/2
  conv, BN, ReLU, 3x3/2 max pool) or 'cifar' (3x3 conv)."""
  num_classes: int
  block_sizes: Sequence[int] = (6, 12, 24, 16)
  growth_rate: int = 32
  bn_size: int = 4
  compression: float = 0.5
  init_features: int = 64
  stem: str = 'imagenet'
  remat: str = 'none'  # what the dense layers keep for the backward pass: see cnn_zoo.models.remat
  # What models.get builds (layers.py); the CIFAR stem gets its reference's 'densenet_cifar' rule.
  layers: layers_lib.Layers = layers_lib.Layers('densenet')

  @nn.compact
  def __call__(self, x, train: bool = False):
    layers, conv = self.layers, self.layers.conv
    layer = remat_lib.block(DenseLayer, self.remat)
    # BatchNorms are named as nn.BatchNorm's would be numbered here: 'BatchNorm_0' is the
    # ImageNet stem's, then one per transition and the last.
    bn_names = (f'BatchNorm_{i}' for i in range(len(self.block_sizes) + 1))
    x = x.astype(layers.dtype)
    if self.stem == 'imagenet':
      x = conv(self.init_features, (7, 7), strides=2, padding=((3, 3), (3, 3)))(x)
      x = layers.norm(train)(name=next(bn_names))(x)
      x = pooling.max_pool(nn.relu(x), 3, 2, 1)
    elif self.stem == 'cifar':
      x = conv(self.init_features, (3, 3), padding=((1, 1), (1, 1)))(x)
    else:
      raise ValueError(f"unknown stem {self.stem!r}; valid choices: 'imagenet', 'cifar'")
    piece_moments = moments if train else lambda piece: None
    for i, size in enumerate(self.block_sizes):
      pieces, stats = [x], [piece_moments(x)]
      for _ in range(size):
        pieces = list(accumulate_here(tuple(pieces)))
        dense_layer = layer(self.growth_rate, layers, self.bn_size)
        y = dense_layer((tuple(pieces), tuple(stats)), train)
        pieces.append(y)
        stats.append(piece_moments(y))
      x = SharedStatsBatchNorm(layers.dtype, name=next(bn_names))(pieces, stats, train)
      if i < len(self.block_sizes) - 1:
        x = conv(int(x.shape[-1] * self.compression), (1, 1))(x)
        x = pooling.avg_pool(x, 2, 2)
    x = pooling.global_avg_pool(x)
    return layers.dense(self.num_classes, x.shape[-1])(x)


for _depth, _sizes in {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}.items():
  registry.register(f'densenet{_depth}', functools.partial(DenseNet, block_sizes=_sizes),
                    input_shape=(224, 224, 3), min_input_size=29, num_classes=1000,
                    family='densenet', description=f'DenseNet-{_depth} (BC, k=32), torchvision')
registry.register('densenet_bc_100',
                  functools.partial(DenseNet, block_sizes=(16, 16, 16), growth_rate=12,
                                    init_features=24, stem='cifar'),
                  input_shape=(32, 32, 3), min_input_size=4, num_classes=10, family='densenet',
                  description='DenseNet-BC, L=100, k=12, for CIFAR (Huang et al. 2016)')
