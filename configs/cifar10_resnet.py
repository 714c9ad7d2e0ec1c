"""CIFAR ResNets with He et al.'s recipe (CVPR 2016, section 4.2): the config a full run needs.

  python -m experiments.train --config=configs/cifar10_resnet.py --workdir=runs/resnet20
  python -m experiments.train --config=configs/cifar10_resnet.py:model=resnet56,data=npz:../shared/data/cifar10.npz \
      --workdir=runs/resnet56_npz
  python -m experiments.train --config=configs/cifar10_resnet.py:model=resnet32,reduced --workdir=runs/r32
  python -m experiments.train --config=configs/cifar10_resnet.py:smoke --workdir=/tmp/smoke

SGD with momentum 0.9, learning rate 0.1 divided by 10 at 32k and 48k of 64k iterations, weight
decay 1e-4 on every parameter, batch 128, 4-pixel padding with random 32x32 crops and flips; He
initialisation (weight_init='paper'). ResNet-110 warms up for one epoch (the paper: 0.01 for about
400 iterations). Table 6 test errors: 8.75 / 7.51 / 7.17 / 6.97 / 6.43% for ResNet-20/32/44/56/110.

Reference implementation: akamaster/pytorch_resnet_cifar10 (8.27% for ResNet-20): resnet.py for
the model (option A shortcuts; `_weights_init`: kaiming_normal_, fan_in, on every Conv2d and
Linear weight) and trainer.py for the optimizer (`torch.optim.SGD(model.parameters(), 0.1,
momentum=0.9, weight_decay=1e-4)`: BatchNorm's scale and offset and the Linear's bias are decayed
too, hence weight_decay_on='all'). Where it departs from the paper (200 epochs, decays at 100 and
150, no 45k/5k split) the paper's budget is kept; tests/test_recipes_torch.py holds the step to
the reference's term for term.

Arguments (comma-separated): model= one of MODELS (default resnet20; a bare model name also
works); data= the dataset (default
TFDS `cifar10`; `reduced` defaults to ../shared/data/cifar10.npz, a JPEG-decoded copy whose numbers
are not comparable with the paper's); reduced: the recipe's shape (same optimiser, decays at 50%
and 75% of the budget) for 400 iterations, about one epoch; smoke: ResNet-20's recipe on the
embedded digits for seconds.
"""

from cnn_zoo.train import config as config_lib
from configs import cifar10_common

MODELS = ('resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110')


def get_config(arg: str | None = None):
  # `:resnet56`, as earlier commands spell it, is short for model=resnet56.
  arg = ','.join(f'model={a}' if a in MODELS else a for a in (arg or '').split(',') if a)
  a = config_lib.parse_arg(arg, model='resnet20', data='', reduced=False, smoke=False)
  config_lib.choose('model', a.model, MODELS)
  c = cifar10_common.sgd_recipe(a.model, a.data, a.reduced, batch_size=128, weight_decay=1e-4,
                                schedule='piecewise')
  c.num_train_steps = 64_000
  c.lr_boundaries = (0.5, 0.75)
  c.lr_decay_factor = 0.1
  c.warmup_epochs = 1.0 if a.model == 'resnet110' else 0.0
  c.log_every_steps = 200
  c.eval_every_epochs = 10.0
  c.checkpoint_every_steps = 5_000
  if a.reduced:
    c.num_train_steps = 400
    c.warmup_epochs = 0.1 if a.model == 'resnet110' else 0.0  # 400 of 64k would be nothing
    c.eval_every_epochs = 0.0  # once, at the end
    c.log_every_steps = 20
    c.checkpoint_every_steps = 0
  if a.smoke:  # seconds: the recipe on the embedded digits
    c.dataset, c.num_train_steps, c.eval_batch_size = 'digits', 4, 360
    c.log_every_steps, c.checkpoint_every_steps = 2, 0
  return c
