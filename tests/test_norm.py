"""The zoo's BatchNorm against flax's nn.BatchNorm: the same variables, values, statistics and
gradients (to float round-off), and a backward pass that really is the hand-written one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_zoo import models
from cnn_zoo.models import norm

SHAPE = (8, 5, 5, 6)  # N, H, W, C


def _pair(dtype, epsilon=norm.EPSILON):
  kwargs = dict(momentum=norm.MOMENTUM, epsilon=epsilon, dtype=dtype)
  return nn.BatchNorm(**kwargs), norm.BatchNorm(**kwargs)


def _inputs(dtype):
  """An input off zero mean and unit variance, and parameters away from their initial 1 and 0."""
  keys = jax.random.split(jax.random.key(0), 5)
  x = (3 * jax.random.normal(keys[0], SHAPE) + 1).astype(dtype)
  variables = {
      'params': {'scale': jax.random.uniform(keys[1], SHAPE[-1:], minval=0.5, maxval=1.5),
                 'bias': jax.random.normal(keys[2], SHAPE[-1:])},
      'batch_stats': {'mean': jax.random.normal(keys[3], SHAPE[-1:]),
                      'var': jax.random.uniform(keys[4], SHAPE[-1:], minval=0.5, maxval=2.0)}}
  return x, variables


def _train(module, variables, x):
  """Output, gradients (params, x) of a weighted sum of the output, and the updated statistics."""
  weights = jnp.sin(jnp.arange(x.size, dtype=jnp.float32)).reshape(x.shape)

  def loss(params, x):
    y, updated = module.apply({**variables, 'params': params}, x, use_running_average=False,
                              mutable=['batch_stats'])
    return (y.astype(jnp.float32) * weights).sum(), (y, updated['batch_stats'])

  (_, (y, stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      variables['params'], x)
  return y, grads, stats


def _f32(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float32), tree)


def _close(actual, expected, rel):
  """Equal up to `rel` times the largest magnitude of `expected`, leaf by leaf."""
  for a, e in zip(jax.tree.leaves(_f32(actual)), jax.tree.leaves(_f32(expected))):
    np.testing.assert_allclose(a, e, rtol=0, atol=rel * np.abs(e).max())


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_init_gives_flax_variables(dtype):
  x, _ = _inputs(dtype)
  theirs, ours = (m.init(jax.random.key(1), x, use_running_average=False) for m in _pair(dtype))
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


# float32 round-off for float32; for bfloat16 activations, one bfloat16 step (2^-8 relative) of
# the gradient with respect to x, whose rounding is the only difference there.
TOLERANCE = {jnp.float32: 1e-5, jnp.bfloat16: 2 ** -7}


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('epsilon', [norm.EPSILON, 1e-3])
def test_train_mode_equals_flax(dtype, epsilon):
  """Output and statistics to float32 round-off; gradients (x, scale, bias) within TOLERANCE."""
  x, variables = _inputs(dtype)
  theirs, ours = (_train(m, variables, x) for m in _pair(dtype, epsilon))
  (y, grads, stats), (their_y, their_grads, their_stats) = ours, theirs
  assert y.dtype == their_y.dtype == dtype
  _close(y, their_y, 1e-6)
  _close(stats, their_stats, 1e-6)
  (dparams, dx), (their_dparams, their_dx) = grads, their_grads
  assert dx.dtype == their_dx.dtype == dtype
  _close(dparams, their_dparams, 1e-5)
  _close(dx, their_dx, TOLERANCE[dtype])


def test_gradient_through_the_batch_statistics_equals_flax():
  """Where the new running mean and variance feed the loss, their gradient reaches x too."""
  x, variables = _inputs(jnp.float32)

  def grad(module):
    def loss(x):
      y, updated = module.apply(variables, x, use_running_average=False, mutable=['batch_stats'])
      stats = updated['batch_stats']
      return (y * jnp.cos(y)).sum() + (stats['mean'] ** 3).sum() + jnp.log(stats['var']).sum()
    return jax.grad(loss)(x)

  theirs, ours = (grad(m) for m in _pair(jnp.float32))
  _close(ours, theirs, 1e-5)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_eval_mode_equals_flax(dtype):
  x, variables = _inputs(dtype)
  theirs, ours = (m.apply(variables, x, use_running_average=True) for m in _pair(dtype))
  assert ours.dtype == theirs.dtype == dtype
  np.testing.assert_array_equal(_f32(ours), _f32(theirs))


def test_the_backward_pass_is_the_hand_written_one():
  """The train-mode forward is a custom_vjp call, and the backward keeps one activation-sized
  array (the normalised activation) where autodiff of flax's keeps two."""
  x, variables = _inputs(jnp.float32)

  def saved_activations(module):
    apply = lambda x: module.apply(variables, x, use_running_average=False,
                                   mutable=['batch_stats'])[0]
    primitives = {e.primitive.name for e in jax.make_jaxpr(apply)(x).jaxpr.eqns}
    _, backward = jax.vjp(apply, x)
    return primitives, sum(leaf.shape == x.shape for leaf in jax.tree.leaves(backward))

  (their_primitives, theirs), (our_primitives, ours) = map(saved_activations, _pair(jnp.float32))
  assert 'custom_vjp_call' in our_primitives and 'custom_vjp_call' not in their_primitives
  assert (ours, theirs) == (1, 2)


def test_refuses_settings_it_does_not_implement():
  x, _ = _inputs(jnp.float32)
  with pytest.raises(ValueError, match='axis_name'):
    norm.BatchNorm(axis_name='batch').init(jax.random.key(0), x, use_running_average=False)


def _resnet20(impl):
  model = models.get('resnet20', norm_impl=impl)
  x = jax.random.normal(jax.random.key(0), (4, *models.input_shape('resnet20')))
  variables = model.init(jax.random.key(1), x, train=False)

  def loss(params):
    logits, updated = model.apply({**variables, 'params': params}, x, train=True,
                                  mutable=['batch_stats'])
    return logits.sum() ** 2, updated['batch_stats']

  return variables, jax.grad(loss, has_aux=True)(variables['params'])


def test_resnet20_keeps_its_variables_and_gradients():
  """The same variable tree (names, shapes, initial values) with either BatchNorm, and the same
  train-mode gradients and statistics to float32 round-off."""
  theirs, ours = _resnet20('flax'), _resnet20('vjp')
  (variables, (grads, stats)), (their_variables, (their_grads, their_stats)) = ours, theirs
  assert jax.tree.structure(variables) == jax.tree.structure(their_variables)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(their_variables)):
    assert np.array_equal(a, b)
  _close(stats, their_stats, 1e-5)
  _close(grads, their_grads, 1e-4)


@pytest.mark.parametrize('impl, cls', [('vjp', norm.BatchNorm), ('flax', nn.BatchNorm)])
def test_a_model_computes_with_the_batch_norm_of_its_layers(impl, cls):
  """models.get(norm_impl=) reaches every BatchNorm of the model (no module-global switch)."""
  seen = set()

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm):
      seen.add(type(context.module))
    return next_fun(*args, **kwargs)

  model = models.get('resnet20', norm_impl=impl)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=True), jnp.zeros((2, 8, 8, 3)))
  assert model.layers.norm_impl == impl and seen == {cls}


def test_an_unknown_norm_impl_is_refused():
  with pytest.raises(ValueError, match="norm_impl='sync' is not valid; valid choices: vjp, flax"):
    models.get('resnet20', norm_impl='sync')
