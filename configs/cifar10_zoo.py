"""The shared protocol under which every family is compared at 32x32 on CIFAR-10.

  python -m experiments.train --config=configs/cifar10_zoo.py:model=googlenet_cifar --workdir=runs/g
  python -m experiments.train --config=configs/cifar10_zoo.py:model=resnet56,reduced --workdir=runs/r

All models trained alike from their papers' initialisations: 100 epochs at batch 128, SGD with
momentum 0.9, learning rate 0.1 (the rate of He et al. and Huang et al., and of the reference CIFAR
recipes for every other family: bearpaw/pytorch-classification, kuangliu/pytorch-cifar) after a
one-epoch linear warm-up and cosine decay, weight decay 5e-4 on every parameter, padding-4 crops and
flips. LeNet-5 sees the images in grey (it takes one channel). The optimizer is that of the
reference scripts, kuangliu/pytorch-cifar main.py (`optim.SGD(net.parameters(), lr=0.1,
momentum=0.9, weight_decay=5e-4)`, CosineAnnealingLR) and bearpaw/pytorch-classification cifar.py
(the same SGD line), hence weight_decay_on='all'; each model starts from its reference's
initialisation (cnn_zoo.models.initializers; AlexNet-CIFAR: bearpaw's models/cifar/alexnet.py,
PyTorch's defaults); tests/test_recipes_torch.py holds the step to it for AlexNet-CIFAR.

Arguments (comma-separated): model= any registered 32x32 model (default lenet5); data= the dataset
(default TFDS `cifar10`; `reduced` defaults to ../shared/data/cifar10.npz, a JPEG-decoded copy);
epochs= the budget (default 100); reduced: 30 iterations without warm-up, evaluated once.
"""

from cnn_zoo.train import config as config_lib
from configs import cifar10_common


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, model='lenet5', data='', epochs=100.0, reduced=False)
  c = cifar10_common.sgd_recipe(a.model, a.data, a.reduced, batch_size=128, weight_decay=5e-4,
                                schedule='cosine')
  c.num_epochs = a.epochs
  c.warmup_epochs = 1.0
  c.log_every_steps = 100
  c.eval_every_epochs = 2.0
  if a.reduced:
    c.num_train_steps = 30
    c.warmup_epochs = 0.0
    c.eval_every_epochs = 0.0  # once, at the end
    c.log_every_steps = 10
  return c
