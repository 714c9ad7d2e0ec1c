"""What BatchNorm is in the zoo: the one place that says it.

PyTorch's BatchNorm2d defaults, which the papers' reference code and torchvision train with:
running averages updated as 0.9 * old + 0.1 * batch (PyTorch's momentum 0.1 is flax's 0.9) and
epsilon 1e-5; torchvision's GoogLeNet alone uses epsilon 1e-3. Train mode normalises with the
batch's statistics and updates the running ones (the 'batch_stats' collection); eval mode uses the
running ones.

`BatchNorm` below is flax's nn.BatchNorm (the same variables, names, statistics and eval mode) whose
train-mode gradient is written by hand: the forward pass keeps the normalised activation x_hat, and
the backward pass is one reduction over (dy, dy * x_hat) and one elementwise pass (Ioffe & Szegedy
2015, section 3), where autodiff of flax's forward keeps x and x - mean and differentiates the mean
and the mean of squares separately.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

MOMENTUM = 0.9
EPSILON = 1e-5

# Which BatchNorm `batch_norm` builds: 'vjp' (the class below) or 'flax' (nn.BatchNorm), a model's
# `layers.norm_impl`; flax's is kept to compare the two.
NORM_IMPLS = ('vjp', 'flax')


def batch_stats(x32, axes=(0, 1, 2)):
  """Batch mean and biased variance as flax computes them: E[x^2] - E[x]^2, clipped at 0."""
  mean = x32.mean(axes)
  var = jnp.maximum(0.0, jnp.square(x32).mean(axes) - jnp.square(mean))
  return mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _train_norm(x, scale, bias, epsilon, dtype):
  """(y, batch mean, batch variance) of train-mode BatchNorm over every axis but the last."""
  y, mean, var, _ = _train_norm_fwd_values(x, scale, bias, epsilon, dtype)
  return y, mean, var


def _train_norm_fwd_values(x, scale, bias, epsilon, dtype):
  axes = tuple(range(x.ndim - 1))
  x32 = x.astype(jnp.promote_types(dtype, jnp.float32))
  mean, var = batch_stats(x32, axes)
  inv_std = jax.lax.rsqrt(var + epsilon)
  centred = x32 - mean
  # The output in flax's order of operations, so forward values match it to the last bit.
  y = (centred * (inv_std * scale) + bias).astype(dtype)
  return y, mean, var, (centred * inv_std, inv_std)


def _train_norm_fwd(x, scale, bias, epsilon, dtype):
  y, mean, var, (x_hat, inv_std) = _train_norm_fwd_values(x, scale, bias, epsilon, dtype)
  # x's dtype rides along as an empty array: residuals must be arrays.
  return (y, mean, var), (x_hat, inv_std, scale, jnp.zeros((0,), x.dtype))


def _train_norm_bwd(epsilon, dtype, residuals, cotangents):
  """dx = scale / std * (dy - mean(dy) - x_hat * mean(dy * x_hat)), from x_hat alone; the mean's
  and variance's cotangents (zero when they only feed the running averages) are added exactly."""
  del epsilon, dtype
  x_hat, inv_std, scale, x_zero = residuals
  dy, dmean, dvar = cotangents
  axes = tuple(range(x_hat.ndim - 1))
  count = x_hat.size // x_hat.shape[-1]
  dy32 = dy.astype(x_hat.dtype)
  dbias = dy32.sum(axes)
  dscale = (dy32 * x_hat).sum(axes)
  # d mean / dx = 1 / count and d var / dx = 2 (x - mean) / count = 2 x_hat / (inv_std * count).
  dx = (scale * inv_std) * (dy32 - dbias / count - x_hat * (dscale / count))
  dx = dx + dmean / count + x_hat * (2 * dvar / (inv_std * count))
  return dx.astype(x_zero.dtype), dscale, dbias


_train_norm.defvjp(_train_norm_fwd, _train_norm_bwd)


class BatchNorm(nn.BatchNorm):
  """nn.BatchNorm over the last axis with the hand-written train-mode gradient of `_train_norm`.

  Same fields and variables as nn.BatchNorm (and so the same auto-names, BatchNorm_0, ...); the
  settings the zoo does not use (another axis, cross-device statistics, masks, the two-pass
  variance, half-precision reductions) are refused.
  """

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None):
    """Normalises `x` with the batch's statistics (train) or the running ones (eval)."""
    unsupported = {'axis': (self.axis, (-1, x.ndim - 1)), 'axis_name': (self.axis_name, (None,)),
                   'use_fast_variance': (self.use_fast_variance, (True,)),
                   'force_float32_reductions': (self.force_float32_reductions, (True,)),
                   'use_scale': (self.use_scale, (True,)), 'use_bias': (self.use_bias, (True,))}
    for field, (value, allowed) in unsupported.items():
      if value not in allowed:
        raise ValueError(f'norm.BatchNorm supports {field} in {allowed}, not {value!r}; '
                         'use nn.BatchNorm')
    use_running_average = nn.merge_param(
        'use_running_average', self.use_running_average, use_running_average)
    features = (x.shape[-1],)
    ra_mean = self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32), features)
    ra_var = self.variable('batch_stats', 'var', lambda s: jnp.ones(s, jnp.float32), features)
    scale = self.param('scale', self.scale_init, features, self.param_dtype)
    bias = self.param('bias', self.bias_init, features, self.param_dtype)
    # flax's result dtype: the module's dtype, else that of x, scale and bias together.
    dtype = jnp.result_type(x, scale, bias) if self.dtype is None else self.dtype
    if use_running_average:
      # flax's eval arithmetic, in its order.
      y = (x - ra_mean.value) * (jax.lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
      return jnp.asarray(y, dtype)
    # Statistics in at least float32, as flax computes them for half-precision activations.
    y, mean, var = _train_norm(x, scale, bias, self.epsilon, jnp.dtype(dtype))
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y


def batch_norm(train: bool, dtype, epsilon: float = EPSILON, impl: str = 'vjp',
               **kwargs) -> nn.BatchNorm:
  """A BatchNorm layer for train or eval mode, `impl` one of NORM_IMPLS; kwargs (name,
  scale_init) go to the module."""
  if impl not in NORM_IMPLS:
    raise ValueError(f'norm_impl={impl!r} is not valid; valid choices: {", ".join(NORM_IMPLS)}')
  module = BatchNorm if impl == 'vjp' else nn.BatchNorm
  return module(use_running_average=not train, momentum=MOMENTUM, epsilon=epsilon,
                dtype=dtype, **kwargs)
