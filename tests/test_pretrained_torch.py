"""The zoo against torchvision's own model code (skipped where PyTorch and torchvision's model code
are not installed: `pip install torch==2.13.0 && pip install --no-deps torchvision`).

The committed manifests are torchvision's state dicts; converted random weights give torchvision's
logits (eval mode, random BatchNorm statistics) to a relative 1e-4; the reverse conversion loads
into torchvision's model with `strict=True`, and `.pth` files round-trip bit for bit.
"""

import json
import os

import jax
import numpy as np
import pytest

from tests import torch_required

torch = torch_required.import_torch()

from cnn_zoo.pretrained import convert, state_dict_files, layout  # noqa: E402
from cnn_zoo.pretrained import torch_check  # noqa: E402

try:
  torch_check.torchvision_models()
except ImportError:
  if os.environ.get('CNN_ZOO_REQUIRE_TORCH'):  # CI installs it: missing is a failure
    pytest.fail('torchvision model code not installed', pytrace=False)
  pytest.skip('torchvision model code not installed', allow_module_level=True)

FAST = ('resnet18',)


@pytest.mark.parametrize('name', sorted(layout.TORCHVISION))
def test_the_committed_manifest_is_torchvisions(name):
  with open(os.path.join(torch_check.MANIFESTS, f'{name}.json'), encoding='utf-8') as f:
    assert json.load(f) == torch_check.manifest(name)


@pytest.mark.parametrize('name', [pytest.param(n, marks=[] if n in FAST else [pytest.mark.slow])
                                  for n in sorted(layout.TORCHVISION)])
def test_the_zoo_computes_torchvisions_logits(name):
  result = torch_check.compare(name)
  assert result['max_rel_diff'] < 1e-4, result
  assert result['same_top1'], result


@pytest.mark.parametrize('name', ['resnet18', 'googlenet', 'densenet121'])
def test_the_reverse_conversion_loads_strictly_into_torchvision(name, tmp_path):
  model = torch_check.build(name)
  torch_check.randomise(model, seed=1, size=64)
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  variables, _, _ = convert.to_zoo(state, name)
  path = str(tmp_path / f'{name}.pth')
  state_dict_files.write(convert.to_torchvision(variables, name), path)
  again = torch_check.build(name)
  again.load_state_dict(torch.load(path, weights_only=True), strict=True)
  for key, value in again.state_dict().items():
    if not key.endswith(layout.BATCHES_TRACKED):
      assert np.array_equal(value.numpy(), state[key]), key
  read, _, _ = convert.to_zoo(state_dict_files.read(path), name)
  for a, b in zip(jax.tree.leaves(read), jax.tree.leaves(variables)):
    assert np.array_equal(a, b)
