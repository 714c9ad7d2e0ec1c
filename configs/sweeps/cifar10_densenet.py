"""DenseNet-BC-100 (k=12) on CIFAR-10 (Huang et al., CVPR 2017: 4.51% error with augmentation).

  python -m experiments.sweep --config=configs/sweeps/cifar10_densenet.py \
      --workdir=runs/cifar10_densenet
  python -m experiments.sweep --config=configs/sweeps/cifar10_densenet.py:reduced \
      --workdir=runs/cifar10_densenet_reduced

The recipe: 300 epochs at batch 64, SGD with Nesterov momentum 0.9, learning rate 0.1 divided by 10
at 50% and 75% of training, weight decay 1e-4, padding-4 crops and flips (C10+, no dropout).
The full recipe reads TFDS `cifar10`. `reduced` runs the same recipe for 800 iterations (about one
epoch) of ../shared/data/cifar10.npz, a JPEG-decoded copy whose numbers are not comparable with the
paper's. Scale the budget with --config.overrides.num_train_steps=N.
"""

import ml_collections

SEEDS = (0,)


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.base = 'configs/default.py'
  c.overrides = ml_collections.ConfigDict(dict(
      dataset='cifar10', batch_size=64, eval_batch_size=1000,
      num_epochs=300.0,  # the budget
      optimizer='sgd', learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
      schedule='piecewise', lr_boundaries=(0.5, 0.75), lr_decay_factor=0.1,
      augment='crop_flip', crop_padding=4, log_every_steps=100, eval_every_epochs=5.0))
  if arg == 'reduced':
    c.overrides.dataset = 'npz:../shared/data/cifar10.npz'
    c.overrides.num_train_steps = 800
    c.overrides.eval_every_epochs = 0.0  # once, at the end
    c.overrides.log_every_steps = 40
    c.overrides.checkpoint_every_steps = 100  # hours on a CPU: resumable
  elif arg:
    raise ValueError(f'unknown sweep variant {arg!r}; valid choices: reduced')
  c.axes = [{'product': {'model': ['densenet_bc_100'], 'seed': list(SEEDS)}}]
  return c
