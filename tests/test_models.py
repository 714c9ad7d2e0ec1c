"""Every registered model: exact parameter counts, MACs, smallest input, and a forward pass in train
and eval mode (BatchNorm statistics, dropout). ImageNet-size forward passes are marked slow."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_zoo import models
from cnn_zoo.models import summary

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
ALL_FORWARD = SMALL + [pytest.param(n, marks=pytest.mark.slow) for n in IMAGENET]


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


def _runs(name: str, size: int) -> bool:
  """Whether `name`, with its variables for the canonical input, takes a size x size input without
  any layer producing an empty output (torch raises there; XLA would carry on with zeros)."""
  model, (h, w, c) = models.get(name), models.input_shape(name)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, h, w, c))))

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


@functools.cache
def _forward(name: str):
  """Runs `name` at batch 2 on its canonical input: eval and train mode, each with two dropout keys."""
  model, shape = models.get(name), models.input_shape(name)
  x = jax.random.normal(jax.random.key(0), (2, *shape))
  variables = jax.jit(functools.partial(model.init, train=False))(
      {'params': jax.random.key(1), 'dropout': jax.random.key(2)}, x)

  @functools.partial(jax.jit, static_argnums=3)
  def apply(variables, x, key, train):
    return model.apply(variables, x, train=train, rngs={'dropout': key}, mutable=['batch_stats'])

  keys = jax.random.key(3), jax.random.key(4)
  return {'variables': variables,
          'eval': [apply(variables, x, k, False) for k in keys],
          'train': [apply(variables, x, k, True) for k in keys]}


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
  stats = run['variables'].get('batch_stats', {})
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
  model = models.get('googlenet_cifar', aux_logits=True)
  x = jnp.ones((2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  assert {'aux1', 'aux2'} <= set(variables['params'])
  logits, state = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(1)},
                              mutable=['batch_stats', 'intermediates'])
  (aux1, aux2), = state['intermediates']['aux_logits']
  assert logits.shape == aux1.shape == aux2.shape == (2, 10)
  _, state = model.apply(variables, x, mutable=['intermediates'])
  assert 'aux_logits' not in state.get('intermediates', {})  # eval mode skips the heads
