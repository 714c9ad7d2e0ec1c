"""What the CIFAR-10 recipes share: SGD with momentum 0.9, padding-4 crops and flips, evaluation on
the whole test split in batches of 1,000, and where the data come from."""

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
  c.schedule = schedule
  c.augment = 'crop_flip'
  c.crop_padding = 4
  return c
