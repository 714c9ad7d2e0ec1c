"""Every family at 32x32 on Fashion-MNIST under one shared protocol.

  python -m experiments.sweep --config=configs/sweeps/fashion_mnist_zoo.py \
      --workdir=runs/fashion_mnist_zoo
  python -m experiments.sweep --config=configs/sweeps/fashion_mnist_zoo.py:reduced \
      --workdir=runs/fashion_mnist_zoo_reduced

The protocol of cifar10_zoo.py, on 60 epochs: one member of each family (ZFNet beside AlexNet), all
trained alike at batch 128, SGD with momentum 0.9, learning rate 0.1 after a one-epoch linear
warm-up and cosine decay, weight decay 5e-4, padding-4 crops and flips. The 28x28 grey images are
zero-padded to 32x32 and repeated over three channels for the RGB models.
The full recipe reads TFDS `fashion_mnist`; `reduced` runs 30 iterations of
../shared/data/fashion_mnist.npz (bit-exact). Scale the budget with
--config.overrides.num_train_steps=N.
"""

from cnn_zoo.train import config as config_lib
from configs.sweeps import cifar10_zoo


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, reduced=False)
  c = cifar10_zoo.get_config(arg)  # the same models, seeds and protocol
  c.overrides.num_epochs = 60.0  # the budget
  c.overrides.dataset = 'npz:../shared/data/fashion_mnist.npz' if a.reduced else 'fashion_mnist'
  return c
