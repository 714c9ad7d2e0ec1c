"""DenseNet-BC-100 (k=12) on CIFAR-10: configs/cifar10_densenet.py's recipe over seeds.

  python -m experiments.sweep --config=configs/sweeps/cifar10_densenet.py \
      --workdir=runs/cifar10_densenet
  python -m experiments.sweep --config=configs/sweeps/cifar10_densenet.py:reduced \
      --workdir=runs/cifar10_densenet_reduced

The argument is passed to the recipe (`reduced`: 800 iterations of ../shared/data/cifar10.npz).
Scale the budget with --config.overrides.num_train_steps=N.
"""

import ml_collections

from cnn_zoo.train import config as config_lib

SEEDS = (0,)


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, reduced=False)
  c = ml_collections.ConfigDict()
  c.base = 'configs/cifar10_densenet.py' + (':reduced' if a.reduced else '')
  c.overrides = ml_collections.ConfigDict()
  c.axes = [{'product': {'model': ['densenet_bc_100'], 'seed': list(SEEDS)}}]
  return c
