"""Every family at 32x32 on CIFAR-10 under one shared protocol.

  python -m experiments.sweep --config=configs/sweeps/cifar10_zoo.py --workdir=runs/cifar10_zoo
  python -m experiments.sweep --config=configs/sweeps/cifar10_zoo.py:reduced \
      --workdir=runs/cifar10_zoo_reduced

One member of each family (ZFNet beside AlexNet), all trained alike from their papers'
initialisations: 100 epochs at batch 128, SGD with momentum 0.9, learning rate 0.1 (the rate of
He et al. and Huang et al., and of the reference CIFAR recipes for every other family:
bearpaw/pytorch-classification, kuangliu/pytorch-cifar) after a one-epoch linear warm-up and
cosine decay, weight decay 5e-4, padding-4 crops and flips. LeNet-5 sees the images in grey (it
takes one channel). Runs before 2026-11-27 used 0.05 and flax's initialisation (reproduce them
with --config.overrides.learning_rate=0.05 --config.overrides.weight_init=flax).
The full recipe reads TFDS `cifar10`; `reduced` runs 30 iterations of
../shared/data/cifar10.npz, a JPEG-decoded copy (numbers not comparable with published ones).
Scale the budget with --config.overrides.num_train_steps=N.
"""

import ml_collections

MODELS = ('lenet5', 'alexnet_cifar', 'zfnet_cifar', 'vgg16_bn_cifar', 'googlenet_cifar',
          'resnet56', 'densenet_bc_100')
SEEDS = (0,)


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.base = 'configs/default.py'
  c.overrides = ml_collections.ConfigDict(dict(
      dataset='cifar10', batch_size=128, eval_batch_size=1000,
      num_epochs=100.0,  # the budget
      optimizer='sgd', learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4,
      schedule='cosine', warmup_epochs=1.0,
      augment='crop_flip', crop_padding=4, log_every_steps=100, eval_every_epochs=2.0))
  if arg == 'reduced':
    c.overrides.dataset = 'npz:../shared/data/cifar10.npz'
    c.overrides.num_train_steps = 30
    c.overrides.warmup_epochs = 0.0
    c.overrides.eval_every_epochs = 0.0  # once, at the end
    c.overrides.log_every_steps = 10
  elif arg:
    raise ValueError(f'unknown sweep variant {arg!r}; valid choices: reduced')
  c.axes = [{'product': {'model': list(MODELS), 'seed': list(SEEDS)}}]
  return c
