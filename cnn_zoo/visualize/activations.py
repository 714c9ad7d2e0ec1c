"""Every layer's activations for one image, read from the model itself.

The calls of each `nn.Conv` and `nn.Dense` are intercepted (`flax.linen.intercept_methods`), so any
registered model works unchanged. Activation and pooling functions are plain functions, not modules,
so what they produce is read from the calls around them:
- a convolution's maps: its output after the model's `activation` field when it has one (the LeNet
  family); for other models the raw output, before any normalisation and activation;
- pooled maps: the input of the next layer when it is spatially smaller than the convolution's
  output with the same channels (a Dense layer's flat input is reshaped back to square maps);
- a fully connected layer's activations: the input of the next Dense layer (after its activation;
  dropout is off at inference), or its raw output when no Dense layer follows;
- the output: the softmax of the model's logits.
For LeNet-5 this gives input, conv1 6@28x28, pool1 6@14x14, conv2 16@10x10, pool2 16@5x5, fc1 120,
fc2 84 (100 for lenet5_fc100) and output 10.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_zoo.models import lenet


@dataclasses.dataclass(frozen=True)
class Layer:
  name: str  # input, conv1, pool1, ..., fc1, ..., output
  kind: str  # 'input', 'conv', 'pool', 'dense' or 'output'
  values: np.ndarray  # (H, W, C) maps or (N,) activations, of one image
  note: str = ''  # what exactly is shown


@dataclasses.dataclass(frozen=True)
class Activations:
  layers: list[Layer]
  first_filters: np.ndarray | None  # the first convolution's kernel, (kh, kw, C_in, C_out)


@dataclasses.dataclass(frozen=True)
class _Call:
  kind: str  # 'conv' or 'dense'
  inputs: np.ndarray
  outputs: np.ndarray
  kernel: np.ndarray


def _intercepted_calls(model, variables, inputs):
  """Runs the model on a batch of one; returns its Conv/Dense calls in order and the logits."""
  kinds = []  # filled while tracing: Python values cannot leave a jitted function

  def forward(variables, x):
    kinds.clear()
    recorded = []

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      module = context.module
      if context.method_name == '__call__' and isinstance(module, (nn.Conv, nn.Dense)):
        kinds.append('conv' if isinstance(module, nn.Conv) else 'dense')
        recorded.append((args[0][0], out[0], module.get_variable('params', 'kernel')))
      return out

    with nn.intercept_methods(record):
      logits = model.apply(variables, x, train=False)
    return logits[0], recorded

  logits, recorded = jax.jit(forward)(variables, jnp.asarray(inputs))
  to_numpy = lambda a: np.asarray(a, np.float32)
  calls = [_Call(kind, *map(to_numpy, arrays)) for kind, arrays in zip(kinds, recorded)]
  return calls, to_numpy(logits)


def _pooled(maps: np.ndarray, following: _Call | None) -> np.ndarray | None:
  """What the next layer receives, when it is these maps pooled; None otherwise."""
  if following is None:
    return None
  h, w, c = maps.shape
  x = following.inputs
  if following.kind == 'conv':
    smaller = x.ndim == 3 and x.shape[2] == c and x.shape[0] <= h and x.shape[1] <= w \
        and x.shape[:2] != (h, w)
    return x if smaller else None
  side = math.isqrt(x.size // c) if x.size % c == 0 else 0
  if x.ndim == 1 and side * side * c == x.size and side < min(h, w):
    return x.reshape(side, side, c)  # the model flattened NHWC maps
  return None


def capture(model, variables, inputs) -> Activations:
  """The activations of `model` on preprocessed `inputs` of shape (1, H, W, C)."""
  inputs = np.asarray(inputs, np.float32)
  if inputs.ndim != 4 or inputs.shape[0] != 1:
    raise ValueError(f'capture takes one preprocessed image of shape (1, H, W, C), '
                     f'got {inputs.shape}')
  calls, logits = _intercepted_calls(model, variables, inputs)
  activation_name = getattr(model, 'activation', None)
  activation = lenet.ACTIVATIONS.get(activation_name) if isinstance(activation_name, str) else None
  pool_name = getattr(model, 'pool', None)
  pool_note = f'after {pool_name} pooling' if isinstance(pool_name, str) else 'pooled'
  layers = [Layer('input', 'input', inputs[0], 'as the model sees it (preprocessed)')]
  counts = {'conv': 0, 'pool': 0, 'dense': 0}

  def add(kind, prefix, values, note):
    counts[kind] += 1
    layers.append(Layer(f'{prefix}{counts[kind]}', kind, values, note))

  for i, call in enumerate(calls):
    following = calls[i + 1] if i + 1 < len(calls) else None
    if call.kind == 'conv':
      if activation is not None:
        add('conv', 'conv', np.asarray(activation(call.outputs)), f'after {activation_name}')
      else:
        add('conv', 'conv', call.outputs, 'raw convolution output')
      pooled = _pooled(layers[-1].values, following)
      if pooled is not None:
        add('pool', 'pool', pooled, pool_note)
    elif following is not None:  # the last Dense layer's output is the logits, shown as `output`
      if following.kind == 'dense' and following.inputs.shape == call.outputs.shape:
        add('dense', 'fc', following.inputs, f'after {activation_name or "activation"}')
      else:
        add('dense', 'fc', call.outputs, 'raw output')
  probabilities = np.asarray(jax.nn.softmax(logits))
  layers.append(Layer('output', 'output', probabilities, 'softmax'))
  first = next((c.kernel for c in calls if c.kind == 'conv'), None)
  return Activations(layers, first)


def thinned(acts: Activations, max_map_layers: int = 12) -> Activations:
  """At most `max_map_layers` layers of maps (conv, pool), evenly spaced, first and last kept, and
  every other layer: a figure of ResNet-50's 54 layers of maps would take matplotlib many minutes
  to lay out."""
  maps = [i for i, layer in enumerate(acts.layers) if layer.kind in ('conv', 'pool')]
  if len(maps) <= max_map_layers:
    return acts
  keep = {maps[int(round(k))] for k in np.linspace(0, len(maps) - 1, max_map_layers)}
  layers = [layer for i, layer in enumerate(acts.layers) if i in keep or i not in maps]
  return Activations(layers, acts.first_filters)
