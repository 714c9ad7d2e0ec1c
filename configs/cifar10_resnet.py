"""One CIFAR ResNet with He et al.'s recipe (CVPR 2016, section 4.2): the config a full run needs.

  python -m experiments.train --config=configs/cifar10_resnet.py:resnet20 --workdir=runs/resnet20
  python -m experiments.train --config=configs/cifar10_resnet.py:resnet56 \
      --config.dataset=npz:../shared/data/cifar10.npz --workdir=runs/resnet56_npz

SGD with momentum 0.9, learning rate 0.1 divided by 10 at 32k and 48k of 64k iterations, weight
decay 1e-4, batch 128, 4-pixel padding with random 32x32 crops and flips; He initialisation
(weight_init='paper'). ResNet-110 warms up for one epoch (the paper: 0.01 for about 400 iterations).
Table 6 test errors: 8.75 / 7.51 / 7.17 / 6.97 / 6.43% for ResNet-20/32/44/56/110.
The argument is the model (default resnet20); `smoke` trains ResNet-20 on digits for seconds.
"""

from cnn_zoo.train import config as config_lib

MODELS = ('resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110')


def get_config(arg: str | None = None):
  model = 'resnet20' if arg in (None, '', 'smoke') else arg
  if model not in MODELS:
    raise ValueError(f'unknown config variant {arg!r}; valid choices: {", ".join(MODELS)}, smoke')
  c = config_lib.defaults()
  c.model = model
  c.dataset = 'cifar10'
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.num_train_steps = 64_000
  c.optimizer = 'sgd'
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.schedule = 'piecewise'
  c.lr_boundaries = (0.5, 0.75)
  c.lr_decay_factor = 0.1
  c.warmup_epochs = 1.0 if model == 'resnet110' else 0.0
  c.augment = 'crop_flip'
  c.crop_padding = 4
  c.log_every_steps = 200
  c.eval_every_epochs = 10.0
  c.checkpoint_every_steps = 5_000
  if arg == 'smoke':  # seconds: the recipe on the embedded digits
    c.dataset, c.num_train_steps, c.eval_batch_size = 'digits', 4, 360
    c.log_every_steps, c.checkpoint_every_steps = 2, 0
  return c
