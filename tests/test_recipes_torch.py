"""Every CIFAR recipe's train step equals its PyTorch reference, term for term.

For ResNet-20 (option A), VGG-11-BN, a shallow DenseNet-BC, LeNet-5 and AlexNet-CIFAR: a PyTorch
model written here in plain torch.nn, in the layout of the reference the recipe cites
(configs/*.py; docs/guarantees.md's recipe table), is loaded with the zoo's initial variables; then K
steps on each side on the same batches in float64. The zoo side is the recipe's config file with
only its budget shrunk (so that a learning-rate boundary, the cosine or the warm-up moves inside
the K steps), through `optim` and `step.train_step`; the PyTorch side is torch.optim.SGD with the
reference's settings written out below, the learning rate set per step from the reference's
schedule. Parameters and BatchNorm running statistics agree within 1e-6 relative (PyTorch keeps an
unbiased running variance; the biased one the zoo keeps is rebuilt from it exactly). Each term is
then removed from the PyTorch side in turn, and the same comparison must fail: nothing in the
match is carried by a term that does not matter.

Skipped without PyTorch, except under CNN_ZOO_REQUIRE_TORCH (CI), where that is a failure.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import torch_required

torch = torch_required.import_torch()
nn, F = torch.nn, torch.nn.functional

from cnn_zoo import models  # noqa: E402
from cnn_zoo.train import optim, step as step_lib, state as state_lib  # noqa: E402
from configs import cifar10_densenet, cifar10_resnet, cifar10_vgg, cifar10_zoo  # noqa: E402
from configs import mnist_lenet5  # noqa: E402

RTOL = 1e-6
# A leaf whose values are all below FLOOR is compared absolutely, at RTOL * FLOOR: VGG's conv
# biases sit before a BatchNorm, so their gradient is exactly zero and, from zero, they hold
# nothing but each side's rounding (1e-17), which no relative bound can compare.
FLOOR = 1e-6
NUM_CLASSES = 10


# ---- The references' layouts, in plain torch.nn ------------------------------------------------

class ResNetA(nn.Module):
  """akamaster/pytorch_resnet_cifar10 resnet.py: 3x3 conv-BN-ReLU, stages of BasicBlocks
  (conv-BN-ReLU-conv-BN + shortcut, ReLU), option A: x[:, :, ::2, ::2] zero-padded by planes // 4
  channels on each side; global average pool, Linear."""

  def __init__(self, n=3):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
    blocks, planes_in = [], 16
    for stage, planes in enumerate((16, 32, 64)):
      for i in range(n):
        stride = 2 if stage > 0 and i == 0 else 1
        blocks.append(nn.ModuleDict({
            'conv1': nn.Conv2d(planes_in, planes, 3, stride, 1, bias=False),
            'bn1': nn.BatchNorm2d(planes),
            'conv2': nn.Conv2d(planes, planes, 3, 1, 1, bias=False),
            'bn2': nn.BatchNorm2d(planes)}))
        blocks[-1].stride, blocks[-1].pad = stride, (planes // 4 if planes != planes_in else 0)
        planes_in = planes
    self.blocks = nn.ModuleList(blocks)
    self.linear = nn.Linear(64, NUM_CLASSES)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    for b in self.blocks:
      y = b['bn2'](b['conv2'](F.relu(b['bn1'](b['conv1'](out)))))
      shortcut = out if not b.pad else F.pad(out[:, :, ::2, ::2], (0, 0, 0, 0, b.pad, b.pad))
      out = F.relu(y + shortcut)
    return self.linear(F.avg_pool2d(out, out.shape[3]).flatten(1))

  def layers(self):
    yield ('Conv_0',), self.conv1
    yield ('BatchNorm_0',), self.bn1
    for i, b in enumerate(self.blocks):
      for zoo, name in (('Conv_0', 'conv1'), ('BatchNorm_0', 'bn1'), ('Conv_1', 'conv2'),
                        ('BatchNorm_1', 'bn2')):
        yield (f'BasicBlock_{i}', zoo), b[name]
    yield ('Dense_0',), self.linear


class VGGBN(nn.Module):
  """bearpaw/pytorch-classification models/cifar/vgg.py: conv(bias)-BN-ReLU, 2x2 max pools,
  one Linear(512, classes)."""

  def __init__(self, widths):
    super().__init__()
    layers, c = [], 3
    for w in widths:
      if w == 'M':
        layers.append(nn.MaxPool2d(2, 2))
      else:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        c = w
    self.features = nn.Sequential(*layers)
    self.classifier = nn.Linear(512, NUM_CLASSES)

  def forward(self, x):
    return self.classifier(self.features(x).flatten(1))

  def layers(self):
    convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in self.features if isinstance(m, nn.BatchNorm2d)]
    for i, (conv, bn) in enumerate(zip(convs, norms)):
      yield (f'Conv_{i}',), conv
      yield (f'BatchNorm_{i}',), bn
    yield ('Dense_0',), self.classifier


class DenseNetBC(nn.Module):
  """andreasveit/densenet-pytorch densenet.py (DenseNet3, bottleneck, reduction 0.5, no dropout):
  3x3 conv to 2k, dense blocks of BN-ReLU-1x1 conv (4k)-BN-ReLU-3x3 conv (k) concatenated onto
  their input, transitions BN-ReLU-1x1 conv-2x2 average pool, BN-ReLU, 8x8 average pool, Linear."""

  def __init__(self, n, k=12):
    super().__init__()
    c = 2 * k
    self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
    self.blocks, self.transitions = nn.ModuleList(), nn.ModuleList()
    for stage in range(3):
      block = nn.ModuleList()
      for _ in range(n):
        block.append(nn.ModuleDict({
            'bn1': nn.BatchNorm2d(c), 'conv1': nn.Conv2d(c, 4 * k, 1, bias=False),
            'bn2': nn.BatchNorm2d(4 * k), 'conv2': nn.Conv2d(4 * k, k, 3, padding=1, bias=False)}))
        c += k
      self.blocks.append(block)
      if stage < 2:
        self.transitions.append(nn.ModuleDict({
            'bn1': nn.BatchNorm2d(c), 'conv1': nn.Conv2d(c, c // 2, 1, bias=False)}))
        c //= 2
    self.bn1, self.fc = nn.BatchNorm2d(c), nn.Linear(c, NUM_CLASSES)

  def forward(self, x):
    out = self.conv1(x)
    for stage, block in enumerate(self.blocks):
      for layer in block:
        y = layer['conv1'](F.relu(layer['bn1'](out)))
        out = torch.cat([out, layer['conv2'](F.relu(layer['bn2'](y)))], 1)
      if stage < 2:
        t = self.transitions[stage]
        out = F.avg_pool2d(t['conv1'](F.relu(t['bn1'](out))), 2)
    # The reference's 8x8 pool is the global one at 32x32; the test's 16x16 images end on 4x4.
    return self.fc(F.avg_pool2d(F.relu(self.bn1(out)), out.shape[-1]).flatten(1))

  def layers(self):
    yield ('Conv_0',), self.conv1
    i = 0
    for stage, block in enumerate(self.blocks):
      for layer in block:
        for zoo, name in (('BatchNorm_0', 'bn1'), ('Conv_0', 'conv1'), ('BatchNorm_1', 'bn2'),
                          ('Conv_1', 'conv2')):
          yield (f'DenseLayer_{i}', zoo), layer[name]
        i += 1
      if stage < 2:
        yield (f'BatchNorm_{stage}',), self.transitions[stage]['bn1']
        yield (f'Conv_{stage + 1}',), self.transitions[stage]['conv1']
    yield ('BatchNorm_2',), self.bn1
    yield ('Dense_0',), self.fc


class LeNet5(nn.Module):
  """LeNet-5 as the zoo builds it (no reference implementation: the recipe is the zoo's own):
  conv 6@5x5-ReLU-max pool, conv 16@5x5-ReLU-max pool, 400-120-84-10 with ReLU."""

  def __init__(self):
    super().__init__()
    self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
    self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
    return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

  def layers(self):
    yield ('Conv_0',), self.conv1
    yield ('Conv_1',), self.conv2
    yield ('Dense_0',), (self.fc1, (16, 5, 5))  # torch flattens (C, H, W), the zoo (H, W, C)
    yield ('Dense_1',), self.fc2
    yield ('Dense_2',), self.fc3


class AlexNetCIFAR(nn.Module):
  """bearpaw/pytorch-classification models/cifar/alexnet.py: 64@11x11/4 padding 5, 192@5x5,
  384, 256, 256 @3x3, ReLUs, 2x2 max pools after the 1st, 2nd and 5th, Linear(256, classes)."""

  def __init__(self):
    super().__init__()
    self.convs = nn.ModuleList([
        nn.Conv2d(3, 64, 11, 4, 5), nn.Conv2d(64, 192, 5, padding=2),
        nn.Conv2d(192, 384, 3, padding=1), nn.Conv2d(384, 256, 3, padding=1),
        nn.Conv2d(256, 256, 3, padding=1)])
    self.classifier = nn.Linear(256, NUM_CLASSES)

  def forward(self, x):
    for i, conv in enumerate(self.convs):
      x = F.relu(conv(x))
      if i in (0, 1, 4):
        x = F.max_pool2d(x, 2, 2)
    return self.classifier(x.flatten(1))

  def layers(self):
    for i, conv in enumerate(self.convs):
      yield (f'Conv_{i}',), conv
    yield ('Dense_0',), self.classifier


# ---- The recipes: the zoo's config files, and their references' settings -----------------------

def piecewise(lr, boundaries, gamma, total):
  """MultiStepLR stepped per iteration: lr * gamma ** (milestones passed), milestones at the
  fractions `boundaries` of the budget (He et al.'s 32k and 48k of 64k iterations)."""
  milestones = [round(b * total) for b in boundaries]
  return lambda t: lr * gamma ** sum(t >= m for m in milestones)


def warmup_cosine(lr, warmup, total):
  """Linear from 0 over `warmup` steps, then cosine to 0 over the rest (CosineAnnealingLR)."""
  return lambda t: lr * t / warmup if t < warmup else \
      lr * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


@dataclasses.dataclass(frozen=True)
class Recipe:
  config: object  # () -> the recipe's ConfigDict, from configs/
  torch_model: object  # () -> the reference's torch.nn model
  lr: object  # step -> the reference's learning rate at that step
  momentum: float
  weight_decay: float
  nesterov: bool = False
  steps: int = 5  # K, and the shrunk budget
  steps_per_epoch: int = 5
  batch: int = 8
  image: tuple = (32, 32, 3)
  model_kwargs: dict = dataclasses.field(default_factory=dict)
  terms: tuple = ('weight_decay', 'decay_every_parameter', 'momentum', 'schedule')


RECIPES = {
    # akamaster/pytorch_resnet_cifar10 trainer.py: SGD(model.parameters(), 0.1, momentum=0.9,
    # weight_decay=1e-4), MultiStepLR at 100 and 150 of 200 epochs (He et al.: 32k, 48k of 64k).
    # ResNet-20 on 16x16 images (a quarter of the work; every layer as at 32x32).
    'resnet20': Recipe(lambda: cifar10_resnet.get_config('resnet20'), ResNetA,
                       piecewise(0.1, (0.5, 0.75), 0.1, 5), 0.9, 1e-4, image=(16, 16, 3)),
    # bearpaw/pytorch-classification cifar.py: SGD(model.parameters(), 0.1, momentum=0.9,
    # weight_decay=5e-4), TRAINING.md's schedule 81, 122 of 164 epochs, gamma 0.1.
    'vgg11_bn_cifar': Recipe(lambda: cifar10_vgg.get_config('model=vgg11_bn_cifar'),
                             lambda: VGGBN(models.vgg.CONFIGS[11]),
                             piecewise(0.1, (81 / 164, 122 / 164), 0.1, 5), 0.9, 5e-4, batch=4),
    # andreasveit/densenet-pytorch train.py: SGD(model.parameters(), 0.1, momentum=0.9,
    # nesterov=True, weight_decay=1e-4), 0.1 at epochs 150 and 225 of 300; two layers a block,
    # 16x16 images.
    'densenet_bc': Recipe(cifar10_densenet.get_config, lambda: DenseNetBC(2),
                          piecewise(0.1, (0.5, 0.75), 0.1, 5), 0.9, 1e-4, nesterov=True,
                          image=(16, 16, 3), model_kwargs={'block_sizes': (2, 2, 2)},
                          terms=('weight_decay', 'decay_every_parameter', 'momentum', 'nesterov',
                                 'schedule')),
    # configs/mnist_lenet5.py's own recipe (no reference implementation), in PyTorch's terms:
    # SGD(model.parameters(), 0.05, momentum=0.9, weight_decay=5e-4), cosine over the budget.
    'lenet5': Recipe(mnist_lenet5.get_config, LeNet5, warmup_cosine(0.05, 0, 6), 0.9, 5e-4,
                     steps=6, image=(32, 32, 1)),
    # configs/cifar10_zoo.py: SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=5e-4) as in
    # bearpaw's and kuangliu's scripts, a one-epoch linear warm-up (two steps here), then cosine.
    'alexnet_cifar': Recipe(lambda: cifar10_zoo.get_config('model=alexnet_cifar'), AlexNetCIFAR,
                            warmup_cosine(0.1, 2, 5), 0.9, 5e-4, steps_per_epoch=2,
                            terms=('weight_decay', 'decay_every_parameter', 'momentum',
                                   'schedule', 'warmup')),
}
# The PyTorch side with one term removed.
ABLATIONS = {
    'weight_decay': {'weight_decay': 0.0},
    'decay_every_parameter': {'decay_kernels_only': True},  # the zoo's old `kernels_only`
    'momentum': {'momentum': 0.0, 'nesterov': False},  # Nesterov's look-ahead is momentum's too
    'nesterov': {'nesterov': False},
    'schedule': {'lr': None},  # the first step's rate throughout (the base rate after warm-up)
    'warmup': {'warmup': False},
}


def _batches(recipe, seed=0):
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=(recipe.batch, *recipe.image)),
           rng.integers(0, NUM_CLASSES, recipe.batch).astype(np.int32))
          for _ in range(recipe.steps)]


# ---- The zoo side ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def zoo_run(name):
  """(initial variables, variables after K steps) of the zoo's train step in float64, under the
  recipe's config with its budget shrunk to K steps."""
  recipe = RECIPES[name]
  config = recipe.config()
  config.num_train_steps = recipe.steps
  with jax.enable_x64(True):
    model = models.get(config.model, num_classes=NUM_CLASSES, dtype=jnp.float64,
                       weight_init=config.weight_init, conv_impl=config.conv_impl,
                       **config.model_kwargs.to_dict(), **recipe.model_kwargs)
    tx = optim.optimizer(config, optim.schedule(config, recipe.steps, recipe.steps_per_epoch))
    state = state_lib.create(model, tx, recipe.image, config.seed)
    to64 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)
    params, stats = to64(state.params), to64(state.batch_stats)
    state = state.replace(params=params, batch_stats=stats, opt_state=tx.init(params))
    initial = jax.device_get({'params': params, 'batch_stats': stats})
    train_step = jax.jit(functools.partial(step_lib.train_step,
                                           label_smoothing=config.label_smoothing))
    for image, label in _batches(recipe):
      state, _ = train_step(state, {'image': jnp.asarray(image), 'label': jnp.asarray(label)})
    final = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  return initial, final


# ---- The PyTorch side --------------------------------------------------------------------------

def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _kernel_to_torch(kernel, layer):
  """The zoo's HWIO conv kernel or (in, out) dense kernel as the torch layer's weight."""
  if isinstance(layer, tuple):  # a Linear after a (C, H, W) flatten
    layer, (c, h, w) = layer
    return kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1).T
  return kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T


def _kernel_from_torch(weight, layer):
  if isinstance(layer, tuple):
    layer, (c, h, w) = layer
    return weight.T.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
  return weight.transpose(2, 3, 1, 0) if weight.ndim == 4 else weight.T


def _module(layer):
  return layer[0] if isinstance(layer, tuple) else layer


def _load(model, variables):
  with torch.no_grad():
    for path, layer in model.layers():
      module, zoo = _module(layer), _get(variables['params'], path)
      if isinstance(module, nn.BatchNorm2d):
        stats = _get(variables['batch_stats'], path)
        for target, value in ((module.weight, zoo['scale']), (module.bias, zoo['bias']),
                              (module.running_mean, stats['mean']),
                              (module.running_var, stats['var'])):
          target.copy_(torch.from_numpy(np.array(value)))
      else:
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(
            _kernel_to_torch(np.asarray(zoo['kernel']), layer))))
        if module.bias is not None:
          module.bias.copy_(torch.from_numpy(np.array(zoo["bias"])))


def torch_run(name, ablation=None):
  """The zoo-shaped variables after K steps of the reference in PyTorch, from the zoo's initial
  variables, on the same batches; with one term removed when `ablation` names it."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # the suite's workers take a core each
  try:
    return _torch_run(name, ablation)
  finally:
    torch.set_num_threads(threads)


def _torch_run(name, ablation):
  recipe = RECIPES[name]
  change = ABLATIONS[ablation] if ablation else {}
  torch.manual_seed(0)
  model = recipe.torch_model().double()
  initial, _ = zoo_run(name)
  _load(model, initial)
  norms = [_module(layer) for _, layer in model.layers()
           if isinstance(_module(layer), nn.BatchNorm2d)]
  # torch's running_var averages the unbiased batch variance; the zoo's (flax's) the biased one.
  # With the count n of each BatchNorm's batch, the biased average follows from torch's exactly.
  counts = {}
  for bn in norms:
    bn.register_forward_pre_hook(lambda m, args: counts.__setitem__(m, args[0].numel() //
                                                                    args[0].shape[1]))
  biased = {bn: bn.running_var.clone() for bn in norms}
  if change.get('decay_kernels_only'):
    kernels = [_module(layer).weight for _, layer in model.layers()
               if not isinstance(_module(layer), nn.BatchNorm2d)]
    others = [p for p in model.parameters() if all(p is not k for k in kernels)]
    groups = [{'params': kernels}, {'params': others, 'weight_decay': 0.0}]
  else:
    groups = model.parameters()
  lr = recipe.lr
  if 'lr' in change:  # constant: the first nonzero rate
    first = next(lr(t) for t in range(recipe.steps) if lr(t))
    lr = lambda t: first
  if change.get('warmup') is False:
    lr = warmup_cosine(recipe.lr(recipe.steps_per_epoch), 0, recipe.steps)
  optimizer = torch.optim.SGD(groups, lr=lr(0), momentum=change.get('momentum', recipe.momentum),
                              weight_decay=change.get('weight_decay', recipe.weight_decay),
                              nesterov=change.get('nesterov', recipe.nesterov))
  model.train()
  for t, (image, label) in enumerate(_batches(recipe)):
    for group in optimizer.param_groups:
      group['lr'] = lr(t)
    before = {bn: bn.running_var.clone() for bn in norms}
    loss = F.cross_entropy(model(torch.from_numpy(image).permute(0, 3, 1, 2).contiguous()),
                           torch.from_numpy(label).long())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
      for bn in norms:
        n = counts[bn]
        increment = bn.running_var - (1 - bn.momentum) * before[bn]  # momentum * unbiased var
        biased[bn] = (1 - bn.momentum) * biased[bn] + increment * (n - 1) / n
  out = {'params': {}, 'batch_stats': {}}
  for path, layer in model.layers():
    module = _module(layer)
    if isinstance(module, nn.BatchNorm2d):
      out['params'][path] = {'scale': module.weight, 'bias': module.bias}
      out['batch_stats'][path] = {'mean': module.running_mean, 'var': biased[module]}
    else:
      out['params'][path] = {'kernel': _kernel_from_torch(module.weight.detach().numpy(), layer)}
      if module.bias is not None:
        out['params'][path]['bias'] = module.bias
  return jax.tree.map(lambda x: np.asarray(x.detach() if torch.is_tensor(x) else x), out)


def worst_relative_error(name, ablation=None):
  """The largest, over every parameter and BatchNorm statistic, of max |zoo - torch| / max
  |torch| (at least FLOOR), and where it is."""
  _, zoo = zoo_run(name)
  ref = torch_run(name, ablation)
  worst, where, compared = 0.0, None, 0
  for collection in ('params', 'batch_stats'):
    for path, leaves in ref[collection].items():
      for key, expected in leaves.items():
        actual = np.asarray(_get(zoo[collection], path)[key])
        assert actual.shape == expected.shape, (path, key)
        error = np.abs(actual - expected).max() / max(np.abs(expected).max(), FLOOR)
        compared += actual.size
        if error > worst:
          worst, where = error, (collection, path, key)
  # Every leaf of the zoo's variables has its counterpart.
  assert compared == sum(np.size(x) for x in jax.tree.leaves(zoo)), name
  return worst, where


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_k_float64_steps_equal_the_pytorch_reference(name):
  worst, where = worst_relative_error(name)
  assert worst <= RTOL, (worst, where)


@pytest.mark.parametrize('name,term', [(n, t) for n in sorted(RECIPES) for t in RECIPES[n].terms])
def test_the_match_fails_with_any_one_term_removed(name, term):
  """Each term, removed from the PyTorch side, breaks the match by far more than its tolerance
  (the zoo's run is the one above, cached: each case is one PyTorch run, about a second)."""
  worst, where = worst_relative_error(name, term)
  assert worst > 10 * RTOL, (worst, where)


def test_the_recipes_decay_every_parameter_as_their_references():
  """What `optim.kernels_only` decays is not what SGD(model.parameters()) decays: every recipe
  names 'all'; a run saved before the field resumes with 'kernels' (config.LEGACY)."""
  from cnn_zoo.train import config as config_lib  # pylint: disable=g-import-not-at-top
  for recipe in RECIPES.values():
    assert recipe.config().weight_decay_on == 'all'
  assert config_lib.LEGACY['weight_decay_on'] == 'kernels'
