"""GoogLeNet / Inception v1 (Szegedy et al. 2014) as torchvision builds it.

- googlenet: torchvision's GoogLeNet on 224x224: BasicConv2d = bias-free conv + BatchNorm (eps 1e-3)
  + ReLU, the '5x5' branch of every Inception block a 3x3 conv (as in torchvision), ceil-mode max
  pools, global average pool, dropout 0.2, Linear(1024, classes). 6,624,904 params, 1.498 GMACs.
  aux_logits=True adds torchvision's two auxiliary heads (after 4a and 4d: AdaptiveAvgPool 4x4,
  1x1 conv 128, Linear 1024, dropout 0.7, Linear classes; 13,004,888 params in all). The module
  still returns the main logits only; the heads run at init and in train mode, where they are
  sown: with mutable=['intermediates'], intermediates['aux_logits'] == ((aux1, aux2),).
- googlenet_cifar: the 32x32 layout of kuangliu/pytorch-cifar (models/googlenet.py): one 3x3 conv
  to 192 channels replaces the whole stem (7x7/2 conv, 1x1 and 3x3 convs, two max pools), so
  Inception 3 runs at 32x32, 4 at 16x16 and 5 at 8x8 (torchvision's 2x2 ceil-mode pool before
  Inception 5 takes 16 to 8). The blocks and head stay torchvision's (single 3x3 in the '5x5'
  branch, bias-free convs with BatchNorm eps 1e-3, dropout 0.2), so it has 5,490,986 params for
  10 classes (1.337 GMACs), not the 6,166,250 of kuangliu's, whose '5x5' branch is two 3x3 convs
  and whose convs keep their bias.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from cnn_zoo.models import layers as layers_lib, pooling, registry
from cnn_zoo.models import remat as remat_lib

# Inception blocks: (1x1, 3x3 reduce, 3x3, '5x5' reduce, '5x5', pool projection) widths.
INCEPTION = {
    '3a': (64, 96, 128, 16, 32, 32), '3b': (128, 128, 192, 32, 96, 64),
    '4a': (192, 96, 208, 16, 48, 64), '4b': (160, 112, 224, 24, 64, 64),
    '4c': (128, 128, 256, 24, 64, 64), '4d': (112, 144, 288, 32, 64, 64),
    '4e': (256, 160, 320, 32, 128, 128),
    '5a': (256, 160, 320, 32, 128, 128), '5b': (384, 192, 384, 48, 128, 128),
}


class BasicConv(nn.Module):
  """torchvision's BasicConv2d: bias-free conv, BatchNorm (eps 1e-3), ReLU."""
  features: int
  kernel: int
  layers: layers_lib.Layers
  stride: int = 1
  padding: int = 0

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = self.layers.conv(self.features, (self.kernel, self.kernel), strides=self.stride,
                         padding=((self.padding, self.padding),) * 2)(x)
    x = self.layers.norm(train)(epsilon=1e-3)(x)  # torchvision's GoogLeNet
    return nn.relu(x)


class Inception(nn.Module):
  """Four parallel branches, concatenated: 1x1; 1x1-3x3; 1x1-3x3 (the '5x5'); 3x3 max pool-1x1."""
  widths: tuple[int, int, int, int, int, int]
  layers: layers_lib.Layers

  @nn.compact
  def __call__(self, x, train: bool = False):
    b1, b2_reduce, b2, b3_reduce, b3, b4 = self.widths
    conv = functools.partial(BasicConv, layers=self.layers)
    branch1 = conv(b1, 1)(x, train)
    branch2 = conv(b2, 3, padding=1)(conv(b2_reduce, 1)(x, train), train)
    branch3 = conv(b3, 3, padding=1)(conv(b3_reduce, 1)(x, train), train)
    branch4 = conv(b4, 1)(pooling.max_pool(x, 3, 1, 1, ceil_mode=True), train)
    return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class InceptionAux(nn.Module):
  """torchvision's auxiliary classifier."""
  num_classes: int
  layers: layers_lib.Layers
  dropout_rate: float = 0.7

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = pooling.adaptive_avg_pool(x, 4)
    x = BasicConv(128, 1, self.layers)(x, train)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(self.layers.dense(1024, x.shape[-1])(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return self.layers.dense(self.num_classes, x.shape[-1])(x)


class GoogLeNet(nn.Module):
  """GoogLeNet; `stem` is 'imagenet' (7x7/2 conv, pools, 1x1 and 3x3 convs) or 'cifar' (one
  3x3 conv)."""
  num_classes: int
  stem: str = 'imagenet'
  aux_logits: bool = False
  dropout_rate: float = 0.2
  remat: str = 'none'  # what the blocks keep for the backward pass: see cnn_zoo.models.remat
  layers: layers_lib.Layers = layers_lib.Layers('googlenet')  # what models.get builds: layers.py

  @nn.compact
  def __call__(self, x, train: bool = False):
    layers = self.layers
    conv = functools.partial(BasicConv, layers=layers)
    inception_block = remat_lib.block(Inception, self.remat)
    inception = lambda name: inception_block(INCEPTION[name], layers, name=f'inception{name}')
    x = x.astype(layers.dtype)
    if self.stem == 'imagenet':
      x = conv(64, 7, stride=2, padding=3)(x, train)
      x = pooling.max_pool(x, 3, 2, ceil_mode=True)
      x = conv(64, 1)(x, train)
      x = conv(192, 3, padding=1)(x, train)
      x = pooling.max_pool(x, 3, 2, ceil_mode=True)
    elif self.stem == 'cifar':
      x = conv(192, 3, padding=1)(x, train)
    else:
      raise ValueError(f"unknown stem {self.stem!r}; valid choices: 'imagenet', 'cifar'")
    x = inception('3a')(x, train)
    x = inception('3b')(x, train)
    x = pooling.max_pool(x, 3, 2, ceil_mode=True)
    aux = []
    for name in ('4a', '4b', '4c', '4d', '4e'):
      if name in ('4b', '4e') and self.aux_logits and (train or self.is_initializing()):
        aux.append(InceptionAux(self.num_classes, layers, name=f'aux{len(aux) + 1}')(x, train))
      x = inception(name)(x, train)
    if aux:
      self.sow('intermediates', 'aux_logits', tuple(aux))
    x = pooling.max_pool(x, 2, 2, ceil_mode=True)
    x = inception('5a')(x, train)
    x = inception('5b')(x, train)
    x = pooling.global_avg_pool(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return layers.dense(self.num_classes, x.shape[-1])(x)


registry.register('googlenet', GoogLeNet, input_shape=(224, 224, 3), min_input_size=15,
                  num_classes=1000, family='googlenet',
                  description='GoogLeNet / Inception v1, torchvision (BatchNorm, no aux heads)')
registry.register('googlenet_cifar', functools.partial(GoogLeNet, stem='cifar'),
                  input_shape=(32, 32, 3), min_input_size=2, num_classes=10, family='googlenet',
                  description='GoogLeNet for 32x32, kuangliu/pytorch-cifar layout')
