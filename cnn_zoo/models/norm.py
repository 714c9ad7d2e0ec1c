"""What BatchNorm is in the zoo: the one place that says it.

PyTorch's BatchNorm2d defaults, which the papers' reference code and torchvision train with:
running averages updated as 0.9 * old + 0.1 * batch (PyTorch's momentum 0.1 is flax's 0.9) and
epsilon 1e-5; torchvision's GoogLeNet alone uses epsilon 1e-3. Train mode normalises with the
batch's statistics and updates the running ones (the 'batch_stats' collection); eval mode uses the
running ones.
"""

import flax.linen as nn

MOMENTUM = 0.9
EPSILON = 1e-5


def batch_norm(train: bool, dtype, epsilon: float = EPSILON, **kwargs) -> nn.BatchNorm:
  """A BatchNorm layer for train or eval mode; kwargs (name, scale_init) go to nn.BatchNorm."""
  return nn.BatchNorm(use_running_average=not train, momentum=MOMENTUM, epsilon=epsilon,
                      dtype=dtype, **kwargs)
