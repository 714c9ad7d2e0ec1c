"""torchvision state dicts to the zoo's variables and back, exactly.

Layouts: convolution weights are OIHW in torchvision and HWIO in the zoo; Linear weights (out, in)
and (in, out); the first Linear after a flatten (AlexNet's and VGG's classifier, GoogLeNet's
auxiliary heads) sees its input in torchvision's NCHW flatten order and in the zoo's NHWC order, so
its input features are re-ordered; BatchNorm's weight and bias are the zoo's `params` scale and
bias, its running mean and variance the zoo's `batch_stats` mean and var. Every other tensor of a
state dict is an error, as is any key missing; the only tensors without a zoo leaf are BatchNorm's
`num_batches_tracked` counters, which are checked and dropped (and written as 0 by `to_torchvision`,
so that PyTorch's strict `load_state_dict` takes the result). Both directions only transpose and
reshape: a round trip is bit-exact.
"""

import re
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from cnn_zoo import errors
from cnn_zoo import models
from cnn_zoo.pretrained import layout
from cnn_zoo.pretrained.layout import BATCH_NORM, BATCHES_TRACKED, CONV, LINEAR

# Old torchvision DenseNet files name BatchNorm and conv layers 'norm.1', 'conv.2' where the
# modules say 'norm1', 'conv2' (torchvision renames them when it loads such a file).
_OLD_DENSENET_KEY = re.compile(r'^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\.'
                               r'(weight|bias|running_mean|running_var|num_batches_tracked)$')


def _shape(shape) -> str:
  return '(' + ', '.join(str(d) for d in shape) + ')'


def normalise_keys(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Undoes two common wrappings of keys: a 'module.' prefix on every key (a model saved inside
  torch.nn.DataParallel) and the old DenseNet names."""
  keys = list(state_dict)
  if keys and all(k.startswith('module.') for k in keys):
    state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
  return {_OLD_DENSENET_KEY.sub(r'\1\2.\3', k): v for k, v in state_dict.items()}


def _to_zoo_leaf(entry: layout.Entry, key: str, value: np.ndarray) -> np.ndarray:
  """One tensor in torchvision's layout -> the zoo's (shape errors are caught by the caller)."""
  if not key.endswith('.weight') or entry.kind == BATCH_NORM:
    return value
  if entry.kind == CONV:
    return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
  if value.ndim != 2:
    return value
  if entry.flat_from is not None and value.shape[1] == int(np.prod(entry.flat_from)):
    c, h, w = entry.flat_from
    return value.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
  return value.T


def _to_torchvision_leaf(entry: layout.Entry, key: str, value: np.ndarray) -> np.ndarray:
  """One zoo leaf -> torchvision's layout: the inverse of `_to_zoo_leaf`."""
  if not key.endswith('.weight') or entry.kind == BATCH_NORM:
    return value
  if entry.kind == CONV:
    return value.transpose(3, 2, 0, 1)
  if entry.flat_from is not None:
    c, h, w = entry.flat_from
    return value.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w)
  return value.T


def _zoo_place(entry: layout.Entry, key: str) -> tuple[str, ...]:
  """('params' or 'batch_stats', *module path, leaf name) of one state dict key."""
  field = key[len(entry.prefix) + 1:]
  if entry.kind == BATCH_NORM:
    collection, leaf = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
                        'running_mean': ('batch_stats', 'mean'),
                        'running_var': ('batch_stats', 'var')}[field]
  else:
    collection, leaf = 'params', {'weight': 'kernel', 'bias': 'bias'}[field]
  return (collection, *entry.path, leaf)


def _get(tree, place):
  for k in place:
    tree = tree[k]
  return tree


def _set(tree: dict, place, value) -> None:
  for k in place[:-1]:
    tree = tree.setdefault(k, {})
  tree[place[-1]] = value


def abstract_variables(name: str, num_classes: int, model_kwargs: dict | None = None):
  """The shapes and dtypes of zoo model `name`'s variables, without computing any."""
  module = models.get(name, num_classes=num_classes, **(model_kwargs or {}))
  shape = (1, *models.input_shape(name))
  init = lambda x: module.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x,
                               train=False)
  return jax.eval_shape(init, jax.ShapeDtypeStruct(shape, jnp.float32))


def model_kwargs_of(name: str, state_dict: Mapping[str, np.ndarray]) -> dict:
  """The constructor overrides a state dict needs: GoogLeNet's auxiliary heads when it has them."""
  if models.spec(name).family == 'googlenet' and any(k.startswith('aux1.') for k in state_dict):
    return {'aux_logits': True}
  return {}


def _limit(keys: list[str], n: int = 3) -> str:
  shown = ', '.join(repr(k) for k in keys[:n])
  return shown + (f' and {len(keys) - n} more' if len(keys) > n else '')


def to_zoo(state_dict: Mapping[str, np.ndarray], name: str,
           where: str = 'the state dict') -> tuple[dict, int, dict]:
  """A torchvision state dict (numpy arrays) -> (variables, num_classes, model_kwargs) of zoo
  model `name`. `where` names the source in errors (the file).

  The number of classes is read from the classifier, so a torchvision model fine-tuned to other
  classes converts too. Any key missing, left over or of a shape the model cannot take is a
  one-line `DataError` naming the key and the shapes.
  """
  layout.check_convertible(name)
  state_dict = normalise_keys(state_dict)
  kwargs = model_kwargs_of(name, state_dict)
  entries = layout.entries(name, aux_logits=bool(kwargs.get('aux_logits')))
  owner = {key: e for e in entries for key in e.keys()}
  counters = {f'{e.prefix}.{BATCHES_TRACKED}' for e in entries if e.kind == BATCH_NORM}
  missing = [k for k in owner if k not in state_dict]
  extra = [k for k in state_dict if k not in owner and k not in counters]
  if extra:
    raise errors.DataError(
        f'{where}: key(s) {_limit(extra)} (shape {_shape(np.shape(state_dict[extra[0]]))}) have '
        f'no place in {name} (torchvision\'s {layout.TORCHVISION[name]}); is it a state dict of '
        f'that model?')
  if missing:
    raise errors.DataError(f'{where}: {name} needs key(s) {_limit(missing)}, missing there '
                           f'({len(state_dict)} keys in all)')
  for key in counters & set(state_dict):
    if np.size(state_dict[key]) != 1:
      raise errors.DataError(f'{where}: {key} has shape {_shape(np.shape(state_dict[key]))}; a '
                             f'BatchNorm counter is a scalar')
  head = state_dict[entries[-1].keys()[0]]
  if np.ndim(head) != 2:
    raise errors.DataError(f'{where}: {entries[-1].keys()[0]} has shape {_shape(np.shape(head))}; '
                           f'the classifier\'s weight is (classes, features)')
  num_classes = int(np.shape(head)[0])
  abstract = abstract_variables(name, num_classes, kwargs)
  variables = {}
  for key, entry in owner.items():
    value = np.asarray(state_dict[key])
    if value.dtype.kind != 'f':
      raise errors.DataError(f'{where}: {key} holds {value.dtype} values; weights are floats')
    place = _zoo_place(entry, key)
    want = _get(abstract, place).shape
    converted = _to_zoo_leaf(entry, key, value)
    if converted.shape != want:
      expected = _to_torchvision_leaf(entry, key, np.empty(want, np.uint8)).shape
      raise errors.DataError(f'{where}: {key} has shape {_shape(value.shape)}; {name} with '
                             f'{num_classes} classes needs {_shape(expected)}')
    _set(variables, place, np.ascontiguousarray(converted, dtype=np.float32))
  # Every leaf of the model filled, and nothing else: the tables and the model agree.
  if jax.tree.structure(variables) != jax.tree.structure(jax.tree.map(lambda x: 0, abstract)):
    raise AssertionError(f'the layout table of {name} does not cover its variables')
  return variables, num_classes, kwargs


def to_torchvision(variables: Mapping, name: str) -> dict[str, np.ndarray]:
  """Zoo variables ({'params', 'batch_stats'}) of model `name` -> a torchvision state dict of
  numpy arrays (float32; BatchNorm counters int64 0), in torchvision's key order."""
  layout.check_convertible(name)
  aux = 'aux1' in variables['params']
  out = {}
  for entry in layout.entries(name, aux_logits=aux):
    for key in entry.keys():
      try:
        value = np.asarray(_get(variables, _zoo_place(entry, key)))
      except KeyError:
        raise errors.DataError(f'the variables of {name} have no {"/".join(_zoo_place(entry, key))}'
                               f' (for {key}); are they a {name}\'s?') from None
      out[key] = np.ascontiguousarray(_to_torchvision_leaf(entry, key, value))
    if entry.kind == BATCH_NORM:
      out[f'{entry.prefix}.{BATCHES_TRACKED}'] = np.zeros((), np.int64)
  return out
