"""Fixed-weight reference outputs, one or more models per family: any change of function (a
BatchNorm epsilon or momentum, a missing ReLU, a layer's order), not only of parameter count, fails.

The weights come from a seeded numpy generator, not from the models' initialisers, so changing an
initialiser changes nothing here; model.init only gives the variables' structure. A deliberate
change of architecture regenerates the committed numbers:

  python -m tests.test_reference_outputs    # rewrites tests/data/reference_outputs.json
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_zoo import models

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'reference_outputs.json')
# case -> (model, input size, constructor overrides, slow): the 32x32 forms, DenseNet-BC's layers
# in short blocks (the whole of it compiles for 20 s), and two ImageNet ResNets at reduced sizes.
CASES = {
    'lenet5': ('lenet5', 32, {}, False),
    'alexnet_cifar': ('alexnet_cifar', 32, {}, False),
    'zfnet_cifar': ('zfnet_cifar', 32, {}, False),
    'vgg11_bn_cifar': ('vgg11_bn_cifar', 32, {}, False),
    'resnet20': ('resnet20', 32, {}, False),
    'densenet_bc_100/blocks_2_2_2': ('densenet_bc_100', 32, {'block_sizes': (2, 2, 2)}, False),
    'googlenet_cifar': ('googlenet_cifar', 16, {}, False),
    'resnet18': ('resnet18', 64, {}, False),
    'densenet_bc_100': ('densenet_bc_100', 32, {}, True),
    'resnet50': ('resnet50', 64, {}, True),
}
RTOL = 1e-4


def _fixed_variables(model, shape, seed=0):
  """Every leaf drawn from default_rng(seed) in tree order, whatever the model's initialisers.

  Kernels: normal / sqrt(fan_in). Biases: small normals. BatchNorm: running variances log-uniform
  over [1e-2, 1] with scale ~ sqrt(var), so that epsilon matters in the small-variance channels
  while activations keep their size through a hundred layers; running means small normals.
  """
  init = lambda x: model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x,
                              train=False)
  abstract = jax.eval_shape(init, jax.ShapeDtypeStruct((1, *shape), jnp.float32))
  rng = np.random.default_rng(seed)
  variances = {}

  def fill(path, leaf):
    keys = tuple(getattr(p, 'key', None) for p in path)
    name, owner = keys[-1], keys[1:-1]
    if keys[0] == 'batch_stats' and name == 'var':
      v = np.exp(rng.uniform(np.log(1e-2), 0.0, leaf.shape))
      variances[owner] = v
      return v
    if keys[0] == 'batch_stats':  # mean
      return 0.1 * rng.normal(size=leaf.shape)
    if name == 'kernel':
      return rng.normal(size=leaf.shape) / math.sqrt(int(np.prod(leaf.shape[:-1])))
    if name == 'scale':
      return rng.uniform(0.5, 1.5, leaf.shape) * np.sqrt(variances.get(owner, 1.0))
    return 0.1 * rng.normal(size=leaf.shape)  # biases

  # batch_stats first: a BatchNorm's scale follows its running variance.
  ordered = {'batch_stats': abstract.get('batch_stats', {}), 'params': abstract['params']}
  filled = jax.tree_util.tree_map_with_path(fill, ordered)
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), filled)


def _projection(tree, seed):
  """sum(leaf * r) over the leaves, with r a fixed random normal per leaf; and sum(|leaf * r|)."""
  rng = np.random.default_rng(seed)
  total, scale = 0.0, 0.0
  for leaf in jax.tree.leaves(tree):
    terms = np.asarray(leaf, np.float64) * rng.normal(size=leaf.shape)
    total, scale = total + terms.sum(), scale + np.abs(terms).sum()
  return total, scale


def outputs(case: str) -> dict:
  """Eval-mode logits of two fixed images, and the running statistics after one train-mode call."""
  name, size, overrides, _ = CASES[case]
  model = models.get(name, num_classes=10, **overrides)  # ten logits per image are enough
  shape = (size, size, models.input_shape(name)[2])
  variables = _fixed_variables(model, shape)
  images = jnp.asarray(np.random.default_rng(1).normal(size=(2, *shape)), jnp.float32)

  def both_modes(variables, images):
    logits = model.apply(variables, images, train=False)
    if not variables['batch_stats']:
      return logits, {}
    _, updates = model.apply(variables, images, train=True, mutable=('batch_stats',),
                             rngs={'dropout': jax.random.key(0)})
    return logits, updates['batch_stats']

  # One compilation, unoptimised: a third of the time of an optimised one for GoogLeNet's
  # hundreds of layers (and of op-by-op execution), with the same values to 1e-7.
  compiled = jax.jit(both_modes).lower(variables, images).compile(
      compiler_options={'xla_backend_optimization_level': 0})
  logits, stats = compiled(variables, images)
  result = {'eval_logits': np.asarray(logits).tolist()}
  if variables['batch_stats']:
    # The change of the running statistics: the momentum's share of the batch's own statistics.
    change = jax.tree.map(jnp.subtract, stats, variables['batch_stats'])
    for kind in ('mean', 'var'):
      leaves = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(change)[0]
                if path[-1].key == kind]
      result[f'{kind}_change'], result[f'{kind}_change_scale'] = _projection(leaves, seed=2)
  return result


def regenerate():
  os.makedirs(os.path.dirname(PATH), exist_ok=True)
  with open(PATH, 'w', encoding='utf-8') as f:
    json.dump({case: outputs(case) for case in CASES}, f, indent=1)
    f.write('\n')


@pytest.fixture(scope='module')
def reference():
  with open(PATH, encoding='utf-8') as f:
    return json.load(f)


def test_every_family_has_a_reference(reference):
  assert set(reference) == set(CASES)
  families = {models.spec(n).family for n in models.names()}
  assert {models.spec(c[0]).family for c in CASES.values() if not c[3]} == families


@pytest.mark.parametrize('case', [pytest.param(c, marks=[pytest.mark.slow] if v[3] else [])
                                  for c, v in CASES.items()])
def test_fixed_weights_give_the_reference_outputs(reference, case):
  got, want = outputs(case), reference[case]
  assert set(got) == set(want)
  logits = np.asarray(want['eval_logits'])
  np.testing.assert_allclose(got['eval_logits'], logits, rtol=RTOL,
                             atol=RTOL * np.abs(logits).max())
  for kind in ('mean', 'var'):
    if f'{kind}_change' in want:
      assert abs(got[f'{kind}_change'] - want[f'{kind}_change']) <= \
          RTOL * want[f'{kind}_change_scale'], (kind, got[f'{kind}_change'], want[f'{kind}_change'])


if __name__ == '__main__':
  regenerate()
