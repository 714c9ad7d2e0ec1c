"""VGG-11/13/16/19 with BatchNorm on CIFAR-10, bearpaw/pytorch-classification's recipe.

  python -m experiments.sweep --config=configs/sweeps/cifar10_vgg.py --workdir=runs/cifar10_vgg
  python -m experiments.sweep --config=configs/sweeps/cifar10_vgg.py:reduced \
      --workdir=runs/cifar10_vgg_reduced

The VGG paper (Simonyan & Zisserman 2015) has no CIFAR-10 table; the usual reference recipe is
bearpaw/pytorch-classification's: 164 epochs at batch 128, SGD with momentum 0.9, learning rate 0.1
divided by 10 at epochs 81 and 122, weight decay 5e-4, padding-4 crops and flips; it reports 6.66%
test error for VGG-19-BN, from the same initialisation as here (weight_init='paper': He normal
convolutions, N(0, 0.01) Linear). The full recipe reads TFDS `cifar10`. `reduced` runs 400
iterations (about one epoch) of ../shared/data/cifar10.npz, a JPEG-decoded copy (numbers not
comparable with published ones), at the recipe's rate. With that initialisation VGG-11-BN's
loss spikes in its first 20 steps at 0.1 and falls below its starting value (ln 10) by step 200;
with flax's LeCun-normal one it blew up to 7-17 within 10 steps and was at chance after 20
(WORKSPACE.md), which is why runs before 2026-11-27 used 0.01 (reproduce them with
--config.overrides.weight_init=flax --config.overrides.learning_rate=0.01).
Scale the budget with --config.overrides.num_train_steps=N.
"""

import ml_collections

MODELS = ('vgg11_bn_cifar', 'vgg13_bn_cifar', 'vgg16_bn_cifar', 'vgg19_bn_cifar')
SEEDS = (0,)


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.base = 'configs/default.py'
  c.overrides = ml_collections.ConfigDict(dict(
      dataset='cifar10', batch_size=128, eval_batch_size=1000,
      num_epochs=164.0,  # the budget
      optimizer='sgd', learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4,
      schedule='piecewise', lr_boundaries=(81 / 164, 122 / 164), lr_decay_factor=0.1,
      augment='crop_flip', crop_padding=4, log_every_steps=100, eval_every_epochs=4.0))
  if arg == 'reduced':
    c.overrides.dataset = 'npz:../shared/data/cifar10.npz'
    c.overrides.num_train_steps = 400
    c.overrides.eval_every_epochs = 0.0  # once, at the end
    c.overrides.log_every_steps = 20
  elif arg:
    raise ValueError(f'unknown sweep variant {arg!r}; valid choices: reduced')
  c.axes = [{'product': {'model': list(MODELS), 'seed': list(SEEDS)}}]
  return c
