"""The operations a ConvNet applies to an image, on single images, with the ops the models use.

`conv2d` calls `jax.lax.conv_general_dilated` exactly as `flax.linen.Conv` does: cross-correlation
(no kernel flip), NHWC inputs, HWIO kernels. `relu` is `flax.linen.relu`; `pool` is the zoo's own
`cnn_zoo.models.pooling.max_pool` / `avg_pool`, the functions LeNet-5 pools with.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_zoo.models import pooling

# The classic kernel table (e.g. Wikipedia's "Kernel (image processing)"). The Laplacians are
# written with a positive centre, as edge detectors usually are; the sign does not change the edges.
KERNELS = {
    'identity': np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32),
    'edge': np.array([[1, 0, -1], [0, 0, 0], [-1, 0, 1]], np.float32),
    'laplacian_4': np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32),
    'laplacian_8': np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32),
    'sharpen': np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32),
    'box_blur': np.full((3, 3), 1 / 9, np.float32),
    'gaussian_blur': np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 16,
}

POOLS = ('max', 'avg', 'sum')


def output_size(size: int, kernel: int, padding: int = 0, stride: int = 1) -> int:
  """out = (in - k + 2p) / s + 1, rounded down: a last window that does not fit is dropped."""
  span = size - kernel + 2 * padding
  if span < 0 or stride < 1:
    raise ValueError(f'a {kernel}x{kernel} window with padding {padding} does not fit a '
                     f'{size}-pixel input (stride {stride})')
  return span // stride + 1


def conv2d(image, kernel, stride: int = 1, padding: int | str = 0) -> jax.Array:
  """Convolves one image as a ConvNet layer does (cross-correlation, zero padding, no bias).

  image: (H, W) or (H, W, C_in); kernel: (kh, kw) or (kh, kw, C_in, C_out); padding: pixels of
  zeros on every side, or 'SAME' / 'VALID'. Returns (H', W') or (H', W', C_out).
  """
  image, kernel = jnp.asarray(image, jnp.float32), jnp.asarray(kernel, jnp.float32)
  plain = image.ndim == 2
  if plain:
    image = image[..., None]
  if kernel.ndim == 2:
    kernel = kernel[:, :, None, None]
  if kernel.ndim != 4 or image.ndim != 3 or kernel.shape[2] != image.shape[2]:
    raise ValueError(f'cannot convolve an image of shape {image.shape} with a kernel of shape '
                     f'{kernel.shape}; expected (H, W[, C]) and (kh, kw[, C, C_out])')
  pads = padding if isinstance(padding, str) else ((padding, padding), (padding, padding))
  out = jax.lax.conv_general_dilated(image[None], kernel, window_strides=(stride, stride),
                                     padding=pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))[0]
  return out[..., 0] if plain and out.shape[-1] == 1 else out


def relu(x) -> jax.Array:
  return nn.relu(jnp.asarray(x, jnp.float32))


def pool(x, kind: str = 'max', window: int = 2, stride: int = 2) -> jax.Array:
  """max / avg / sum pooling of (H, W) or (H, W, C) maps, unpadded, as the models pool."""
  if kind not in POOLS:
    raise ValueError(f'unknown pooling {kind!r}; valid choices: {", ".join(POOLS)}')
  x = jnp.asarray(x, jnp.float32)
  plain = x.ndim == 2
  batch = x[None, ..., None] if plain else x[None]
  if kind == 'max':
    out = pooling.max_pool(batch, window, stride)
  else:
    out = pooling.avg_pool(batch, window, stride)
    if kind == 'sum':  # unpadded full windows: the sum is the average times the area
      out = out * (window * window)
  return out[0, ..., 0] if plain else out[0]
