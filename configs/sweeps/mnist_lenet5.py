"""LeNet-5 on MNIST, three seeds (LeCun et al. 1998: 0.95% test error without distortions).

  python -m experiments.sweep --config=configs/sweeps/mnist_lenet5.py \
      --workdir=runs/mnist_lenet5_sweep
  python -m experiments.sweep --config=configs/sweeps/mnist_lenet5.py:reduced \
      --workdir=runs/mnist_lenet5_reduced

The paper's protocol: 20 passes over the 60,000 training digits, no distortions, 28x28 digits padded
to 32x32. Its optimiser (stochastic diagonal Levenberg-Marquardt, batch 1) and its scaled-tanh / RBF
output are replaced by configs/mnist_lenet5.py's SGD with momentum and cosine decay on ReLU LeNet-5.
The full recipe reads TFDS `mnist`; `reduced` runs one seed on ../shared/data/mnist.npz (the same
bit-exact digits).
"""

import ml_collections

from cnn_zoo.train import config as config_lib

SEEDS = (0, 1, 2)


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, reduced=False)
  c = ml_collections.ConfigDict()
  c.base = 'configs/mnist_lenet5.py'
  c.overrides = ml_collections.ConfigDict()
  c.overrides.num_epochs = 20.0  # the budget: the paper's 20 passes
  c.overrides.augment = 'none'  # 0.95% is the undistorted result (0.8% with distortions)
  c.overrides.eval_every_epochs = 1.0
  seeds = list(SEEDS)
  if a.reduced:
    c.overrides.dataset = 'npz:../shared/data/mnist.npz'
    c.overrides.eval_every_epochs = 2.0
    seeds = [0]
  c.axes = [{'product': {'model': ['lenet5'], 'seed': seeds}}]
  return c
