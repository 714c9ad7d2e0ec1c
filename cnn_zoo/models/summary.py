"""Parameter and multiply-accumulate (MAC) counts of a model, per layer and in total.

MACs are counted, not estimated: every `nn.Conv` and `nn.Dense` call is intercepted while the model
is traced abstractly (no FLOP is spent), and its multiply-adds per example are derived from its
kernel and output shapes. Biases, BatchNorm, activations and pooling are not counted, as in the
usual tables (torchvision, ptflops).
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Layer:
  path: str
  kind: str
  output_shape: tuple[int, ...]
  params: int
  macs: int  # per example


@dataclasses.dataclass(frozen=True)
class Summary:
  layers: tuple[Layer, ...]
  params: int  # trainable
  batch_stats: int  # BatchNorm running statistics
  macs: int  # forward, per example

  def table(self) -> str:
    rows = [('layer', 'kind', 'output', 'params', 'MACs')]
    rows += [(l.path, l.kind, 'x'.join(map(str, l.output_shape[1:])), f'{l.params:,}',
              f'{l.macs:,}') for l in self.layers]
    rows.append(('total', '', '', f'{self.params:,}', f'{self.macs:,}'))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ['  '.join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, '-' * len(lines[0]))
    lines.insert(-1, '-' * len(lines[0]))
    lines.append(f'batch_stats: {self.batch_stats:,}   GMACs: {self.macs / 1e9:.3f}')
    return '\n'.join(lines)


def count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _macs(module: nn.Module, x, y) -> int:
  per_example_out = math.prod(y.shape[1:])
  if isinstance(module, nn.Conv):
    groups = module.feature_group_count
    return per_example_out * math.prod(module.kernel_size) * x.shape[-1] // groups
  if isinstance(module, nn.Dense):
    return per_example_out * x.shape[-1]
  return 0


def summarize(model: nn.Module, input_shape: tuple[int, int, int]) -> Summary:
  """Counts parameters and per-example MACs of `model` on one input of `input_shape`."""
  layers = []

  def interceptor(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name == '__call__' and isinstance(module, (nn.Conv, nn.Dense, nn.BatchNorm)):
      layers.append(Layer('/'.join(module.path), type(module).__name__, tuple(y.shape),
                          count(module.variables.get('params', {})), _macs(module, args[0], y)))
    return y

  def init():
    with nn.intercept_methods(interceptor):
      return model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)},
                        jnp.zeros((1, *input_shape), jnp.float32), train=False)

  variables = jax.eval_shape(init)
  return Summary(tuple(layers), count(variables.get('params', {})),
                 count(variables.get('batch_stats', {})), sum(l.macs for l in layers))
