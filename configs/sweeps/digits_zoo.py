"""One member of every family on the embedded `digits` (1,437 train / 360 test images at 32x32).

  python -m experiments.sweep --config=configs/sweeps/digits_zoo.py --workdir=runs/digits_zoo \
      --workers=2
  python -m experiments.sweep --config=configs/sweeps/digits_zoo.py:smoke --workdir=/tmp/zoo_smoke

LeNet-5, ResNet-20, VGG-11-BN, DenseNet-BC-100 and the 32x32 AlexNet and GoogLeNet, trained alike
from configs/default.py (SGD with momentum 0.9, cosine decay) for the same budget, then compared;
VGG-11-BN's learning rate is 0.01 (at 0.05 its loss blows up in the first steps), the others' 0.05.
The budget is sized for a 2-core CPU, where GoogLeNet (1.3 GMACs per image) costs more than the
other five together: 32 steps of 16 images (0.36 epoch), one evaluation at the end. Give more with
--config.overrides.num_train_steps=N (an accelerator trains 30 epochs, 2,700 steps, in minutes).
`smoke` runs 2 steps per model: it checks that every model compiles and trains.
"""

import ml_collections

MODELS = ('lenet5', 'resnet20', 'vgg11_bn_cifar', 'densenet_bc_100', 'alexnet_cifar',
          'googlenet_cifar')
LEARNING_RATES = (0.05, 0.05, 0.01, 0.05, 0.05, 0.05)


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.base = 'configs/default.py'
  c.overrides = ml_collections.ConfigDict()
  c.overrides.batch_size = 16
  c.overrides.num_train_steps = 32  # the budget
  c.overrides.eval_every_epochs = 0.0  # once, at the end
  c.overrides.log_every_steps = 4
  c.axes = [{'zip': {'model': list(MODELS), 'learning_rate': list(LEARNING_RATES)}}]
  if arg == 'smoke':
    c.overrides.num_train_steps = 2
    c.overrides.log_every_steps = 1
  elif arg:
    raise ValueError(f'unknown sweep variant {arg!r}; valid choices: smoke')
  return c
