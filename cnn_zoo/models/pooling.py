"""Pooling with PyTorch's semantics on NHWC arrays, for the families that reproduce torchvision."""

import functools
import math

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np


def _pool_output_size(size: int, window: int, stride: int, padding: int, ceil_mode: bool) -> int:
  """torch.nn.MaxPool2d's output length; a ceil-mode window must start inside the input or its
  left padding."""
  span = size + 2 * padding - window
  if not ceil_mode:
    return span // stride + 1
  out = -(-span // stride) + 1
  if (out - 1) * stride >= size + padding:
    out -= 1
  return out


def _tiles(x, window: int):
  """(N, H, W, C) -> (N, H/w, w, W/w, w, C): disjoint windows as axes 2 and 4."""
  n, h, w, c = x.shape
  return x.reshape(n, h // window, window, w // window, window, c)


def _disjoint(x, window: int, stride: int, padding: int) -> bool:
  """Windows that tile the input exactly: pooled by a reshape, whose gradient XLA's CPU backend
  runs far faster than reduce-window's select-and-scatter, and which is the same on GPU/TPU."""
  return window == stride and padding == 0 and x.shape[1] % window == 0 and \
      x.shape[2] % window == 0 and x.shape[1] > 0


def max_pool(x, window: int, stride: int, padding: int = 0, ceil_mode: bool = False):
  """torch.nn.MaxPool2d(window, stride, padding, ceil_mode=...): pads with -inf on the left by
  `padding` and on the right by what torch's output size implies."""
  if _disjoint(x, window, stride, padding):
    return _tiles(x, window).max(axis=(2, 4))
  pads = []
  for size in x.shape[1:3]:
    out = _pool_output_size(size, window, stride, padding, ceil_mode)
    if out < 1:
      raise ValueError(f'max pool {window}x{window}/{stride} (padding {padding}) needs at least '
                       f'{window - 2 * padding} pixels, got a {x.shape[1]}x{x.shape[2]} input')
    pads.append((padding, max(0, (out - 1) * stride + window - size - padding)))
  return _max_of_shifted_windows(x, window, stride, pads)


def _max_of_shifted_windows(x, window: int, stride: int, pads):
  """Overlapping max pooling as the elementwise maximum of the window's window**2 strided slices.

  Same values as reduce-window; the gradient goes, as in PyTorch, to the first maximum of each
  window in row-major order, and is a few fused selects and pads instead of select-and-scatter,
  which XLA's CPU backend runs as scalar loops (a third of GoogLeNet's step before this).
  """
  (top, bottom), (left, right) = pads
  padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-jnp.inf)
  return _shifted_max(padded, window, stride)


def _window_slices(x, window: int, stride: int):
  oh = (x.shape[1] - window) // stride + 1
  ow = (x.shape[2] - window) // stride + 1
  return [((i, j), x[:, i:i + (oh - 1) * stride + 1:stride, j:j + (ow - 1) * stride + 1:stride])
          for i in range(window) for j in range(window)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _shifted_max(x, window: int, stride: int):
  return functools.reduce(jnp.maximum, (s for _, s in _window_slices(x, window, stride)))


def _shifted_max_fwd(x, window, stride):
  y = _shifted_max(x, window, stride)
  return y, (x, y)


def _shifted_max_bwd(window, stride, residuals, dy):
  x, y = residuals
  slices = _window_slices(x, window, stride)
  # k, the row-major position in its window of each output's first maximum.
  first = jnp.full(y.shape, window * window - 1, jnp.int32)
  for k, (_, s) in reversed(list(enumerate(slices))):
    first = jnp.where(s == y, k, first)
  zero = jnp.zeros((), dy.dtype)
  if stride == 1:
    # Gather form, one fused pass: input q collects from outputs q - (i, j) whose first maximum
    # is at (i, j) of their window.
    edge = ((0, 0), (window - 1, window - 1), (window - 1, window - 1), (0, 0))
    dy, first = jnp.pad(dy, edge), jnp.pad(first, edge, constant_values=-1)
    h, w = x.shape[1:3]
    dx = zero
    for k, ((i, j), _) in enumerate(slices):
      rows, cols = slice(window - 1 - i, window - 1 - i + h), slice(window - 1 - j, window - 1 - j + w)
      dx = dx + jnp.where(first[:, rows, cols] == k, dy[:, rows, cols], zero)
    return (dx,)
  dx = jnp.zeros_like(x)
  for k, ((i, j), _) in enumerate(slices):
    # Back to each window position at its stride: interior padding of stride - 1.
    rows = (i, x.shape[1] - i - (y.shape[1] - 1) * stride - 1, stride - 1)
    cols = (j, x.shape[2] - j - (y.shape[2] - 1) * stride - 1, stride - 1)
    dx = dx + lax.pad(jnp.where(first == k, dy, zero), zero, ((0, 0, 0), rows, cols, (0, 0, 0)))
  return (dx,)


_shifted_max.defvjp(_shifted_max_fwd, _shifted_max_bwd)


def avg_pool(x, window: int, stride: int):
  """torch.nn.AvgPool2d(window, stride), unpadded."""
  if min(x.shape[1:3]) < window:
    raise ValueError(f'average pool {window}x{window} got a {x.shape[1]}x{x.shape[2]} input')
  if _disjoint(x, window, stride, 0):
    return _tiles(x, window).mean(axis=(2, 4))
  return nn.avg_pool(x, (window, window), strides=(stride, stride))


def _adaptive_mean(x, axis: int, out: int):
  size = x.shape[axis]
  if size == out:
    return x
  if size % out == 0:  # equal, disjoint windows
    shape = x.shape[:axis] + (out, size // out) + x.shape[axis + 1:]
    return x.reshape(shape).mean(axis=axis + 1)
  # torch's windows [floor(i * size / out), ceil((i + 1) * size / out)) may overlap or repeat
  weights = np.zeros((out, size), np.float32)
  for i in range(out):
    start, end = (i * size) // out, math.ceil((i + 1) * size / out)
    weights[i, start:end] = 1 / (end - start)
  y = jnp.tensordot(x, jnp.asarray(weights, x.dtype), axes=((axis,), (1,)))
  return jnp.moveaxis(y, -1, axis)


def adaptive_avg_pool(x, output_size: int):
  """torch.nn.AdaptiveAvgPool2d(output_size) on NHWC: any input size, including one smaller than
  the output (a 1x1 input is replicated)."""
  if min(x.shape[1:3]) < 1:
    raise ValueError(f'adaptive average pool got an empty {x.shape[1]}x{x.shape[2]} input')
  return _adaptive_mean(_adaptive_mean(x, 1, output_size), 2, output_size)


def global_avg_pool(x):
  """AdaptiveAvgPool2d(1) followed by flatten: (N, H, W, C) -> (N, C)."""
  if min(x.shape[1:3]) < 1:
    raise ValueError(f'global average pool got an empty {x.shape[1]}x{x.shape[2]} input')
  return x.mean(axis=(1, 2))
