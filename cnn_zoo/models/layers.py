"""What a model's layers are made of: its convolution, BatchNorm, initialisation rule and dtype.

Every family takes one `Layers` (its `layers` field) and builds its convolutions, BatchNorms and
Linear layers from it, as flax's examples/imagenet ResNet takes `conv` and `norm` as partials and
timm's models take `norm_layer=`. The registry builds it once from a model's name and the run's
config (`models.get(name, dtype=, conv_impl=, weight_init=, norm_impl=)`); nothing is chosen by a
module-global switch, and a test that compares two BatchNorms or convolutions builds two models.

The layers are flax's own classes (nn.Conv, nn.Dense, and norm.BatchNorm, a subclass of
nn.BatchNorm), so the variables, their names and their shapes are the same under every choice:
checkpoints and converted torchvision weights load whatever the model computes with.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from cnn_zoo.models import conv as conv_lib, initializers, norm

ModuleDef = Callable[..., nn.Module]  # a layer class, or a partial of one


def _check(field: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f'{field}={value!r} is not valid; valid choices: {", ".join(choices)}')


@dataclasses.dataclass(frozen=True)
class Layers:
  """One model's layer choices. `init_rule` is a key of initializers.PAPER (the family's reference
  initialisation), used under weight_init='paper'; 'flax' gives linen's defaults."""
  init_rule: str
  weight_init: str = 'paper'  # see cnn_zoo.models.initializers
  conv_impl: str = 'auto'  # how convolutions compute: see cnn_zoo.models.conv
  dtype: Any = jnp.float32  # of the activations; parameters and statistics stay float32
  norm_impl: str = 'vjp'  # see cnn_zoo.models.norm

  def __post_init__(self):
    _check('init_rule', self.init_rule, tuple(initializers.PAPER))
    _check('weight_init', self.weight_init, initializers.WEIGHT_INITS)
    _check('conv_impl', self.conv_impl, conv_lib.CONV_IMPLS)
    _check('norm_impl', self.norm_impl, norm.NORM_IMPLS)
    object.__setattr__(self, 'dtype', jnp.dtype(self.dtype))

  @functools.cached_property
  def init(self) -> initializers.Rule:
    """How the convolutions and Linear layers start."""
    return initializers.rule(self.init_rule, self.weight_init)

  @functools.cached_property
  def _conv_class(self) -> ModuleDef:
    # Resolved once, when the model is first traced (conv_impl='ffi_wgrad' builds its kernel then).
    return conv_lib.conv_module(self.conv_impl)

  @property
  def conv(self) -> ModuleDef:
    """A bias-free `nn.Conv` computing with conv_impl in dtype, its kernel from the rule; called as
    nn.Conv is (`layers.conv(64, (3, 3), strides=2)`)."""
    return functools.partial(self._conv_class, use_bias=False, dtype=self.dtype,
                             kernel_init=self.init.conv_kernel)

  def conv_with_bias(self, features: int, kernel: int, in_features: int, **kwargs) -> nn.Module:
    """A kernel x kernel `conv` with a bias, which the rule starts from the layer's fan-in
    (in_features * kernel * kernel, as PyTorch's default bias)."""
    return self.conv(features, (kernel, kernel), use_bias=True,
                     bias_init=self.init.conv_bias(in_features * kernel * kernel), **kwargs)

  def dense(self, features: int, in_features: int, **kwargs) -> nn.Module:
    """An `nn.Dense` over `in_features` inputs in dtype, its kernel and bias from the rule."""
    return nn.Dense(features, dtype=self.dtype, kernel_init=self.init.dense_kernel,
                    bias_init=self.init.dense_bias(in_features), **kwargs)

  def norm(self, train: bool) -> ModuleDef:
    """BatchNorm for train or eval mode in dtype (norm.batch_norm); called with the layer's own
    settings, `layers.norm(train)(name='downsample_bn')` or `(epsilon=1e-3)`."""
    return functools.partial(norm.batch_norm, train, self.dtype, impl=self.norm_impl)
