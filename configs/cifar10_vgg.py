"""VGG with BatchNorm on CIFAR-10, bearpaw/pytorch-classification's recipe.

  python -m experiments.train --config=configs/cifar10_vgg.py:model=vgg16_bn_cifar --workdir=runs/vgg16
  python -m experiments.train --config=configs/cifar10_vgg.py:reduced --workdir=runs/vgg11_reduced

The VGG paper (Simonyan & Zisserman 2015) has no CIFAR-10 table; the usual reference recipe is
bearpaw/pytorch-classification's: 164 epochs at batch 128, SGD with momentum 0.9, learning rate 0.1
divided by 10 at epochs 81 and 122, weight decay 5e-4 on every parameter, padding-4 crops and
flips; it reports 6.66% test error for VGG-19-BN, from the same initialisation as here
(weight_init='paper': He normal fan_out convolutions with zero bias, N(0, 0.01) Linear with zero
bias). Reference implementation: bearpaw/pytorch-classification, cifar.py (`optim.SGD(
model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)`, hence weight_decay_on='all'),
TRAINING.md (the schedule) and models/cifar/vgg.py (the model and `_initialize_weights`; the same
layers as kuangliu/pytorch-cifar models/vgg.py); tests/test_recipes_torch.py holds the step to it. With that initialisation VGG-11-BN's loss spikes in its first 20
steps at 0.1 and falls below its starting value (ln 10) by step 200; with flax's LeCun-normal one it
blew up to 7-17 within 10 steps and was at chance after 20 (docs/results.md), which is why runs
before 2026-11-27 used 0.01 (reproduce them with --config.weight_init=flax
--config.learning_rate=0.01).

Arguments (comma-separated): model= one of MODELS (default vgg11_bn_cifar); data= the dataset
(default TFDS `cifar10`; `reduced` defaults to ../shared/data/cifar10.npz, a JPEG-decoded copy whose
numbers are not comparable with published ones); reduced: 400 iterations (about one epoch) at the
recipe's rate, evaluated once at the end.
"""

from cnn_zoo.train import config as config_lib
from configs import cifar10_common

MODELS = ('vgg11_bn_cifar', 'vgg13_bn_cifar', 'vgg16_bn_cifar', 'vgg19_bn_cifar')


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, model='vgg11_bn_cifar', data='', reduced=False)
  config_lib.choose('model', a.model, MODELS)
  c = cifar10_common.sgd_recipe(a.model, a.data, a.reduced, batch_size=128, weight_decay=5e-4,
                                schedule='piecewise')
  c.num_epochs = 164.0
  c.lr_boundaries = (81 / 164, 122 / 164)
  c.lr_decay_factor = 0.1
  c.log_every_steps = 100
  c.eval_every_epochs = 4.0
  if a.reduced:
    c.num_train_steps = 400
    c.eval_every_epochs = 0.0  # once, at the end
    c.log_every_steps = 20
  return c
