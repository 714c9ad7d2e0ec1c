"""ResNet-20/32/44/56/110 on CIFAR-10 with He et al.'s recipe (CVPR 2016, section 4.2, Table 6).

  python -m experiments.sweep --config=configs/sweeps/cifar10_resnet.py \
      --workdir=runs/cifar10_resnet
  python -m experiments.sweep --config=configs/sweeps/cifar10_resnet.py:reduced \
      --workdir=runs/cifar10_resnet_reduced

The recipe: SGD with momentum 0.9, learning rate 0.1 divided by 10 at 32k and 48k of 64k
iterations, weight decay 1e-4, batch 128, 4-pixel padding with random 32x32 crops and horizontal
flips. ResNet-110 starts at 0.01 for about 400 iterations; here a one-epoch (391-iteration) linear
warm-up stands in (a zip axis gives it to ResNet-110 alone; 0.1 epoch in `reduced`).
Table 6 test errors: 8.75 / 7.51 / 7.17 / 6.97 / 6.43 (110: best of 5; mean 6.61 +- 0.16).
The full recipe reads TFDS `cifar10`. `reduced` keeps the recipe's shape (same optimiser, decay at
50% and 75% of the budget) for 400 iterations (about one epoch) of ../shared/data/cifar10.npz, a
JPEG-decoded copy: its numbers are not comparable with the paper's. Scale the budget with
--config.overrides.num_train_steps=N.
"""

import ml_collections

MODELS = ('resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110')
SEEDS = (0,)


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.base = 'configs/default.py'
  c.overrides = ml_collections.ConfigDict(dict(
      dataset='cifar10', batch_size=128, eval_batch_size=1000,
      num_train_steps=64_000,  # the budget
      optimizer='sgd', learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4,
      schedule='piecewise', lr_boundaries=(0.5, 0.75), lr_decay_factor=0.1,
      augment='crop_flip', crop_padding=4, log_every_steps=100, eval_every_epochs=4.0))
  warmup_110 = 1.0  # epochs
  if arg == 'reduced':
    c.overrides.dataset = 'npz:../shared/data/cifar10.npz'
    c.overrides.num_train_steps = 400
    warmup_110 = 0.1  # the paper's 400 of 64k iterations would be nothing; keep it short
    c.overrides.eval_every_epochs = 0.0  # once, at the end
    c.overrides.log_every_steps = 20
  elif arg:
    raise ValueError(f'unknown sweep variant {arg!r}; valid choices: reduced')
  c.axes = [{'zip': {'model': list(MODELS), 'warmup_epochs': [0.0, 0.0, 0.0, 0.0, warmup_110]}},
            {'product': {'seed': list(SEEDS)}}]
  return c
