"""AlexNet (Krizhevsky et al. 2012) and ZFNet (Zeiler & Fergus 2013): five convolutions, max pools
and a fully connected head, as one module configured by its layer list.

- alexnet: torchvision's single-tower AlexNet (64-192-384-256-256, the "one weird trick" widths),
  AdaptiveAvgPool to 6x6, head dropout 0.5 - 4096 - dropout 0.5 - 4096. 61,100,840 params,
  0.714 GMACs at 224x224.
- zfnet: ZFNet in torchvision's style: 96@7x7/2, 256@5x5/2, 384, 384, 256 and the AlexNet head
  (no local response normalisation). Paddings give the paper's feature maps 110-55-26-13-13-13-6:
  conv1 padding 1, 3x3/2 max pools with padding 1 after conv1 and conv2, conv2 unpadded, an
  unpadded 3x3/2 max pool after conv5. 62,357,608 params, 1.168 GMACs at 224x224.
- alexnet_cifar: the CIFAR AlexNet of bearpaw/pytorch-classification (models/cifar/alexnet.py):
  conv 64@11x11/4 padding 5, 2x2/2 max pools, the fully connected layers replaced by one
  Linear(256, classes) on the 1x1x256 map. 2,472,266 params for 10 classes.
- zfnet_cifar: our adaptation of ZFNet to 32x32 by the same recipe (no widely used reference
  exists): ZFNet's convolutions with 'same' paddings (96@7x7/2 padding 3, 256@5x5/2 padding 2),
  2x2/2 max pools after conv1, conv2 and conv5 (feature maps 16-8-4-2-2-2-1), one
  Linear(256, classes). 3,729,034 params for 10 classes.
"""

import functools
from typing import Sequence

import flax.linen as nn

from cnn_zoo.models import layers as layers_lib, pooling, registry

# Each convolution as (features, kernel, stride, padding, max pool after it), the max pool as
# (window, stride, padding) or None.
ALEXNET = ((64, 11, 4, 2, (3, 2, 0)), (192, 5, 1, 2, (3, 2, 0)), (384, 3, 1, 1, None),
           (256, 3, 1, 1, None), (256, 3, 1, 1, (3, 2, 0)))
ZFNET = ((96, 7, 2, 1, (3, 2, 1)), (256, 5, 2, 0, (3, 2, 1)), (384, 3, 1, 1, None),
         (384, 3, 1, 1, None), (256, 3, 1, 1, (3, 2, 0)))
ALEXNET_CIFAR = ((64, 11, 4, 5, (2, 2, 0)), (192, 5, 1, 2, (2, 2, 0)), (384, 3, 1, 1, None),
                 (256, 3, 1, 1, None), (256, 3, 1, 1, (2, 2, 0)))
ZFNET_CIFAR = ((96, 7, 2, 3, (2, 2, 0)), (256, 5, 2, 2, (2, 2, 0)), (384, 3, 1, 1, None),
               (384, 3, 1, 1, None), (256, 3, 1, 1, (2, 2, 0)))


class AlexNet(nn.Module):
  """Convolutions with ReLU and max pools, an adaptive average pool, then dropout-Dense-ReLU
  for each hidden width and a final Dense."""
  num_classes: int
  convs: Sequence[tuple] = ALEXNET
  pool_size: int = 6  # of the adaptive average pool before the head
  hidden: Sequence[int] = (4096, 4096)
  dropout_rate: float = 0.5
  layers: layers_lib.Layers = layers_lib.Layers('alexnet')  # what models.get builds: layers.py

  @nn.compact
  def __call__(self, x, train: bool = False):
    layers = self.layers
    x = x.astype(layers.dtype)
    for features, kernel, stride, padding, pool in self.convs:
      x = layers.conv_with_bias(features, kernel, x.shape[-1], strides=stride,
                                padding=((padding, padding),) * 2)(x)
      x = nn.relu(x)
      if pool:
        x = pooling.max_pool(x, *pool)
    x = pooling.adaptive_avg_pool(x, self.pool_size)
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.relu(layers.dense(width, x.shape[-1])(x))
    return layers.dense(self.num_classes, x.shape[-1])(x)


# At 32x32 the CIFAR variants end on a 1x1 map, so their 1x1 adaptive pool is the identity.
_cifar = functools.partial(AlexNet, pool_size=1, hidden=())

registry.register('alexnet', AlexNet, input_shape=(224, 224, 3), min_input_size=63,
                  num_classes=1000, family='alexnet',
                  description='AlexNet, torchvision (Krizhevsky 2012 / Krizhevsky 2014)')
registry.register('zfnet', functools.partial(AlexNet, convs=ZFNET), input_shape=(224, 224, 3),
                  min_input_size=53, num_classes=1000, family='alexnet',
                  description='ZFNet (Zeiler & Fergus 2013), torchvision-style, no LRN')
registry.register('alexnet_cifar', functools.partial(_cifar, convs=ALEXNET_CIFAR),
                  input_shape=(32, 32, 3), min_input_size=29, num_classes=10, family='alexnet',
                  description='AlexNet for 32x32, bearpaw/pytorch-classification')
registry.register('zfnet_cifar', functools.partial(_cifar, convs=ZFNET_CIFAR),
                  input_shape=(32, 32, 3), min_input_size=27, num_classes=10, family='alexnet',
                  description='ZFNet for 32x32 (our adaptation, bearpaw recipe)')
