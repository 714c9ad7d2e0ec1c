"""Every family at 32x32 on Fashion-MNIST under one shared protocol.

  python -m experiments.sweep --config=configs/sweeps/fashion_mnist_zoo.py \
      --workdir=runs/fashion_mnist_zoo
  python -m experiments.sweep --config=configs/sweeps/fashion_mnist_zoo.py:reduced \
      --workdir=runs/fashion_mnist_zoo_reduced

The protocol of cifar10_zoo.py, on 60 epochs: one member of each family (ZFNet beside AlexNet), all
trained alike at batch 128, SGD with momentum 0.9, learning rate 0.05 after a one-epoch linear
warm-up and cosine decay, weight decay 5e-4, padding-4 crops and flips. The 28x28 grey images are
zero-padded to 32x32 and repeated over three channels for the RGB models.
The full recipe reads TFDS `fashion_mnist`; `reduced` runs 30 iterations of
../shared/data/fashion_mnist.npz (bit-exact). Scale the budget with
--config.overrides.num_train_steps=N.
"""

import ml_collections

MODELS = ('lenet5', 'alexnet_cifar', 'zfnet_cifar', 'vgg16_bn_cifar', 'googlenet_cifar',
          'resnet56', 'densenet_bc_100')
SEEDS = (0,)


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.base = 'configs/default.py'
  c.overrides = ml_collections.ConfigDict(dict(
      dataset='fashion_mnist', batch_size=128, eval_batch_size=1000,
      num_epochs=60.0,  # the budget
      optimizer='sgd', learning_rate=0.05, momentum=0.9, nesterov=False, weight_decay=5e-4,
      schedule='cosine', warmup_epochs=1.0,
      augment='crop_flip', crop_padding=4, log_every_steps=100, eval_every_epochs=2.0))
  if arg == 'reduced':
    c.overrides.dataset = 'npz:../shared/data/fashion_mnist.npz'
    c.overrides.num_train_steps = 30
    c.overrides.warmup_epochs = 0.0
    c.overrides.eval_every_epochs = 0.0  # once, at the end
    c.overrides.log_every_steps = 10
  elif arg:
    raise ValueError(f'unknown sweep variant {arg!r}; valid choices: reduced')
  c.axes = [{'product': {'model': list(MODELS), 'seed': list(SEEDS)}}]
  return c
