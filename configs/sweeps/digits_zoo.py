"""One member of every family on the embedded `digits` (1,437 train / 360 test images at 32x32).

  python -m experiments.sweep --config=configs/sweeps/digits_zoo.py --workdir=runs/digits_zoo \
      --workers=2
  python -m experiments.sweep --config=configs/sweeps/digits_zoo.py:smoke --workdir=/tmp/zoo_smoke

LeNet-5, AlexNet, ResNet-20, VGG-11-BN, DenseNet-BC-100 and GoogLeNet (the 32x32 forms), each from
its paper's initialisation with one recipe: SGD with momentum 0.9 and Nesterov, learning rate 0.05
after a quarter-epoch warm-up, cosine decay, weight decay 5e-4, batch 32, an evaluation every half
epoch (the report's "to 90%" column). The budget differs by model so that every model passes 95%
and the whole job fits 15 minutes on a 2-core CPU (11.5 minutes measured), where one epoch of
GoogLeNet or DenseNet (1.3 and 0.29 GMACs per image) costs minutes: 10 epochs for LeNet-5 and
AlexNet, 4 for ResNet-20, 5 for VGG-11-BN, 2.5 for DenseNet-BC-100 and 2 for GoogLeNet (the two
heavy ones run first, so that the two workers take them side by side). `smoke` runs 2 steps per model:
it checks that every model compiles and trains.
"""

import ml_collections

from cnn_zoo.train import config as config_lib

# The two heavy models first: with --workers=2 they run side by side, the rest after them.
MODELS = ('densenet_bc_100', 'googlenet_cifar', 'vgg11_bn_cifar', 'resnet20', 'alexnet_cifar',
          'lenet5')
EPOCHS = (2.5, 2.0, 5.0, 4.0, 10.0, 10.0)


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, smoke=False)
  c = ml_collections.ConfigDict()
  c.base = 'configs/default.py'
  c.overrides = ml_collections.ConfigDict()
  c.overrides.batch_size = 32
  c.overrides.eval_batch_size = 360
  c.overrides.learning_rate = 0.05
  c.overrides.nesterov = True
  c.overrides.warmup_epochs = 0.25
  c.overrides.weight_decay = 5e-4
  c.overrides.eval_every_epochs = 0.5
  c.overrides.log_every_steps = 9
  c.axes = [{'zip': {'model': list(MODELS), 'num_epochs': list(EPOCHS)}}]
  if a.smoke:
    c.overrides.num_train_steps = 2
    c.overrides.log_every_steps = 1
  return c
