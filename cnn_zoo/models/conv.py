"""Convolution implementations a model computes with: every family's `conv_impl` field.

Models are written with `flax.linen.Conv`, which computes with `lax.conv_general_dilated`. On CPU,
XLA lowers the gradients of that op badly: the weight gradient needs the activations transposed to
a batch-minor layout, XLA fuses (and so recomputes) the whole elementwise chain that produced them
into that strided transpose, and convolutions on tiny feature maps (VGG's 2x2) fall off its fast
path. `im2col_conv` computes the same convolution as one matrix multiply over the stacked shifted
windows, so that forward and both gradients are plain GEMMs. GPU and TPU keep XLA's native
convolution (`conv_impl='auto'`). The choice is part of the model (`models.get(name,
conv_impl=...)`; runs take config.conv_impl), so `module.apply` anywhere computes what training
computes.
"""

import functools

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

CONV_IMPLS = ('auto', 'xla', 'im2col')


def im2col_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated` (NHWC, HWIO, as flax calls it) as im2col + one matmul.

  Grouped or dilated convolutions fall back to XLA's own; 'SAME' and 'VALID' become explicit pads.
  """
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  plain = (feature_group_count == 1 and batch_group_count == 1
           and all(d == 1 for d in (lhs_dilation or ())) and
           all(d == 1 for d in (rhs_dilation or ())) and lhs.ndim == 4)
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
  kh, kw, cin, cout = rhs.shape
  (sh, sw), ((pt, pb), (pl, pr)) = window_strides, padding
  x = jnp.pad(lhs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  n, h, w, _ = x.shape
  oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
  windows = [x[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :]
             for i in range(kh) for j in range(kw)]
  # Columns ordered (kh, kw, cin), as the HWIO kernel flattens.
  patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
  y = jnp.dot(patches.reshape(n * oh * ow, kh * kw * cin), rhs.reshape(kh * kw * cin, cout),
              precision=precision, preferred_element_type=preferred_element_type)
  return y.reshape(n, oh, ow, cout)


def resolve(conv_impl: str, platform: str | None = None) -> str:
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'conv_impl={conv_impl!r} is not valid; valid choices: {", ".join(CONV_IMPLS)}')
  if conv_impl == 'auto':
    platform = platform or jax.default_backend()
    return 'im2col' if platform == 'cpu' else 'xla'
  return conv_impl


def conv_module(conv_impl: str):
  """`nn.Conv`, computing with `conv_impl` as resolved for JAX's default backend when the layer is called. The
  layer's class, name and parameters are nn.Conv's either way."""
  if resolve(conv_impl) == 'im2col':
    return functools.partial(nn.Conv, conv_general_dilated=im2col_conv)
  return nn.Conv
