"""LeNet-5 on MNIST (LeCun et al. 1998 report 0.95% test error), from a local npz copy.

  python -m experiments.train --config=configs/mnist_lenet5.py:data=npz:../shared/data/mnist.npz \
      --workdir=runs/mnist_lenet5
  python -m experiments.train --config=configs/mnist_lenet5.py:smoke --workdir=/tmp/smoke

Without `data=` it reads TFDS `mnist` (prepared in data_dir). The 28x28 digits are
zero-padded to 32x32, as in the paper.

No reference implementation is followed (LeCun et al. trained with their own code: stochastic
diagonal Levenberg-Marquardt, no weight decay): the recipe is the zoo's own, in PyTorch's
conventions, PyTorch's default initialisation (cnn_zoo.models.initializers) and SGD with momentum
0.9 and weight decay 5e-4 on every parameter, as `torch.optim.SGD(model.parameters(),
weight_decay=5e-4)` decays them (tests/test_recipes_torch.py holds the step to that).
"""

from cnn_zoo.train import config as config_lib


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, data='mnist', smoke=False)
  c = config_lib.defaults()
  c.model = 'lenet5'
  c.dataset = a.data
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.num_epochs = 15.0
  c.optimizer = 'sgd'
  c.learning_rate = 0.05
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.weight_decay_on = 'all'  # every parameter, as torch.optim.SGD(model.parameters()) decays
  c.schedule = 'cosine'
  c.augment = 'crop'  # +-2 pixel shifts
  c.crop_padding = 2
  c.log_every_steps = 100
  if a.smoke:
    c.dataset = 'digits'
    c.num_epochs = 1.0
    c.batch_size = 64
    c.eval_batch_size = 360
    c.log_every_steps = 5
  return c
