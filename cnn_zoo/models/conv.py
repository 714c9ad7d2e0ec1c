"""Convolution implementations a model computes with: its `layers.conv_impl` (models/layers.py).

Models are written with `flax.linen.Conv`, which computes with `lax.conv_general_dilated`. On CPU,
XLA lowers the gradients of that op badly: the weight gradient needs the activations transposed to
a batch-minor layout, XLA fuses (and so recomputes) the whole elementwise chain that produced them
into that strided transpose, and convolutions on tiny feature maps (VGG's 2x2) fall off its fast
path. `im2col_conv` computes the same convolution as one matrix multiply over the stacked shifted
windows, so that forward and both gradients are plain GEMMs. GPU and TPU keep XLA's native
convolution. The choice is part of the model (`models.get(name, conv_impl=...)` builds it into
the model's `Layers`; runs take config.conv_impl), so `module.apply` anywhere computes what
training computes.

`im2col_bf16` is im2col with its three GEMMs (forward, input and weight gradients) in bfloat16 with
float32 accumulation, for CPUs whose bfloat16 units (AVX-512-BF16, AMX) multiply several times
faster than float32; activations, parameters and the optimizer stay float32.

`xla` on CPU puts an optimisation barrier on each convolution's input (`barrier_conv`): the input
is then a materialised array that the weight gradient's transposing copy reads, instead of a
fusion that recomputes the stage's BatchNorms, ReLUs and residual adds with a strided read. XLA's
CPU pipeline removes barriers early (its `cse_barrier_expander` pass) unless the step is compiled
with `KEEP_BARRIERS`, as every CPU train step is (`cnn_zoo.train.build.train_compiler_options`);
elsewhere the barrier is gone before fusion and the step is what it was. The values computed are
the same either way.

`ffi_wgrad` keeps XLA's forward convolution and input gradient and computes the weight gradient
with the project's own CPU kernel through jax.ffi (`conv_wgrad`); where that kernel cannot be built,
loaded or fails its check, or for a convolution it does not cover (grouped convolutions are covered;
dilated, non-float32 ones are not), the convolution is `xla`'s.

A model built with 'auto' computes with `resolve('auto')`: im2col on CPU, XLA elsewhere. Runs and
the benchmark instead measure which is faster on the machine at hand (`cnn_zoo.train.autoconv`)
and build with the concrete choice.
"""

import functools

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from cnn_zoo.models import conv_wgrad

CONV_IMPLS = ('auto', 'xla', 'im2col', 'im2col_bf16', 'ffi_wgrad')
CONCRETE_IMPLS = ('xla', 'im2col', 'im2col_bf16', 'ffi_wgrad')  # what 'auto' can become
# XLA options that keep optimisation barriers until fusion: for `barrier_conv` and jax.checkpoint.
KEEP_BARRIERS = {'xla_disable_hlo_passes': 'cse_barrier_expander'}


@jax.custom_vjp
def bf16_matmul(a, b):
  """a @ b with bfloat16 operands and float32 accumulation, its gradients likewise: without the
  custom rule, JAX's transposes would multiply the float32 cotangent by a bfloat16 operand, which
  XLA does in float32."""
  return jnp.dot(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                 preferred_element_type=jnp.float32)


def _bf16_matmul_fwd(a, b):
  a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
  # The zero-size arrays carry the operands' dtypes (residuals must be arrays).
  tags = (jnp.zeros((0,), a.dtype), jnp.zeros((0,), b.dtype))
  return jnp.dot(a16, b16, preferred_element_type=jnp.float32), (a16, b16, tags)


def _bf16_matmul_bwd(res, g):
  a16, b16, (a_tag, b_tag) = res
  g16 = g.astype(jnp.bfloat16)
  da = jnp.dot(g16, b16.T, preferred_element_type=jnp.float32)
  db = jnp.dot(a16.T, g16, preferred_element_type=jnp.float32)
  return da.astype(a_tag.dtype), db.astype(b_tag.dtype)


bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)


def im2col_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                precision=None, preferred_element_type=None, bf16=False):
  """`lax.conv_general_dilated` (NHWC, HWIO, as flax calls it) as im2col + one matmul; with
  `bf16`, a bfloat16 matmul accumulating in float32 (`bf16_matmul`).

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
  out_dtype = lhs.dtype
  if bf16:
    # The patches are gathered in bfloat16: half the bytes moved, and an operand XLA hands to its
    # bfloat16 GEMM as is (a float32 operand cast inside the dot measured slower than float32).
    lhs = lhs.astype(jnp.bfloat16)
  (sh, sw), ((pt, pb), (pl, pr)) = window_strides, padding
  x = jnp.pad(lhs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  n, h, w, _ = x.shape
  oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
  windows = [x[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :]
             for i in range(kh) for j in range(kw)]
  # Columns ordered (kh, kw, cin), as the HWIO kernel flattens.
  patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
  patches, kernel = patches.reshape(n * oh * ow, kh * kw * cin), rhs.reshape(kh * kw * cin, cout)
  if bf16:
    return bf16_matmul(patches, kernel).astype(out_dtype).reshape(n, oh, ow, cout)
  y = jnp.dot(patches, kernel, precision=precision, preferred_element_type=preferred_element_type)
  return y.reshape(n, oh, ow, cout)


def barrier_conv(lhs, rhs, *args, **kwargs):
  """`lax.conv_general_dilated` of an input that XLA may not fuse into its consumers (the module
  docstring says why)."""
  return lax.conv_general_dilated(lax.optimization_barrier(lhs), rhs, *args, **kwargs)


def ffi_wgrad_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                   dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                   precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated` whose weight gradient is `conv_wgrad`'s kernel where it covers the
  convolution; `barrier_conv` otherwise."""
  if conv_wgrad.supports(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                         batch_group_count, preferred_element_type):
    return conv_wgrad.conv(lhs, rhs, window_strides, padding,
                           feature_group_count=feature_group_count, precision=precision)
  return barrier_conv(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                      dimension_numbers, feature_group_count, batch_group_count, precision,
                      preferred_element_type)


def resolve(conv_impl: str, platform: str | None = None) -> str:
  """The concrete implementation a model built with `conv_impl` computes with, unmeasured."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'conv_impl={conv_impl!r} is not valid; valid choices: {", ".join(CONV_IMPLS)}')
  if conv_impl == 'auto':
    platform = platform or jax.default_backend()
    return 'im2col' if platform == 'cpu' else 'xla'
  return conv_impl


def conv_module(conv_impl: str):
  """`nn.Conv`, computing with `conv_impl` as resolved for JAX's default backend (`Layers.conv`
  calls this once per model). The layer's class, name and parameters are nn.Conv's either way."""
  impl = resolve(conv_impl)
  if impl == 'im2col':
    return functools.partial(nn.Conv, conv_general_dilated=im2col_conv)
  if impl == 'im2col_bf16':
    return functools.partial(nn.Conv,
                             conv_general_dilated=functools.partial(im2col_conv, bf16=True))
  if impl == 'ffi_wgrad' and conv_wgrad.available():  # else a warning said why, once
    return functools.partial(nn.Conv, conv_general_dilated=ffi_wgrad_conv)
  if jax.default_backend() == 'cpu':
    return functools.partial(nn.Conv, conv_general_dilated=barrier_conv)
  return nn.Conv
