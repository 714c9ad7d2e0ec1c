"""ResNet-20/32/44/56/110 on CIFAR-10: configs/cifar10_resnet.py's recipe over the five depths.

  python -m experiments.sweep --config=configs/sweeps/cifar10_resnet.py \
      --workdir=runs/cifar10_resnet
  python -m experiments.sweep --config=configs/sweeps/cifar10_resnet.py:reduced \
      --workdir=runs/cifar10_resnet_reduced

The argument is passed to the recipe (`reduced`: 400 iterations of ../shared/data/cifar10.npz).
Only ResNet-110 warms up (one epoch; 0.1 in `reduced`), so warm-up is zipped with the model. Scale
the budget with --config.overrides.num_train_steps=N.
"""

import ml_collections

from cnn_zoo.train import config as config_lib

MODELS = ('resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110')
SEEDS = (0,)


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, reduced=False)
  c = ml_collections.ConfigDict()
  c.base = 'configs/cifar10_resnet.py' + (':reduced' if a.reduced else '')
  c.overrides = ml_collections.ConfigDict()
  warmup_110 = 0.1 if a.reduced else 1.0
  c.axes = [{'zip': {'model': list(MODELS), 'warmup_epochs': [0.0, 0.0, 0.0, 0.0, warmup_110]}},
            {'product': {'seed': list(SEEDS)}}]
  return c
