"""VGG-11/13/16/19 with BatchNorm on CIFAR-10: configs/cifar10_vgg.py's recipe over the depths.

  python -m experiments.sweep --config=configs/sweeps/cifar10_vgg.py --workdir=runs/cifar10_vgg
  python -m experiments.sweep --config=configs/sweeps/cifar10_vgg.py:reduced \
      --workdir=runs/cifar10_vgg_reduced

The argument is passed to the recipe (`reduced`: 400 iterations of ../shared/data/cifar10.npz).
Scale the budget with --config.overrides.num_train_steps=N.
"""

import ml_collections

from cnn_zoo.train import config as config_lib

MODELS = ('vgg11_bn_cifar', 'vgg13_bn_cifar', 'vgg16_bn_cifar', 'vgg19_bn_cifar')
SEEDS = (0,)


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, reduced=False)
  c = ml_collections.ConfigDict()
  c.base = 'configs/cifar10_vgg.py' + (':reduced' if a.reduced else '')
  c.overrides = ml_collections.ConfigDict()
  c.axes = [{'product': {'model': list(MODELS), 'seed': list(SEEDS)}}]
  return c
