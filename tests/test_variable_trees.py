"""Every registered model's variables are named, shaped and initialised as the code before
`layers.Layers` (commit e286f77) made them: tests/data/variable_trees.json, written by that code,
holds each model's params and batch_stats tree (path -> dtype and shape) and digests of the
initial values of a few small models, one per initialisation rule. So every checkpoint and every
converted torchvision state dict written before loads as before, and a fresh run starts where it
started.

The file was written from a checkout of e286f77 with this module run as a script:
  git archive e286f77 | tar -x -C /tmp/old && cd /tmp/old && \
      PYTHONPATH=. python /path/to/tests/test_variable_trees.py --write /path/to/golden.json e286f77
"""

import hashlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_zoo import models

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'variable_trees.json')
COLLECTIONS = ('params', 'batch_stats')  # what a checkpoint holds besides the optimizer state
# Models with constructor overrides beyond the registry's: GoogLeNet's auxiliary heads are what
# torchvision's pretrained file holds.
EXTRA_TREES = {'googlenet+aux_logits': ('googlenet', {'aux_logits': True})}
# case -> (model, weight_init, constructor overrides): a small model of every initializers.PAPER
# rule, and flax's defaults; the DenseNets cut to one layer a block (their init compiles for
# minutes), which starts each layer kind as the full ones.
DIGESTS = {
    'lenet5 paper': ('lenet5', 'paper', {}), 'lenet5 flax': ('lenet5', 'flax', {}),
    'alexnet_cifar paper': ('alexnet_cifar', 'paper', {}),
    'vgg11_bn_cifar paper': ('vgg11_bn_cifar', 'paper', {}),
    'vgg11_bn_cifar flax': ('vgg11_bn_cifar', 'flax', {}),
    'resnet18 paper': ('resnet18', 'paper', {}), 'resnet20 paper': ('resnet20', 'paper', {}),
    'resnet20 flax': ('resnet20', 'flax', {}),
    'densenet121/1111 paper': ('densenet121', 'paper', {'block_sizes': (1, 1, 1, 1)}),
    'densenet_bc_100/111 paper': ('densenet_bc_100', 'paper', {'block_sizes': (1, 1, 1)}),
    'googlenet_cifar paper': ('googlenet_cifar', 'paper', {}),
}
SLOW = {'resnet101', 'resnet152', 'densenet169', 'densenet201', 'googlenet_cifar paper'}


def _cases(names):
  return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(names)]


def tree_cases() -> dict:
  """{case: (model name, constructor overrides)}: every registered model, and EXTRA_TREES."""
  return {**{name: (name, {}) for name in models.names()}, **EXTRA_TREES}


def _path(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def variable_tree(name: str, **overrides) -> dict:
  """{collection: {path: 'float32[3, 3, 3, 64]'}} of `name`'s variables at its canonical input,
  traced abstractly (nothing is computed)."""
  model = models.get(name, **overrides)
  x = jax.ShapeDtypeStruct((1, *models.input_shape(name)), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)},
                           x, train=False), x)
  return {c: {_path(p): f'{leaf.dtype}{list(leaf.shape)}'
              for p, leaf in jax.tree_util.tree_flatten_with_path(variables.get(c, {}))[0]}
          for c in COLLECTIONS}


def init_digest(name: str, weight_init: str, **overrides) -> str:
  """A digest of the paths and values of `name`'s params and batch_stats as a jitted model.init
  makes them from PRNGKey(0) on a 32 x 32 input."""
  model = models.get(name, weight_init=weight_init, **overrides)
  h, _, c = models.input_shape(name)
  size = min(h, 32)
  init = jax.jit(lambda: model.init({'params': jax.random.PRNGKey(0),
                                     'dropout': jax.random.PRNGKey(1)},
                                    jnp.zeros((1, size, size, c)), train=False))
  variables = jax.device_get(init())
  digest = hashlib.sha256()
  for collection in COLLECTIONS:
    for p, leaf in jax.tree_util.tree_flatten_with_path(variables.get(collection, {}))[0]:
      digest.update(f'{collection}/{_path(p)}'.encode())
      digest.update(np.asarray(leaf).tobytes())
  return digest.hexdigest()[:16]


def _golden() -> dict:
  with open(GOLDEN, encoding='utf-8') as f:
    return json.load(f)


@pytest.mark.parametrize('case', _cases(tree_cases()))
def test_every_model_has_the_variable_tree_it_had(case):
  name, overrides = tree_cases()[case]
  assert variable_tree(name, **overrides) == _golden()['trees'][case]


def test_the_golden_file_covers_every_registered_model():
  assert sorted(_golden()['trees']) == sorted(tree_cases())


@pytest.mark.parametrize('impls', [{'conv_impl': 'xla'}, {'conv_impl': 'im2col'},
                                   {'conv_impl': 'im2col_bf16'}, {'norm_impl': 'flax'},
                                   {'dtype': jnp.bfloat16}])
def test_every_layer_choice_keeps_the_tree(impls):
  """Convolution, BatchNorm and activation dtype change what is computed, never the variables."""
  for name in ('resnet20', 'vgg11_bn_cifar'):
    assert variable_tree(name, **impls) == _golden()['trees'][name], (name, impls)


@pytest.mark.parametrize('case', _cases(DIGESTS))
def test_initial_values_are_bit_for_bit_those_of_before(case):
  golden = _golden()
  name, weight_init, overrides = DIGESTS[case]
  assert init_digest(name, weight_init, **overrides) == golden['digests'][case], (
      f'recorded with jax {golden["jax"]}, running {jax.__version__}')


def write(path: str, commit: str) -> None:
  """Records the trees and digests of the code at hand (`commit`) into `path`."""
  out = {'written_by': f'tests/test_variable_trees.py --write, code of {commit}',
         'jax': jax.__version__,
         'trees': {case: variable_tree(name, **overrides)
                   for case, (name, overrides) in sorted(tree_cases().items())},
         'digests': {case: init_digest(name, rule, **overrides)
                     for case, (name, rule, overrides) in sorted(DIGESTS.items())}}
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(out, f, indent=1, sort_keys=True)
    f.write('\n')


if __name__ == '__main__':
  if len(sys.argv) != 4 or sys.argv[1] != '--write':
    sys.exit(f'usage: python {sys.argv[0]} --write PATH COMMIT')
  write(sys.argv[2], sys.argv[3])
