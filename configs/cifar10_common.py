"""What the CIFAR-10 recipes share: SGD with momentum 0.9, weight decay on every parameter,
padding-4 crops and flips, evaluation on the whole test split in batches of 1,000, and where the
data come from.

Every CIFAR reference these recipes cite decays every parameter, BatchNorm's scale and offset and
the biases included: `torch.optim.SGD(model.parameters(), ..., weight_decay=...)` in
akamaster/pytorch_resnet_cifar10 trainer.py, bearpaw/pytorch-classification cifar.py,
andreasveit/densenet-pytorch train.py and kuangliu/pytorch-cifar main.py (and Lua Torch's
optim.sgd over the flattened parameters in liuzhuang13/DenseNet train.lua), so the recipes set
weight_decay_on='all' (tests/test_recipes_torch.py holds each step to its reference's).
"""

from cnn_zoo.train import config as config_lib

# `reduced` runs read a JPEG-decoded copy of CIFAR-10: their numbers are not comparable with the
# papers'. Full runs read TFDS `cifar10`.
REDUCED_DATA = 'npz:../shared/data/cifar10.npz'


def sgd_recipe(model: str, data: str, reduced: bool, *, batch_size: int, weight_decay: float,
               schedule: str, nesterov: bool = False, learning_rate: float = 0.1):
  c = config_lib.defaults()
  c.model = model
  c.dataset = data or (REDUCED_DATA if reduced else 'cifar10')
  c.batch_size = batch_size
  c.eval_batch_size = 1000
  c.optimizer = 'sgd'
  c.learning_rate = learning_rate
  c.momentum = 0.9
  c.nesterov = nesterov
  c.weight_decay = weight_decay
  c.weight_decay_on = 'all'
  c.schedule = schedule
  c.augment = 'crop_flip'
  c.crop_padding = 4
  return c
