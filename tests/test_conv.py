"""The im2col convolution equals XLA's, in value and in both gradients, and the step's choice of
implementation changes nothing but speed."""


import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import optax
import pytest

from cnn_zoo import models
from cnn_zoo.models import conv
from cnn_zoo.train import build as build_lib
from cnn_zoo.train import state as state_lib, step as step_lib

DN = ('NHWC', 'HWIO', 'NHWC')


@pytest.mark.parametrize('kernel,stride,padding,size,cin,cout', [
    (3, 1, 1, 8, 4, 5), (3, 2, 1, 9, 3, 6), (1, 1, 0, 6, 8, 4), (1, 2, 0, 8, 4, 8),
    (5, 1, 0, 12, 1, 6), (7, 2, 3, 16, 3, 8), (11, 4, 2, 35, 3, 4), (3, 1, 1, 2, 8, 8),
])
def test_im2col_matches_xla_in_value_and_gradients(kernel, stride, padding, size, cin, cout):
  x = jax.random.normal(jax.random.key(0), (2, size, size, cin))
  w = jax.random.normal(jax.random.key(1), (kernel, kernel, cin, cout))
  pads = ((padding, padding), (padding, padding))
  plain = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=DN)
  ours = lambda x, w: conv.im2col_conv(x, w, (stride, stride), pads, dimension_numbers=DN)
  np.testing.assert_allclose(ours(x, w), plain(x, w), rtol=1e-5, atol=1e-4)
  dy = jax.random.normal(jax.random.key(2), plain(x, w).shape)
  loss = lambda f: lambda x, w: jnp.sum(f(x, w) * dy)
  for g_ours, g_plain in zip(jax.grad(loss(ours), (0, 1))(x, w), jax.grad(loss(plain), (0, 1))(x, w)):
    np.testing.assert_allclose(g_ours, g_plain, rtol=1e-5, atol=1e-3)


def test_grouped_convolution_falls_back_to_xla():
  x = jax.random.normal(jax.random.key(0), (1, 6, 6, 4))
  w = jax.random.normal(jax.random.key(1), (3, 3, 2, 4))
  args = ((1, 1), ((1, 1), (1, 1)))
  np.testing.assert_array_equal(
      conv.im2col_conv(x, w, *args, dimension_numbers=DN, feature_group_count=2),
      lax.conv_general_dilated(x, w, *args, dimension_numbers=DN, feature_group_count=2))


def test_auto_resolves_by_platform():
  assert conv.resolve('auto', 'cpu') == 'im2col'
  assert conv.resolve('auto', 'gpu') == 'xla' and conv.resolve('auto', 'tpu') == 'xla'
  assert conv.resolve('im2col_bf16', 'gpu') == 'im2col_bf16'  # explicit: as asked, anywhere
  with pytest.raises(ValueError, match="conv_impl='fft' is not valid; valid choices: auto, xla, "
                                       "im2col, im2col_bf16"):
    conv.resolve('fft')


@pytest.mark.parametrize('name', ['resnet20', 'lenet5'])
def test_the_step_gives_the_same_result_with_either_implementation(name):
  shape = models.input_shape(name)
  batch = {'image': jax.random.normal(jax.random.key(3), (4, *shape)),
           'label': jnp.arange(4, dtype=jnp.int32)}
  results = {}
  for impl in ('xla', 'im2col'):
    state = state_lib.create(models.get(name, conv_impl=impl), optax.sgd(0.1, momentum=0.9), shape,
                             seed=0)
    new_state, metrics = jax.jit(step_lib.train_step)(state, batch)
    update = jax.tree.map(lambda new, old: new - old, new_state.params, state.params)
    results[impl] = (metrics['loss'], np.concatenate([np.ravel(u) for u in jax.tree.leaves(update)]))
  np.testing.assert_allclose(results['xla'][0], results['im2col'][0], rtol=1e-5)
  # The whole update, as one vector: some BN-bias gradients are sums that nearly cancel, where
  # float rounding is large relative to the element but not to the update (measured for ResNet-20
  # on 4 images: 1.6e-3 with torchvision's initialisation, 7.5e-3 with the CIFAR reference's
  # fan-in one, issue #28; the gradients of the convolution alone agree to 1e-5 above).
  a, b = results['xla'][1], results['im2col'][1]
  assert np.linalg.norm(a - b) <= 2e-2 * np.linalg.norm(a)


@pytest.mark.parametrize('name', ['lenet5', 'resnet20', 'googlenet_cifar', 'densenet_bc_100'])
def test_the_implementation_leaves_the_parameters_alone(name):
  """The same names, shapes and initial values whichever implementation a model computes with,
  so checkpoints move between them."""
  shape = models.input_shape(name)
  kwargs = {'block_sizes': (2, 2, 2)} if name == 'densenet_bc_100' else {}  # its layers, fewer
  init = lambda impl: models.get(name, conv_impl=impl, **kwargs).init(
      jax.random.key(0), jnp.zeros((1, *shape)), train=False)
  xla, im2col = init('xla'), init('im2col')
  assert jax.tree.structure(xla) == jax.tree.structure(im2col)
  for a, b in zip(jax.tree.leaves(xla), jax.tree.leaves(im2col)):
    np.testing.assert_array_equal(a, b)


def test_apply_outside_the_step_computes_with_the_models_implementation():
  """`module.apply` anywhere, not only in the step, uses the model's conv_impl: an im2col model's
  forward pass holds no convolution op."""
  x = jnp.zeros((1, 32, 32, 1))
  for impl, has_conv in (('im2col', False), ('xla', True)):
    model = models.get('lenet5', conv_impl=impl)
    variables = model.init(jax.random.key(0), x)
    jaxpr = str(jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, x))
    assert ('conv_general_dilated' in jaxpr) == has_conv, impl


def _bf16_case():
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 6))
  w = jax.random.normal(jax.random.key(1), (3, 3, 6, 8)) / 5
  args = ((2, 2), ((1, 1), (1, 1)))
  plain = lambda x, w: lax.conv_general_dilated(x, w, *args, dimension_numbers=DN)
  bf16 = lambda x, w: conv.im2col_conv(x, w, *args, dimension_numbers=DN, bf16=True)
  return x, w, plain, bf16


def test_the_bfloat16_convolution_equals_float32_within_bfloat16_rounding():
  """In value and both gradients: operands rounded to bfloat16 (8 significant bits), products
  summed in float32."""
  x, w, plain, bf16 = _bf16_case()
  rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
  y = bf16(x, w)
  assert y.dtype == jnp.float32
  assert 1e-5 < rel(y, plain(x, w)) < 1e-2  # not exact (it is bfloat16), but close
  dy = jax.random.normal(jax.random.key(2), y.shape)
  loss = lambda f: lambda x, w: jnp.sum(f(x, w) * dy)
  grads = zip(jax.grad(loss(bf16), (0, 1))(x, w), jax.grad(loss(plain), (0, 1))(x, w))
  for g_bf16, g_plain in grads:
    assert g_bf16.dtype == jnp.float32 and rel(g_bf16, g_plain) < 1e-2


def test_the_bfloat16_convolution_multiplies_in_bfloat16_forward_and_backward():
  """All three GEMMs (output, input gradient, weight gradient) take bfloat16 operands and
  accumulate in float32."""
  x, w, _, bf16 = _bf16_case()
  jaxpr = jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(bf16(x, w) ** 2), (0, 1)))(x, w)

  def dots(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        yield eqn
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          if hasattr(sub, 'eqns') or hasattr(sub, 'jaxpr'):  # a Jaxpr or a ClosedJaxpr
            yield from dots(getattr(sub, 'jaxpr', sub))

  found = list(dots(jaxpr.jaxpr))
  assert len(found) == 3
  for eqn in found:
    assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16, jnp.bfloat16], eqn
    assert eqn.outvars[0].aval.dtype == jnp.float32


def test_a_bfloat16_model_trains_in_float32_with_bfloat16_products():
  """conv_impl='im2col_bf16' leaves the parameters and activations float32 and the step within
  bfloat16 rounding of the float32 step."""
  shape = models.input_shape('lenet5')
  batch = {'image': jax.random.normal(jax.random.key(3), (4, *shape)),
           'label': jnp.arange(4, dtype=jnp.int32)}
  losses = {}
  for impl in ('im2col', 'im2col_bf16'):
    state = state_lib.create(models.get('lenet5', conv_impl=impl), optax.sgd(0.1), shape, seed=0)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    _, metrics = jax.jit(step_lib.train_step)(state, batch)
    losses[impl] = float(metrics['loss'])
  assert losses['im2col'] != losses['im2col_bf16']
  np.testing.assert_allclose(losses['im2col_bf16'], losses['im2col'], rtol=1e-2)


def _resnet_step(conv_impl='xla'):
  """A ResNet-20 train step on 16x16 images, compiled as a CPU train step is compiled."""
  model = models.get('resnet20', conv_impl=conv_impl)
  state = state_lib.create(model, optax.sgd(0.1, momentum=0.9), (16, 16, 3), seed=0)
  batch = {'image': jax.random.normal(jax.random.key(3), (8, 16, 16, 3)),
           'label': jnp.arange(8, dtype=jnp.int32)}
  compiled = jax.jit(step_lib.train_step).lower(state, batch).compile(
      compiler_options=build_lib.train_compiler_options('none', 'cpu'))
  return compiled, state, batch


def test_the_xla_convolution_on_cpu_keeps_its_barrier_through_compilation():
  """The barrier on each convolution's input survives XLA's CPU pipeline in a train step (the
  pass that removes it is disabled), so the weight gradients read materialised inputs."""
  compiled, state, batch = _resnet_step()
  assert compiled.as_text().count('opt-barrier') >= 19  # one per convolution of ResNet-20
  default = jax.jit(step_lib.train_step).lower(state, batch).compile()
  assert 'opt-barrier' not in default.as_text()
  assert build_lib.train_compiler_options('none', 'gpu') == {}
  assert build_lib.train_compiler_options('blocks', 'gpu') == conv.KEEP_BARRIERS


def test_the_barrier_changes_no_value(monkeypatch):
  results = []
  for barrier in (True, False):
    if not barrier:
      monkeypatch.setattr(conv, 'barrier_conv', lax.conv_general_dilated)
    compiled, state, batch = _resnet_step()
    assert ('opt-barrier' in compiled.as_text()) == barrier
    new_state, metrics = compiled(state, batch)
    results.append((metrics['loss'], new_state.params, new_state.batch_stats))
  (loss0, params0, stats0), (loss1, params1, stats1) = results
  np.testing.assert_allclose(loss0, loss1, rtol=1e-6)
  for a, b in zip(jax.tree.leaves((params0, stats0)), jax.tree.leaves((params1, stats1))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
