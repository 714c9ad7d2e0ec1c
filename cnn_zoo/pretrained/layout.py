"""Where each tensor of a torchvision state dict lives among the zoo's variables.

`entries(name, ...)` lists, for one zoo model, every torchvision layer as an `Entry`: its key
prefix in torchvision's `state_dict()` (e.g. 'layer1.0.conv1'), the path of the zoo module that
holds the same weights (e.g. ('BasicBlock_0', 'Conv_0')) and how the layouts differ (`kind`). The
tables follow the module structure of torchvision's classification models (torchvision.models
alexnet, vgg, googlenet, resnet, densenet; names read from their `state_dict()`, which
`cnn_zoo/pretrained/manifests/` records) and the automatic names linen gives the zoo's modules,
counted per module type in the order they are constructed.
"""

import dataclasses

from cnn_zoo import errors
from cnn_zoo import models
from cnn_zoo.models import resnet as resnet_lib

CONV, LINEAR, BATCH_NORM = 'conv', 'linear', 'batch_norm'
# BatchNorm's update counter: torchvision's state dicts hold it, the zoo's BatchNorm (an
# exponential moving average with a fixed momentum) has no use for it.
BATCHES_TRACKED = 'num_batches_tracked'

# Every zoo model with a torchvision counterpart, and that counterpart's constructor name.
TORCHVISION = {
    'alexnet': 'alexnet', 'googlenet': 'googlenet',
    **{f'vgg{d}{bn}': f'vgg{d}{bn}' for d in (11, 13, 16, 19) for bn in ('', '_bn')},
    **{f'resnet{d}': f'resnet{d}' for d in (18, 34, 50, 101, 152)},
    **{f'densenet{d}': f'densenet{d}' for d in (121, 169, 201)},
}


@dataclasses.dataclass(frozen=True)
class Entry:
  """One layer: `prefix` in torchvision, `path` in the zoo, and `kind`.

  `flat_from` (a LINEAR after a flatten only) is torchvision's (C, H, W) of the flattened maps: its
  input features are ordered C, H, W there and H, W, C in the zoo, which flattens NHWC maps.
  """
  prefix: str
  path: tuple[str, ...]
  kind: str
  bias: bool = True
  flat_from: tuple[int, int, int] | None = None

  def keys(self) -> list[str]:
    """The state dict keys of this layer (BatchNorm's counter not included)."""
    if self.kind == BATCH_NORM:
      return [f'{self.prefix}.{k}' for k in ('weight', 'bias', 'running_mean', 'running_var')]
    return [f'{self.prefix}.weight'] + ([f'{self.prefix}.bias'] if self.bias else [])


def check_convertible(name: str) -> None:
  """Refuses, in one line, a model that is not registered or has no torchvision counterpart."""
  models.spec(name)  # an unknown name: the closest registered names
  if name not in TORCHVISION:
    raise errors.ConfigError(f'model {name!r} has no torchvision counterpart; models that have '
                             f'one: {", ".join(sorted(TORCHVISION))}')


def entries(name: str, aux_logits: bool = False) -> list[Entry]:
  """Every layer of zoo model `name` with its torchvision key prefix, in torchvision's order.

  `aux_logits`: GoogLeNet's two auxiliary heads (torchvision's pretrained GoogLeNet file holds
  them; the zoo builds them with model_kwargs aux_logits=True).
  """
  check_convertible(name)
  module = models.get(name)
  family = models.spec(name).family
  if family == 'alexnet':
    return _alexnet(module)
  if family == 'vgg':
    return _vgg(module)
  if family == 'googlenet':
    return _googlenet(aux_logits)
  if family == 'resnet':
    return _resnet(module)
  return _densenet(module)


def _alexnet(module) -> list[Entry]:
  # features: conv, ReLU[, max pool] per layer; classifier: dropout, Linear, ReLU, dropout, ...
  out, index = [], 0
  for i, (*_, pool) in enumerate(module.convs):
    out.append(Entry(f'features.{index}', (f'Conv_{i}',), CONV))
    index += 3 if pool else 2
  channels = module.convs[-1][0]
  return out + _classifier(len(module.hidden), (channels, module.pool_size, module.pool_size),
                           first=1)


def _vgg(module) -> list[Entry]:
  # features: conv[, BatchNorm], ReLU per width; one max pool per 'M'.
  from cnn_zoo.models import vgg  # pylint: disable=g-import-not-at-top
  out, index, conv = [], 0, 0
  for width in vgg.CONFIGS[module.depth]:
    if width == 'M':
      index += 1
      continue
    out.append(Entry(f'features.{index}', (f'Conv_{conv}',), CONV))
    if module.batch_norm:
      out.append(Entry(f'features.{index + 1}', (f'BatchNorm_{conv}',), BATCH_NORM))
    index += 3 if module.batch_norm else 2
    conv += 1
    channels = width
  return out + _classifier(len(module.hidden), (channels, module.pool_size, module.pool_size),
                           first=0)


def _classifier(hidden: int, flat_from, first: int) -> list[Entry]:
  """AlexNet's and VGG's `classifier` Sequential: three modules per hidden layer (AlexNet's
  dropout, Linear, ReLU; VGG's Linear, ReLU, dropout), so hidden Linear i at first + 3i, and the
  last Linear after them, at 3 * hidden."""
  indices = [first + 3 * i for i in range(hidden)] + [3 * hidden]
  return [Entry(f'classifier.{index}', (f'Dense_{i}',), LINEAR,
                flat_from=flat_from if i == 0 else None) for i, index in enumerate(indices)]


def _basic_conv(prefix: str, path: tuple[str, ...]) -> list[Entry]:
  """torchvision's BasicConv2d (`conv`, `bn`) and the zoo's BasicConv (Conv_0, BatchNorm_0)."""
  return [Entry(f'{prefix}.conv', (*path, 'Conv_0'), CONV, bias=False),
          Entry(f'{prefix}.bn', (*path, 'BatchNorm_0'), BATCH_NORM)]


def _googlenet(aux_logits: bool) -> list[Entry]:
  from cnn_zoo.models import googlenet  # pylint: disable=g-import-not-at-top
  out = []
  for i, prefix in enumerate(('conv1', 'conv2', 'conv3')):
    out += _basic_conv(prefix, (f'BasicConv_{i}',))
  for block in googlenet.INCEPTION:
    # The zoo constructs the 3x3 of a branch before the 1x1 that feeds it: branch2's 3x3 is
    # BasicConv_1 and its 1x1 reduction BasicConv_2; branch3's BasicConv_3 and BasicConv_4.
    zoo = {'branch1': 0, 'branch2.0': 2, 'branch2.1': 1, 'branch3.0': 4, 'branch3.1': 3,
           'branch4.1': 5}
    for branch, index in zoo.items():
      out += _basic_conv(f'inception{block}.{branch}', (f'inception{block}', f'BasicConv_{index}'))
  for aux in ('aux1', 'aux2') if aux_logits else ():  # after 4a and 4d; flattened 128x4x4 maps
    out += _basic_conv(f'{aux}.conv', (aux, 'BasicConv_0'))
    out += [Entry(f'{aux}.fc1', (aux, 'Dense_0'), LINEAR, flat_from=(128, 4, 4)),
            Entry(f'{aux}.fc2', (aux, 'Dense_1'), LINEAR)]
  return out + [Entry('fc', ('Dense_0',), LINEAR)]


def _resnet(module) -> list[Entry]:
  out = [Entry('conv1', ('Conv_0',), CONV, bias=False),
         Entry('bn1', ('BatchNorm_0',), BATCH_NORM)]
  bottleneck = module.block is resnet_lib.Bottleneck
  block_name = 'Bottleneck' if bottleneck else 'BasicBlock'
  convs = 3 if bottleneck else 2
  count, channels = 0, module.widths[0]
  for stage, (size, width) in enumerate(zip(module.stage_sizes, module.widths)):
    for j in range(size):
      prefix, path = f'layer{stage + 1}.{j}', (f'{block_name}_{count}',)
      for c in range(convs):
        out += [Entry(f'{prefix}.conv{c + 1}', (*path, f'Conv_{c}'), CONV, bias=False),
                Entry(f'{prefix}.bn{c + 1}', (*path, f'BatchNorm_{c}'), BATCH_NORM)]
      stride = 2 if stage > 0 and j == 0 else 1
      out_channels = width * 4 if bottleneck else width
      if stride != 1 or channels != out_channels:
        out += [Entry(f'{prefix}.downsample.0', (*path, 'downsample_conv'), CONV, bias=False),
                Entry(f'{prefix}.downsample.1', (*path, 'downsample_bn'), BATCH_NORM)]
      channels = out_channels
      count += 1
  return out + [Entry('fc', ('Dense_0',), LINEAR)]


def _densenet(module) -> list[Entry]:
  out = [Entry('features.conv0', ('Conv_0',), CONV, bias=False),
         Entry('features.norm0', ('BatchNorm_0',), BATCH_NORM)]
  layer = 0
  for b, size in enumerate(module.block_sizes):
    for i in range(size):
      prefix, path = f'features.denseblock{b + 1}.denselayer{i + 1}', (f'DenseLayer_{layer}',)
      out += [Entry(f'{prefix}.norm1', (*path, 'BatchNorm_0'), BATCH_NORM),
              Entry(f'{prefix}.conv1', (*path, 'Conv_0'), CONV, bias=False),
              Entry(f'{prefix}.norm2', (*path, 'BatchNorm_1'), BATCH_NORM),
              Entry(f'{prefix}.conv2', (*path, 'Conv_1'), CONV, bias=False)]
      layer += 1
    if b < len(module.block_sizes) - 1:
      out += [Entry(f'features.transition{b + 1}.norm', (f'BatchNorm_{b + 1}',), BATCH_NORM),
              Entry(f'features.transition{b + 1}.conv', (f'Conv_{b + 1}',), CONV, bias=False)]
  last = len(module.block_sizes)
  return out + [Entry(f'features.norm{last + 1}', (f'BatchNorm_{last}',), BATCH_NORM),
                Entry('classifier', ('Dense_0',), LINEAR)]
