"""The model registry: names -> constructors, canonical input shapes and smallest accepted inputs."""

import dataclasses
import difflib
import re
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from cnn_zoo import errors
from cnn_zoo.models import initializers, layers as layers_lib


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What the rest of cnn_zoo knows about a registered model."""
  name: str
  constructor: Callable[..., nn.Module]  # called with num_classes=, layers=, **overrides
  input_shape: tuple[int, int, int]  # canonical (H, W, C)
  min_input_size: int  # smallest H (= W) the architecture accepts
  num_classes: int  # default number of classes
  family: str
  description: str = ''


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, constructor: Callable[..., nn.Module], *,
             input_shape: tuple[int, int, int], min_input_size: int,
             num_classes: int, family: str, description: str = '') -> None:
  if name in _REGISTRY:
    raise ValueError(f'model {name!r} is registered twice')
  _REGISTRY[name] = ModelSpec(name, constructor, tuple(input_shape),
                              min_input_size, num_classes, family, description)


def names() -> list[str]:
  """All registered model names, sorted."""
  return sorted(_REGISTRY)


def spec(name: str) -> ModelSpec:
  if name not in _REGISTRY:
    raise errors.ConfigError(f'unknown model {name!r}; {suggest(name)}')
  return _REGISTRY[name]


LIST_COMMAND = 'python -m experiments.summary --list'


def suggest(name) -> str:
  """The registered names closest to a wrong one, and the command that lists them all."""
  name = str(name).lower()
  family = re.match(r'[a-z]*', name).group()  # 'resnet' of 'resnet99': its family ranks first

  def score(candidate):
    same_family = bool(family) and candidate.startswith(family)
    return difflib.SequenceMatcher(None, name, candidate).ratio() + 0.3 * same_family

  close = [n for n in sorted(names(), key=score, reverse=True) if score(n) >= 0.7][:4]
  closest = f'did you mean {", ".join(close)}? ' if close else ''
  return f'{closest}`{LIST_COMMAND}` lists all {len(names())} models'


def get(name: str, num_classes: int | None = None, dtype: Any = jnp.float32, *,
        conv_impl: str = 'auto', weight_init: str = 'paper', norm_impl: str = 'vjp',
        **overrides) -> nn.Module:
  """Builds the linen Module of `name`, called as `module.apply(variables, x, train=...)`, with
  the one `layers.Layers` that its convolutions, BatchNorms and Linear layers are made of;
  `overrides` are the constructor's other arguments (config.model_kwargs, remat)."""
  s = spec(name)
  module = s.constructor(num_classes=num_classes or s.num_classes, **overrides)
  # The CIFAR stems start as their own references do: the stem, an override too, picks the rule.
  rule = initializers.paper_rule(s.family, getattr(module, 'stem', None))
  return module.clone(layers=layers_lib.Layers(rule, weight_init, conv_impl, dtype, norm_impl))


def input_shape(name: str) -> tuple[int, int, int]:
  """The canonical (H, W, C) input of `name`."""
  return spec(name).input_shape


def check_input_shape(name: str, shape: tuple[int, int, int]) -> None:
  """Refuses, with a one-line message, an input too small for the architecture."""
  s = spec(name)
  h, w, c = shape
  if min(h, w) < s.min_input_size:
    raise errors.ConfigError(
        f'image size {h}x{w} is too small for model {name!r}: it needs at least '
        f'{s.min_input_size}x{s.min_input_size} (canonical input {s.input_shape[0]}x'
        f'{s.input_shape[1]}x{s.input_shape[2]})')
  if c != s.input_shape[2]:
    raise errors.DataError(f'model {name!r} takes {s.input_shape[2]} input channels, got {c}')
