"""Every family at 32x32 on CIFAR-10 under one shared protocol.

  python -m experiments.sweep --config=configs/sweeps/cifar10_zoo.py --workdir=runs/cifar10_zoo
  python -m experiments.sweep --config=configs/sweeps/cifar10_zoo.py:reduced \
      --workdir=runs/cifar10_zoo_reduced

One member of each family (ZFNet beside AlexNet) under configs/cifar10_zoo.py's protocol: 100
epochs at batch 128, SGD with momentum 0.9, learning rate 0.1 after a one-epoch warm-up, cosine
decay, weight decay 5e-4, crops and flips. Runs before 2026-11-27 used 0.05 and flax's
initialisation (reproduce them with --config.overrides.learning_rate=0.05
--config.overrides.weight_init=flax). The argument is passed to the recipe (`reduced`: 30
iterations of ../shared/data/cifar10.npz). Scale the budget with
--config.overrides.num_train_steps=N.
"""

import ml_collections

from cnn_zoo.train import config as config_lib

MODELS = ('lenet5', 'alexnet_cifar', 'zfnet_cifar', 'vgg16_bn_cifar', 'googlenet_cifar',
          'resnet56', 'densenet_bc_100')
SEEDS = (0,)


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, reduced=False)
  c = ml_collections.ConfigDict()
  c.base = 'configs/cifar10_zoo.py' + (':reduced' if a.reduced else '')
  c.overrides = ml_collections.ConfigDict()
  c.axes = [{'product': {'model': list(MODELS), 'seed': list(SEEDS)}}]
  return c
