"""Residual networks (He et al. 2015).

- resnet18 ... resnet152: torchvision's ImageNet ResNets: 7x7/2 conv and 3x3/2 max pool stem,
  stages of widths 64-128-256-512, basic blocks (18, 34) or bottlenecks with expansion 4 (50, 101,
  152) whose stride sits on the 3x3 conv (v1.5), projection shortcuts (1x1 conv + BatchNorm) where
  the shape changes, global average pool, Linear.
- resnet20 ... resnet110: the CIFAR ResNets of the paper (section 4.2): a 3x3 conv to 16 channels,
  three stages of n basic blocks (depth 6n + 2) of widths 16-32-64, and option A shortcuts, which
  have no parameters: subsample by 2 and zero-pad the new channels (half on each side, as in
  akamaster/pytorch_resnet_cifar10). resnet20 has 269,722 params, resnet110 1,727,962.
"""

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnn_zoo.models import layers as layers_lib, pooling, registry
from cnn_zoo.models import remat as remat_lib


class ResidualBlock(nn.Module):
  """What both block kinds take: their convolutions are `layers.conv` (bias-free), their
  BatchNorms `layers.norm`."""
  features: int
  layers: layers_lib.Layers
  stride: int = 1
  shortcut: str = 'projection'  # or 'zero_pad' (option A)
  zero_init_last_bn: bool = False


class BasicBlock(ResidualBlock):
  """3x3 conv - BN - ReLU - 3x3 conv - BN, plus the shortcut, then ReLU."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, bn = self.layers.conv, self.layers.norm(train)
    y = conv(self.features, (3, 3), strides=self.stride, padding=((1, 1), (1, 1)))(x)
    y = nn.relu(bn()(y))
    y = conv(self.features, (3, 3), padding=((1, 1), (1, 1)))(y)
    y = bn(scale_init=_last_bn_scale(self))(y)
    return nn.relu(y + _shortcut(self, x, self.features, train))


class Bottleneck(ResidualBlock):
  """1x1 conv - BN - ReLU - 3x3 conv (strided) - BN - ReLU - 1x1 conv (4x wider) - BN, plus the
  shortcut, then ReLU."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, bn = self.layers.conv, self.layers.norm(train)
    y = nn.relu(bn()(conv(self.features, (1, 1))(x)))
    y = conv(self.features, (3, 3), strides=self.stride, padding=((1, 1), (1, 1)))(y)
    y = nn.relu(bn()(y))
    y = bn(scale_init=_last_bn_scale(self))(conv(self.features * 4, (1, 1))(y))
    return nn.relu(y + _shortcut(self, x, self.features * 4, train))


def _last_bn_scale(block: nn.Module):
  """Zero for the block's last BatchNorm scale with `zero_init_last_bn` (Goyal et al. 2017), so
  each residual block starts as the identity; one otherwise."""
  return nn.initializers.zeros if block.zero_init_last_bn else nn.initializers.ones


def _shortcut(block: nn.Module, x, features: int, train: bool):
  """The identity, or where the shape changes a projection (option B) or subsample + zero-pad
  (option A). Called inside the block's compact __call__, so the projection's layers are its own."""
  if block.stride == 1 and x.shape[-1] == features:
    return x
  if block.shortcut == 'zero_pad':
    x = x[:, ::block.stride, ::block.stride, :]
    extra = features - x.shape[-1]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
  x = block.layers.conv(features, (1, 1), strides=block.stride, name='downsample_conv')(x)
  return block.layers.norm(train)(name='downsample_bn')(x)


class ResNet(nn.Module):
  """A stem, stages of `stage_sizes` blocks of `widths` (stride 2 from the second stage on),
  global average pool, Dense. `stem` is 'imagenet' (7x7/2 conv, 3x3/2 max pool) or 'cifar' (3x3
  conv)."""
  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: Callable[..., nn.Module] = BasicBlock
  widths: Sequence[int] = (64, 128, 256, 512)
  stem: str = 'imagenet'
  shortcut: str = 'projection'
  zero_init_last_bn: bool = False  # torchvision's zero_init_residual
  remat: str = 'none'  # what the blocks keep for the backward pass: see cnn_zoo.models.remat
  # What models.get builds (layers.py); it gives the CIFAR stem its reference's 'resnet_cifar' rule.
  layers: layers_lib.Layers = layers_lib.Layers('resnet')

  @nn.compact
  def __call__(self, x, train: bool = False):
    layers = self.layers
    block = remat_lib.block(self.block, self.remat)
    conv = functools.partial(layers.conv, self.widths[0])
    x = x.astype(layers.dtype)
    if self.stem == 'imagenet':
      x = conv((7, 7), strides=2, padding=((3, 3), (3, 3)))(x)
    elif self.stem == 'cifar':
      x = conv((3, 3), padding=((1, 1), (1, 1)))(x)
    else:
      raise ValueError(f"unknown stem {self.stem!r}; valid choices: 'imagenet', 'cifar'")
    x = layers.norm(train)()(x)
    x = nn.relu(x)
    if self.stem == 'imagenet':
      x = pooling.max_pool(x, 3, 2, 1)
    for i, (size, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(size):
        stride = 2 if i > 0 and j == 0 else 1
        x = block(width, layers, stride=stride, shortcut=self.shortcut,
                  zero_init_last_bn=self.zero_init_last_bn)(x, train)
    x = pooling.global_avg_pool(x)
    return layers.dense(self.num_classes, x.shape[-1])(x)


_IMAGENET = {18: ((2, 2, 2, 2), BasicBlock), 34: ((3, 4, 6, 3), BasicBlock),
             50: ((3, 4, 6, 3), Bottleneck), 101: ((3, 4, 23, 3), Bottleneck),
             152: ((3, 8, 36, 3), Bottleneck)}
for _depth, (_sizes, _block) in _IMAGENET.items():
  registry.register(f'resnet{_depth}', functools.partial(ResNet, stage_sizes=_sizes, block=_block),
                    input_shape=(224, 224, 3), min_input_size=1, num_classes=1000,
                    family='resnet', description=f'ResNet-{_depth}, torchvision (v1.5)')
for _depth in (20, 32, 44, 56, 110):
  _n = (_depth - 2) // 6
  registry.register(f'resnet{_depth}',
                    functools.partial(ResNet, stage_sizes=(_n, _n, _n), widths=(16, 32, 64),
                                      stem='cifar', shortcut='zero_pad'),
                    input_shape=(32, 32, 3), min_input_size=1, num_classes=10, family='resnet',
                    description=f'ResNet-{_depth} for CIFAR (He et al. 2015, option A shortcuts)')
