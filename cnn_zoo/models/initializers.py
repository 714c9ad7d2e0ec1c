"""Each family's own weight initialisation, as its reference implementation sets it, or flax's.

`weight_init='paper'` (the default of every model) follows the code each model reproduces: for the
ImageNet models torchvision's `_initialize_weights` / `init_weights`, for the CIFAR models the
PyTorch (or Lua Torch) reference their recipe cites (configs/; docs/guarantees.md's recipe table):

- lenet, alexnet (AlexNet, ZFNet, and alexnet_cifar after bearpaw/pytorch-classification's
  models/cifar/alexnet.py, which sets nothing): PyTorch's default for Conv2d and Linear, kernel
  and bias uniform in +-1/sqrt(fan_in). Not LeCun et al.'s +-2.4/fan_in (1998, appendix C): that
  rule was made for the paper's scaled tanh; it multiplies a layer's output variance by
  1.92/fan_in (0.005 for the 400-input layer), so with the zoo's ReLU the signal all but vanishes
  by the logits.
- vgg: He normal with fan_out (kaiming_normal_, mode='fan_out', ReLU gain) for convolutions, zero
  conv bias; Linear N(0, 0.01), zero bias. torchvision's rule, and the CIFAR VGG's reference,
  bearpaw/pytorch-classification models/cifar/vgg.py (normal(0, sqrt(2 / (k * k * out)))), the same.
- resnet (ImageNet): He normal with fan_out for convolutions (torchvision); the Linear keeps
  PyTorch's default.
- resnet_cifar (resnet20 ... resnet110, the CIFAR stem): akamaster/pytorch_resnet_cifar10
  resnet.py's `_weights_init`: `kaiming_normal_` with its defaults (fan_in, ReLU gain) on every
  Conv2d *and* Linear weight; the Linear's bias keeps PyTorch's default uniform. (He et al. 2015,
  sec. 4.2, cite 2015b's rule, whose fan_in and fan_out forms both keep a ReLU network's signal;
  their Torch code, fb.resnet.torch, used fan_out and a zero Linear bias.)
- densenet (ImageNet): He normal with fan_in (kaiming_normal_'s default) for convolutions
  (torchvision); the Linear's kernel keeps PyTorch's default, its bias is zero.
- densenet_cifar (densenet_bc_100, the CIFAR stem): the authors' code (liuzhuang13/DenseNet
  models/densenet.lua) and its PyTorch port andreasveit/densenet-pytorch densenet.py: convolutions
  N(0, 2 / (k * k * out)), i.e. He normal with fan_out; the Linear's kernel keeps the default
  uniform, its bias is zero.
- googlenet: truncated normal, std 0.01, cut at -2 and 2 (absolute values, as torchvision's
  `trunc_normal_(std=0.01, a=-2, b=2)`: in effect N(0, 0.01)) for convolutions and Linear kernels;
  the Linear bias keeps PyTorch's default.

BatchNorm starts at scale 1 and bias 0 in every family (flax's, torchvision's, every reference's).
`weight_init='flax'` gives linen's defaults (LeCun normal kernels, zero biases): the zoo's
initialisation before 2026-11-27, kept so that earlier runs can be repeated.
"""

import dataclasses
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

WEIGHT_INITS = ('paper', 'flax')

Initializer = Callable[..., jax.Array]


def torch_default_bias(fan_in: int) -> Initializer:
  """PyTorch's default bias: uniform in +-1/sqrt(fan_in)."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def zeros_bias(fan_in: int) -> Initializer:
  del fan_in
  return nn.initializers.zeros


def truncated_normal(std: float, lower: float, upper: float) -> Initializer:
  """N(0, std) cut at the absolute values `lower` and `upper` (torch.nn.init.trunc_normal_)."""
  return lambda key, shape, dtype=jnp.float32: std * jax.random.truncated_normal(
      key, lower / std, upper / std, shape, dtype)


# kaiming_uniform_(a=sqrt(5)), PyTorch's default kernel: uniform in +-1/sqrt(fan_in).
TORCH_DEFAULT_KERNEL = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')
HE_NORMAL_FAN_OUT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
HE_NORMAL_FAN_IN = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


@dataclasses.dataclass(frozen=True)
class Rule:
  """How one family initialises its convolutions and Linear layers (`layers.Layers` applies it).
  Biases are built per layer from its fan-in (PyTorch's default bias depends on it)."""
  conv_kernel: Initializer
  conv_bias: Callable[[int], Initializer]
  dense_kernel: Initializer
  dense_bias: Callable[[int], Initializer]


FLAX = Rule(nn.initializers.lecun_normal(), zeros_bias, nn.initializers.lecun_normal(), zeros_bias)
_TORCH_DEFAULT = Rule(TORCH_DEFAULT_KERNEL, torch_default_bias, TORCH_DEFAULT_KERNEL,
                      torch_default_bias)
PAPER = {
    'lenet': _TORCH_DEFAULT,
    'alexnet': _TORCH_DEFAULT,
    'vgg': Rule(HE_NORMAL_FAN_OUT, zeros_bias, nn.initializers.normal(0.01), zeros_bias),
    'resnet': Rule(HE_NORMAL_FAN_OUT, zeros_bias, TORCH_DEFAULT_KERNEL, torch_default_bias),
    'resnet_cifar': Rule(HE_NORMAL_FAN_IN, zeros_bias, HE_NORMAL_FAN_IN, torch_default_bias),
    'densenet': Rule(HE_NORMAL_FAN_IN, zeros_bias, TORCH_DEFAULT_KERNEL, zeros_bias),
    'densenet_cifar': Rule(HE_NORMAL_FAN_OUT, zeros_bias, TORCH_DEFAULT_KERNEL, zeros_bias),
    'googlenet': Rule(truncated_normal(0.01, -2.0, 2.0), zeros_bias,
                      truncated_normal(0.01, -2.0, 2.0), torch_default_bias),
}


def paper_rule(family: str, stem: str | None = None) -> str:
  """The PAPER rule of a model of `family` whose stem is `stem`: the CIFAR ResNets and DenseNet-BC
  have their own references' ('resnet_cifar', 'densenet_cifar'), every other model its family's."""
  return f'{family}_cifar' if stem == 'cifar' and f'{family}_cifar' in PAPER else family


def rule(family: str, weight_init: str) -> Rule:
  """The initialisation of `family` (a key of PAPER) under `weight_init` ('paper' or 'flax')."""
  if weight_init == 'flax':
    return FLAX
  if weight_init != 'paper':
    raise ValueError(f'weight_init={weight_init!r} is not valid; valid choices: '
                     f'{", ".join(WEIGHT_INITS)}')
  return PAPER[family]
