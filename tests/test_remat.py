"""Rematerialisation (config.remat) and DenseNet's piecewise layout: the same function, loss,
gradients and BatchNorm statistics under every choice, and a dense block's memory cut by remat."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_zoo import errors, models
from cnn_zoo.models import densenet, norm, remat
from cnn_zoo.train import build as build_lib
from cnn_zoo.train import config as config_lib

# model -> (input size, constructor overrides): every family with blocks, kept small to compile fast.
BLOCK_MODELS = {
    'resnet20': (16, {}),
    'googlenet_cifar': (8, {}),
    'densenet_bc_100': (16, {'block_sizes': (3, 3, 3)}),
}


def _perturbed(variables, seed=3):
  """The variables with every leaf moved off its initial value (BatchNorm's ones and zeros make
  a scale or a running statistic indistinguishable from a dropped one); variances kept positive."""
  leaves, tree = jax.tree_util.tree_flatten(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  moved = [a + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
  out = jax.tree_util.tree_unflatten(tree, moved)
  out['batch_stats'] = jax.tree_util.tree_map(lambda a: jnp.abs(a) + 0.05, out['batch_stats'])
  return out


def _loss_grads_stats(module, variables, x, labels):
  def loss(params):
    logits, updates = module.apply({**variables, 'params': params}, x, train=True,
                                   mutable=['batch_stats'], rngs={'dropout': jax.random.key(7)})
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates
  (value, updates), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables['params'])
  return value, grads, updates['batch_stats']


def _max_relative(a, b):
  return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-12))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


# GoogLeNet's cases compile for over two minutes each on 2 cores: behind the slow marker.
@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n == 'googlenet_cifar'
                                  else n for n in sorted(BLOCK_MODELS)])
@pytest.mark.parametrize('policy', ['blocks', 'dots'])
def test_remat_gives_the_same_loss_gradients_and_statistics(name, policy):
  size, overrides = BLOCK_MODELS[name]
  x = jax.random.normal(jax.random.key(1), (4, size, size, 3))
  labels = jnp.arange(4) % 10
  plain = models.get(name, **overrides)
  variables = _perturbed(plain.init(jax.random.key(0), x[:1]))
  rematerialised = models.get(name, remat=policy, **overrides)
  assert (jax.tree_util.tree_structure(rematerialised.init(jax.random.key(0), x[:1]))
          == jax.tree_util.tree_structure(variables))  # same names: checkpoints load either way
  loss0, grads0, stats0 = _loss_grads_stats(plain, variables, x, labels)
  loss1, grads1, stats1 = _loss_grads_stats(rematerialised, variables, x, labels)
  assert abs(float(loss1 - loss0)) <= 1e-6 * abs(float(loss0))
  assert _max_relative(grads1, grads0) < 1e-5
  assert _max_relative(stats1, stats0) < 1e-6


def test_remat_recomputes_in_the_backward_pass():
  """Under 'blocks' the gradient's program holds the block's forward a second time (a remat
  call); without remat it holds none."""
  x = jnp.ones((2, 8, 8, 3))
  jaxprs = {}
  for policy in ('none', 'blocks'):
    module = models.get('resnet20', remat=policy)
    variables = module.init(jax.random.key(0), x)
    loss = lambda p: module.apply({**variables, 'params': p}, x, train=True,
                                  mutable=['batch_stats'])[0].sum()
    jaxprs[policy] = str(jax.make_jaxpr(jax.grad(loss))(variables['params']))
  assert 'remat' not in jaxprs['none'] and 'checkpoint' not in jaxprs['none']
  assert jaxprs['blocks'].count('remat') + jaxprs['blocks'].count('checkpoint') >= 9


def test_an_unknown_policy_or_a_model_without_blocks_is_refused():
  with pytest.raises(ValueError, match="remat='all' is not valid; valid choices: none, blocks, dots"):
    remat.block(densenet.DenseLayer, 'all')
  config = config_lib.defaults()
  config.model, config.remat = 'vgg11_bn_cifar', 'blocks'
  with pytest.raises(errors.ConfigError, match="config.remat='blocks': model 'vgg11_bn_cifar' "
                                               r"\(vgg\) has no blocks"):
    config_lib.validate(config)
  config.model, config.remat = 'resnet20', 'sometimes'
  with pytest.raises(errors.ConfigError, match='remat'):
    config_lib.validate(config)


class _ConcatenatingDenseNet(nn.Module):
  """DenseNet as the paper draws it: every layer concatenates its output to its input and each
  BatchNorm computes its own statistics over the whole concatenation. The reference that the
  zoo's piecewise layout must equal; variables named as the zoo's."""
  block_sizes: tuple
  growth_rate: int = 12
  init_features: int = 24

  @nn.compact
  def __call__(self, x, train=False):
    bn = functools.partial(norm.batch_norm, train, jnp.float32)
    conv = functools.partial(nn.Conv, use_bias=False)
    x = conv(self.init_features, (3, 3), padding=((1, 1), (1, 1)), name='Conv_0')(x)
    layer = 0
    for i, size in enumerate(self.block_sizes):
      for _ in range(size):
        scope = _Layer(self.growth_rate, name=f'DenseLayer_{layer}')
        x = jnp.concatenate([x, scope(x, train)], axis=-1)
        layer += 1
      x = nn.relu(bn(name=f'BatchNorm_{i}')(x))
      if i < len(self.block_sizes) - 1:
        x = conv(x.shape[-1] // 2, (1, 1), name=f'Conv_{i + 1}')(x)
        x = nn.avg_pool(x, (2, 2), (2, 2))
    return nn.Dense(10, name='Dense_0')(x.mean((1, 2)))


class _Layer(nn.Module):
  growth_rate: int

  @nn.compact
  def __call__(self, x, train):
    bn = functools.partial(norm.batch_norm, train, jnp.float32)
    y = nn.Conv(4 * self.growth_rate, (1, 1), use_bias=False, name='Conv_0')(
        nn.relu(bn(name='BatchNorm_0')(x)))
    y = nn.relu(bn(name='BatchNorm_1')(y))
    return nn.Conv(self.growth_rate, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                   name='Conv_1')(y)


@pytest.mark.parametrize('policy', ['none', pytest.param('blocks', marks=pytest.mark.slow)])
def test_densenet_pieces_compute_what_concatenation_computes(policy):
  """Outputs (train and eval), loss gradients and updated BatchNorm statistics of the zoo's
  DenseNet-BC equal those of the concatenating reference with the same variables."""
  sizes = (3, 2, 2)
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  labels = jnp.arange(4) % 10
  zoo = models.get('densenet_bc_100', block_sizes=sizes, conv_impl='xla', remat=policy)
  reference = _ConcatenatingDenseNet(sizes)
  variables = _perturbed(zoo.init(jax.random.key(0), x[:1]))
  assert (jax.tree_util.tree_structure(reference.init(jax.random.key(0), x[:1]))
          == jax.tree_util.tree_structure(variables))
  for train in (False, True):
    out = zoo.apply(variables, x, train=train, mutable=['batch_stats'])[0]
    expected = reference.apply(variables, x, train=train, mutable=['batch_stats'])[0]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * float(jnp.abs(expected).max()))
  loss0, grads0, stats0 = _loss_grads_stats(reference, variables, x, labels)
  loss1, grads1, stats1 = _loss_grads_stats(zoo, variables, x, labels)
  assert abs(float(loss1 - loss0)) <= 1e-5 * abs(float(loss0))
  assert _max_relative(grads1, grads0) < 1e-4
  assert _max_relative(stats1, stats0) < 1e-5


def _train_step_temp_bytes(layers: int, policy: str) -> int:
  config = config_lib.defaults()
  config.model, config.remat = 'densenet_bc_100', policy
  config.batch_size, config.image_size = 8, 32
  config.model_kwargs = {'block_sizes': (layers,)}
  built = build_lib.build(config, build_lib.fixed_plan(config, 10))
  compiled = built.compile_train(jax.eval_shape(built.init))
  return compiled.memory_analysis().temp_size_in_bytes


def test_remat_makes_a_dense_blocks_memory_linear_in_its_depth():
  """The train step's temporaries (XLA's buffer assignment) for one dense block of 8, 16 and 32
  layers at 32x32, batch 8. With remat each doubling of the depth adds about twice what the
  previous one added (linear; measured 15 then 31 MiB), where without `accumulate_here` it added
  3.6x (159 after 44 MiB); and the 32-layer block keeps under an eighth of what it keeps without
  remat (measured 95 against 1,223 MiB)."""
  temp = {layers: _train_step_temp_bytes(layers, 'blocks') for layers in (8, 16, 32)}
  assert temp[32] - temp[16] < 2.3 * (temp[16] - temp[8]), temp
  assert temp[32] < _train_step_temp_bytes(32, 'none') / 8, temp
