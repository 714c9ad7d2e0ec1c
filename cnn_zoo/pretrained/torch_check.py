"""The outside check: torchvision's own model code against the zoo's, on the same random weights.

Needs PyTorch and torchvision's Python model code (`pip install torch==2.13.0` and
`pip install --no-deps torchvision`). A torchvision wheel built for another torch fails to import
as a package (its C++ operators do not load); its `torchvision.models` and
`torchvision.transforms.functional` modules are plain Python and load without the package's
`__init__`, which `torchvision_models()` and `transforms_functional()` arrange.
"""

import functools
import importlib
import importlib.util
import os
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

from cnn_zoo import models
from cnn_zoo.pretrained import convert, layout

MANIFESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'manifests')
FAMILY_MODULES = ('alexnet', 'vgg', 'googlenet', 'resnet', 'densenet')


@functools.lru_cache(maxsize=1)
def _torchvision_imports() -> bool:
  """Whether torchvision imports as a package. If not, every half-imported torchvision module is
  dropped and 'torchvision' becomes an empty package over the installed files, whose plain-Python
  modules then import one by one (`_bare_package`)."""
  if getattr(sys.modules.get('torchvision'), '_bare', False):
    return False  # made bare by an earlier call
  try:
    import torchvision  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except (ImportError, RuntimeError, OSError):
    pass
  for name in [n for n in sys.modules if n == 'torchvision' or n.startswith('torchvision.')]:
    del sys.modules[name]  # a half-imported package
  spec = importlib.util.find_spec('torchvision')
  if spec is None:
    raise ImportError('torchvision is not installed: pip install --no-deps torchvision')
  _bare_package('torchvision', os.path.dirname(spec.origin))
  return False


def _bare_package(name: str, path: str) -> None:
  """Package `name` over the folder `path`, without running its __init__."""
  package = types.ModuleType(name)
  package.__path__ = [path]
  package._bare = True  # pylint: disable=protected-access
  sys.modules[name] = package


@functools.lru_cache(maxsize=1)
def torchvision_models():
  """torchvision.models, imported whole when torchvision imports, else module by module."""
  if _torchvision_imports():
    import torchvision.models as tvm  # pylint: disable=g-import-not-at-top
    return tvm
  root = sys.modules['torchvision'].__path__[0]
  _bare_package('torchvision.models', os.path.join(root, 'models'))
  namespace = types.SimpleNamespace()
  for family in FAMILY_MODULES:
    module = importlib.import_module(f'torchvision.models.{family}')
    for attr in dir(module):
      if attr in layout.TORCHVISION.values() or attr in ('GoogLeNet',):
        setattr(namespace, attr, getattr(module, attr))
  return namespace


@functools.lru_cache(maxsize=1)
def transforms_functional():
  """torchvision.transforms.functional (pad, crop, hflip, ...), imported the same way: its tensor
  functions are plain Python over torch."""
  _torchvision_imports()  # the transforms package itself is plain Python: it imports as it is
  return importlib.import_module('torchvision.transforms.functional')


def build(name: str, num_classes: int = 1000, aux_logits: bool = True, meta: bool = False):
  """torchvision's counterpart of zoo model `name` (GoogLeNet with its auxiliary heads, as
  torchvision's pretrained file holds them, unless `aux_logits=False`)."""
  import torch  # pylint: disable=g-import-not-at-top
  tvm = torchvision_models()
  kwargs = {'num_classes': num_classes}
  if models.spec(name).family == 'googlenet':
    kwargs.update(aux_logits=aux_logits, transform_input=False, init_weights=True)
  constructor = getattr(tvm, layout.TORCHVISION[name])
  if meta:
    with torch.device('meta'):
      return constructor(**kwargs)
  return constructor(**kwargs)


def manifest(name: str) -> dict[str, list[int]]:
  """Key -> shape of torchvision's state dict of `name` (made on the meta device: no memory)."""
  return {k: list(v.shape) for k, v in build(name, meta=True).state_dict().items()}


def randomise(model, seed: int = 0, size: int = 224) -> None:
  """Every weight drawn at random in place, and the model left in eval mode.

  Convolution and Linear weights N(0, 2 / fan_in), biases N(0, 0.1^2), BatchNorm weights
  U(0.5, 1.5) and biases N(0, 0.1^2). BatchNorm's running statistics are those of a random batch
  of `size` x `size` images (one train-mode pass with a cumulative average), then perturbed per
  channel: means shifted by N(0, 0.1^2) standard deviations, variances scaled by U(0.5, 1.5). So
  they are random and matter, while the activations of a hundred layers keep about unit size
  (statistics drawn from nothing would let deep ResNets' logits grow to 1e12).
  """
  import torch  # pylint: disable=g-import-not-at-top
  generator = torch.Generator().manual_seed(seed)
  normal = lambda shape: torch.randn(shape, generator=generator)
  uniform = lambda shape, lo, hi: lo + (hi - lo) * torch.rand(shape, generator=generator)
  norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
        module.weight.copy_(normal(module.weight.shape) * (2.0 / module.weight[0].numel()) ** 0.5)
        if module.bias is not None:
          module.bias.copy_(normal(module.bias.shape) * 0.1)
    for norm in norms:
      norm.weight.copy_(uniform(norm.weight.shape, 0.5, 1.5))
      norm.bias.copy_(normal(norm.bias.shape) * 0.1)
      norm.reset_running_stats()
      norm.momentum = None  # a cumulative average: after one batch, that batch's statistics
    if norms:
      model.train()
      model(normal((4, 3, size, size)))
    for norm in norms:
      std = norm.running_var.sqrt()
      norm.running_mean.add_(normal(std.shape) * 0.1 * std)
      norm.running_var.mul_(uniform(std.shape, 0.5, 1.5))
      norm.momentum = 0.1
  model.eval()


def compare(name: str, batch: int = 2, size: int = 224, seed: int = 0) -> dict:
  """Eval-mode logits of torchvision's `name` and of the zoo's, converted from its random weights,
  on one random batch: the largest difference relative to the largest logit, and timings."""
  import torch  # pylint: disable=g-import-not-at-top
  model = build(name)
  randomise(model, seed, size)
  images = np.random.default_rng(seed).normal(size=(batch, 3, size, size)).astype(np.float32)
  with torch.no_grad():
    want = model(torch.from_numpy(images)).numpy()
  state_dict = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  started = time.perf_counter()
  variables, num_classes, kwargs = convert.to_zoo(state_dict, name)
  convert_s = time.perf_counter() - started
  zoo = models.get(name, num_classes=num_classes, **kwargs)
  got = np.asarray(jax.jit(lambda v, x: zoo.apply(v, x, train=False))(
      variables, jnp.asarray(images.transpose(0, 2, 3, 1))))
  scale = float(np.abs(want).max())
  return {'model': name, 'tensors': len(state_dict), 'logit_scale': scale,
          'max_abs_diff': float(np.abs(got - want).max()),
          'max_rel_diff': float(np.abs(got - want).max() / scale), 'convert_s': convert_s,
          'same_top1': bool((got.argmax(-1) == want.argmax(-1)).all())}
