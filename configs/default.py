"""LeNet-5 on the embedded `digits` (scikit-learn's 8x8 digits resized to 32x32); no network needed.

  python -m experiments.train --config=configs/default.py --workdir=/tmp/lenet5_digits
  python -m experiments.train --config=configs/default.py:smoke --workdir=/tmp/smoke   # seconds
"""

from cnn_zoo.train import config as config_lib


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, smoke=False)
  c = config_lib.defaults()
  c.model = 'lenet5'
  c.dataset = 'digits'
  c.batch_size = 64
  c.eval_batch_size = 360
  c.num_epochs = 50.0  # LeNet-5 from PyTorch's default init: 98.33% (30 epochs: 96.67%)
  c.optimizer = 'sgd'
  c.learning_rate = 0.05
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.schedule = 'cosine'
  c.log_every_steps = 22
  c.eval_every_epochs = 5.0
  if a.smoke:
    c.num_epochs = 1.0
    c.eval_every_epochs = 0.0
    c.log_every_steps = 5
  return c
