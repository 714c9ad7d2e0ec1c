"""Every registered model: exact parameter counts, MACs, smallest input, and a forward pass in train
and eval mode (BatchNorm statistics, dropout). ImageNet-size forward passes and the deeper CIFAR
ResNets are marked slow."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_zoo import models
from cnn_zoo.models import pooling, summary

# Trainable parameters at the default number of classes: torchvision's counts for the ImageNet
# models, the papers' or reference implementations' for the others (see each family's docstring).
EXPECTED_PARAMS = {
    'lenet5': 61_706, 'lenet5_fc100': 63_802,
    'alexnet': 61_100_840, 'zfnet': 62_357_608,
    'alexnet_cifar': 2_472_266, 'zfnet_cifar': 3_729_034,
    'vgg11': 132_863_336, 'vgg13': 133_047_848, 'vgg16': 138_357_544, 'vgg19': 143_667_240,
    'vgg11_bn': 132_868_840, 'vgg13_bn': 133_053_736, 'vgg16_bn': 138_365_992,
    'vgg19_bn': 143_678_248,
    'vgg11_bn_cifar': 9_231_114, 'vgg13_bn_cifar': 9_416_010, 'vgg16_bn_cifar': 14_728_266,
    'vgg19_bn_cifar': 20_040_522,
    'googlenet': 6_624_904, 'googlenet_cifar': 5_490_986,
    'resnet18': 11_689_512, 'resnet34': 21_797_672, 'resnet50': 25_557_032,
    'resnet101': 44_549_160, 'resnet152': 60_192_808,
    'resnet20': 269_722, 'resnet32': 464_154, 'resnet44': 658_586, 'resnet56': 853_018,
    'resnet110': 1_727_962,
    'densenet121': 7_978_856, 'densenet169': 14_149_480, 'densenet201': 20_013_928,
    'densenet_bc_100': 769_162,
}

# Forward GMACs at 224x224 (convolutions and dense layers), as torchvision's model tables give them.
EXPECTED_GMACS = {
    'alexnet': 0.714, 'zfnet': 1.168,
    'vgg11': 7.609, 'vgg13': 11.308, 'vgg16': 15.470, 'vgg19': 19.632,
    'vgg11_bn': 7.609, 'vgg13_bn': 11.308, 'vgg16_bn': 15.470, 'vgg19_bn': 19.632,
    'googlenet': 1.498,
    'resnet18': 1.814, 'resnet34': 3.664, 'resnet50': 4.089, 'resnet101': 7.801,
    'resnet152': 11.514,
    'densenet121': 2.834, 'densenet169': 3.360, 'densenet201': 4.291,
}

# The models with dropout layers; every other model must be deterministic in train mode too.
HAS_DROPOUT = {'alexnet', 'zfnet', 'googlenet', 'googlenet_cifar',
               *(f'vgg{d}{bn}' for d in (11, 13, 16, 19) for bn in ('', '_bn'))}

IMAGENET = [n for n in models.names() if models.input_shape(n)[0] == 224]
SMALL = [n for n in models.names() if models.input_shape(n)[0] <= 32]
# The deeper CIFAR ResNets are resnet20's constructor with more blocks (20-60 s each to compile).
DEEP_CIFAR = {'resnet44', 'resnet56', 'resnet110'}
ALL_FORWARD = ([pytest.param(n, marks=pytest.mark.slow) if n in DEEP_CIFAR else n for n in SMALL]
               + [pytest.param(n, marks=pytest.mark.slow) for n in IMAGENET])


@functools.cache
def _summary(name: str) -> summary.Summary:
  return summary.summarize(models.get(name), models.input_shape(name))


def test_every_model_has_an_expected_count():
  assert set(models.names()) == set(EXPECTED_PARAMS)
  assert set(IMAGENET) == set(EXPECTED_GMACS)
  assert set(IMAGENET) | set(SMALL) == set(models.names())


@pytest.mark.parametrize('name', models.names())
def test_param_count(name):
  assert _summary(name).params == EXPECTED_PARAMS[name]


@pytest.mark.parametrize('name', IMAGENET)
def test_imagenet_macs(name):
  assert _summary(name).macs / 1e9 == pytest.approx(EXPECTED_GMACS[name], rel=0.01)


def test_googlenet_aux_logits_count():
  s = summary.summarize(models.get('googlenet', aux_logits=True), (224, 224, 3))
  assert s.params == 13_004_888  # torchvision's GoogLeNet(aux_logits=True)


@pytest.mark.parametrize('name', models.names())
def test_dtype_sets_compute_not_params(name):
  model = models.get(name, dtype=jnp.bfloat16)
  x = jnp.zeros((1, *models.input_shape(name)), jnp.float32)
  logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert logits.dtype == jnp.bfloat16


def test_adaptive_avg_pool_matches_torch_windows():
  x = np.random.default_rng(0).standard_normal((2, 14, 13, 3)).astype(np.float32)
  for out in (1, 4, 6, 7, 14, 20):
    # torch's window i along a side of n: [floor(i * n / out), ceil((i + 1) * n / out))
    win = lambda i, n: slice(i * n // out, -(-(i + 1) * n // out))
    want = np.array([[x[:, win(i, 14), win(j, 13)].mean(axis=(1, 2)) for j in range(out)]
                     for i in range(out)]).transpose(2, 0, 1, 3)
    np.testing.assert_allclose(pooling.adaptive_avg_pool(x, out), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('size,window,stride,padding,ceil_mode,expected', [
    (112, 3, 2, 0, True, 56), (56, 3, 2, 0, True, 28), (28, 3, 2, 0, True, 14),
    (14, 2, 2, 0, True, 7), (13, 3, 2, 0, True, 6), (7, 3, 1, 1, True, 7),
    (110, 3, 2, 1, False, 55), (26, 3, 2, 1, False, 13), (112, 3, 2, 1, False, 56),
    (5, 2, 2, 0, False, 2), (2, 3, 2, 0, True, 1)])
def test_max_pool_output_size_as_torch(size, window, stride, padding, ceil_mode, expected):
  x = -np.arange(size * size, dtype=np.float32).reshape(1, size, size, 1) - 1  # all negative
  y = pooling.max_pool(jnp.asarray(x), window, stride, padding, ceil_mode)
  assert y.shape == (1, expected, expected, 1)
  assert (y < 0).all()  # padding is -inf, never 0
  assert y[0, 0, 0, 0] == x[0, :window - padding, :window - padding, 0].max()


@pytest.mark.parametrize('size,window,stride,padding,ceil_mode', [
    (8, 3, 1, 1, True), (15, 3, 2, 0, True), (14, 3, 2, 1, False), (9, 3, 2, 0, True)])
def test_max_pool_values_and_gradient_equal_reduce_window(size, window, stride, padding, ceil_mode):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  out = pooling._pool_output_size(size, window, stride, padding, ceil_mode)
  pads = ((padding, max(0, (out - 1) * stride + window - size - padding)),) * 2
  reference = lambda x: nn.max_pool(x, (window, window), strides=(stride, stride), padding=pads)
  ours = lambda x: pooling.max_pool(x, window, stride, padding, ceil_mode)
  np.testing.assert_array_equal(jax.jit(ours)(x), reference(x))
  loss = lambda pool: lambda x: jnp.sum(pool(x) ** 2)
  np.testing.assert_array_equal(jax.jit(jax.grad(loss(ours)))(x), jax.grad(loss(reference))(x))


def test_max_pool_gradient_goes_to_the_first_maximum_as_in_pytorch():
  # All ties: each window's gradient lands on its first (row-major) element, which
  # torch.nn.MaxPool2d(3, 1, 1) gives for a 4x4 input of zeros.
  grad = jax.grad(lambda x: pooling.max_pool(x, 3, 1, 1).sum())(jnp.zeros((1, 4, 4, 1)))
  np.testing.assert_array_equal(grad[0, :, :, 0], [[4, 2, 2, 0], [2, 1, 1, 0], [2, 1, 1, 0],
                                                   [0, 0, 0, 0]])


def test_max_pool_refuses_a_too_small_input():
  with pytest.raises(ValueError, match='max pool'):
    pooling.max_pool(jnp.zeros((1, 2, 2, 1)), 3, 2)


@functools.cache
def _variable_shapes(name: str):
  x = jnp.zeros((1, *models.input_shape(name)))
  return jax.eval_shape(models.get(name).init, jax.random.key(0), x)


def _runs(name: str, size: int) -> bool:
  """Whether `name`, with its variables for the canonical input, takes a size x size input without
  any layer producing an empty output (torch raises there; XLA would carry on with zeros)."""
  model, c = models.get(name), models.input_shape(name)[2]
  variables = _variable_shapes(name)

  def no_empty_outputs(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    if any(0 in leaf.shape for leaf in jax.tree.leaves(y)):
      raise ValueError(f'{"/".join(context.module.path)} has an empty output')
    return y

  def apply(v):
    with nn.intercept_methods(no_empty_outputs):
      return model.apply(v, jnp.zeros((1, size, size, c)))

  try:
    jax.eval_shape(apply, variables)
  except Exception:  # shape errors of every kind
    return False
  return True


@pytest.mark.parametrize('name', models.names())
def test_min_input_size_is_the_smallest_that_runs(name):
  size = models.spec(name).min_input_size
  assert _runs(name, size)
  assert size == 1 or not _runs(name, size - 1)


def _random_variables(model: nn.Module, x) -> dict:
  """Variables of init's shapes, drawn with numpy: kernels ~ N(0, 1/fan_in), BatchNorm scale and
  variance 1, biases and means 0. Compiling flax's initializers for every model would cost more
  than the forward passes under test."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    name = path[-1].key
    if name in ('scale', 'var'):
      return np.ones(leaf.shape, leaf.dtype)
    if name in ('bias', 'mean'):
      return np.zeros(leaf.shape, leaf.dtype)
    fan_in = math.prod(leaf.shape[:-1])
    return (rng.standard_normal(leaf.shape) / math.sqrt(fan_in)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.cache
def _forward(name: str):
  """Runs `name` at batch 2 on its canonical input, in eval and in train mode, each with two dropout
  keys, in one compiled program. Returns the initial batch_stats and, per mode, two (logits,
  updates); the parameters are dropped, so that the cache stays small."""
  model, shape = models.get(name), models.input_shape(name)
  x = jax.random.normal(jax.random.key(0), (2, *shape))
  variables = _random_variables(model, x)

  @jax.jit
  def run(variables, x, keys):
    apply = lambda train, key: model.apply(variables, x, train=train, rngs={'dropout': key},
                                           mutable=['batch_stats'])
    return {'eval': [apply(False, k) for k in keys], 'train': [apply(True, k) for k in keys]}

  outputs = run(variables, x, (jax.random.key(3), jax.random.key(4)))
  return {'batch_stats': variables.get('batch_stats', {}), **outputs}


@pytest.mark.parametrize('name', ALL_FORWARD)
def test_forward_shape_and_finite(name):
  logits, _ = _forward(name)['eval'][0]
  assert logits.shape == (2, models.spec(name).num_classes)
  assert np.isfinite(np.asarray(logits, np.float32)).all()
  train_logits, _ = _forward(name)['train'][0]
  assert np.isfinite(np.asarray(train_logits, np.float32)).all()


@pytest.mark.parametrize('name', ALL_FORWARD)
def test_batch_stats_change_in_train_mode_only(name):
  run = _forward(name)
  stats = run['batch_stats']
  (_, eval_updates), (_, train_updates) = run['eval'][0], run['train'][0]
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
  if not stats:  # no BatchNorm
    assert not jax.tree.leaves(eval_updates) and not jax.tree.leaves(train_updates)
    return
  assert same(eval_updates['batch_stats'], stats)
  new_stats = train_updates['batch_stats']
  assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), new_stats, stats))
  assert all(changed), 'every running statistic moves after a train step on random data'


@pytest.mark.parametrize('name', ALL_FORWARD)
def test_dropout_only_in_train_mode(name):
  run = _forward(name)
  (eval1, _), (eval2, _) = run['eval']
  (train1, _), (train2, _) = run['train']
  np.testing.assert_array_equal(eval1, eval2)
  differ = not np.array_equal(train1, train2)
  assert differ == (name in HAS_DROPOUT)


def test_googlenet_aux_logits_in_train_mode():
  model, x = models.get('googlenet_cifar', aux_logits=True), jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert {'aux1', 'aux2'} <= set(variables['params'])
  apply = lambda v, train: model.apply(v, x, train=train, rngs={'dropout': jax.random.key(1)},
                                       mutable=['batch_stats', 'intermediates'])
  logits, state = jax.eval_shape(functools.partial(apply, train=True), variables)
  (aux1, aux2), = state['intermediates']['aux_logits']
  assert logits.shape == aux1.shape == aux2.shape == (2, 10)
  _, state = jax.eval_shape(functools.partial(apply, train=False), variables)
  assert 'aux_logits' not in state.get('intermediates', {})  # eval mode skips the heads
