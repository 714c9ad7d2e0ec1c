"""DenseNet-BC-100 (k=12) on CIFAR-10 with Huang et al.'s recipe (CVPR 2017: 4.51% error, C10+).

  python -m experiments.train --config=configs/cifar10_densenet.py --workdir=runs/densenet
  python -m experiments.train --config=configs/cifar10_densenet.py:reduced --workdir=runs/densenet_reduced

300 epochs at batch 64, SGD with Nesterov momentum 0.9, learning rate 0.1 divided by 10 at 50% and
75% of training, weight decay 1e-4 on every parameter, padding-4 crops and flips (C10+, no
dropout). Reference implementations: the authors' liuzhuang13/DenseNet (models/densenet.lua:
convolutions N(0, 2 / (k * k * out)), zero Linear bias; train.lua: optim.sgd with nesterov and
weightDecay over all the flattened parameters) and its PyTorch port andreasveit/densenet-pytorch
(densenet.py, the same initialisation; train.py: `torch.optim.SGD(model.parameters(), 0.1,
momentum=0.9, nesterov=True, weight_decay=1e-4)`), hence weight_decay_on='all';
tests/test_recipes_torch.py holds the step to it.

Arguments (comma-separated): data= the dataset (default TFDS `cifar10`; `reduced` defaults to
../shared/data/cifar10.npz, a JPEG-decoded copy whose numbers are not comparable with the paper's);
reduced: the same recipe for 800 iterations (about one epoch), checkpointed every 100 (hours on a
CPU: resumable).
"""

from cnn_zoo.train import config as config_lib
from configs import cifar10_common


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, data='', reduced=False)
  c = cifar10_common.sgd_recipe('densenet_bc_100', a.data, a.reduced, batch_size=64,
                                weight_decay=1e-4, schedule='piecewise', nesterov=True)
  c.num_epochs = 300.0
  c.lr_boundaries = (0.5, 0.75)
  c.lr_decay_factor = 0.1
  c.log_every_steps = 100
  c.eval_every_epochs = 5.0
  if a.reduced:
    c.num_train_steps = 800
    c.eval_every_epochs = 0.0  # once, at the end
    c.log_every_steps = 40
    c.checkpoint_every_steps = 100
  return c
