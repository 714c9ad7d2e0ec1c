"""VGG (Simonyan & Zisserman 2014), configurations A, B, D and E, with and without BatchNorm.

- vgg11 ... vgg19, vgg11_bn ... vgg19_bn: torchvision's VGG on 224x224: 3x3 convolutions with
  padding 1, 2x2/2 max pools, AdaptiveAvgPool to 7x7, head 4096 - dropout 0.5 - 4096 - dropout 0.5.
  As in torchvision the convolutions keep their bias when BatchNorm follows them, which the
  parameter counts (e.g. vgg16_bn 138,365,992) include.
- vgg11_bn_cifar ... vgg19_bn_cifar: the CIFAR VGG of kuangliu/pytorch-cifar (models/vgg.py): the
  same conv stack with BatchNorm, ending on a 1x1x512 map at 32x32, and one Linear(512, classes).
  vgg16_bn_cifar has 14,728,266 params for 10 classes.
"""

import functools
from typing import Sequence

import flax.linen as nn

from cnn_zoo.models import layers as layers_lib, pooling, registry

# Conv widths per depth, 'M' a 2x2/2 max pool.
CONFIGS = {
    11: (64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    13: (64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    16: (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'),
    19: (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
         512, 512, 512, 512, 'M'),
}


class VGG(nn.Module):
  """The conv stack of CONFIGS[depth], an adaptive average pool, then Dense-ReLU-dropout for each
  hidden width and a final Dense."""
  num_classes: int
  depth: int = 16
  batch_norm: bool = False
  pool_size: int = 7  # of the adaptive average pool before the head
  hidden: Sequence[int] = (4096, 4096)
  dropout_rate: float = 0.5
  layers: layers_lib.Layers = layers_lib.Layers('vgg')  # what models.get builds: see layers.py

  @nn.compact
  def __call__(self, x, train: bool = False):
    layers = self.layers
    x = x.astype(layers.dtype)
    for width in CONFIGS[self.depth]:
      if width == 'M':
        x = pooling.max_pool(x, 2, 2)
        continue
      x = layers.conv_with_bias(width, 3, x.shape[-1], padding=((1, 1), (1, 1)))(x)
      if self.batch_norm:
        x = layers.norm(train)()(x)
      x = nn.relu(x)
    x = pooling.adaptive_avg_pool(x, self.pool_size)
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(layers.dense(width, x.shape[-1])(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return layers.dense(self.num_classes, x.shape[-1])(x)


for _depth in CONFIGS:
  for _bn in (False, True):
    _suffix = '_bn' if _bn else ''
    registry.register(f'vgg{_depth}{_suffix}', functools.partial(VGG, depth=_depth, batch_norm=_bn),
                      input_shape=(224, 224, 3), min_input_size=32, num_classes=1000, family='vgg',
                      description=f'VGG-{_depth}{" with BatchNorm" if _bn else ""}, torchvision')
  # At 32x32 the stack ends on a 1x1 map, so the 1x1 adaptive pool is the identity.
  registry.register(f'vgg{_depth}_bn_cifar',
                    functools.partial(VGG, depth=_depth, batch_norm=True, pool_size=1, hidden=()),
                    input_shape=(32, 32, 3), min_input_size=32, num_classes=10, family='vgg',
                    description=f'VGG-{_depth} with BatchNorm for 32x32, kuangliu/pytorch-cifar')
