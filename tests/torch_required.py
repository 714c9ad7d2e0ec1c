"""PyTorch for the tests that compare with it: skipped where it is absent, except where
CNN_ZOO_REQUIRE_TORCH is set (.ci/run installs it), where its absence is a failure."""

import os

import pytest


def import_torch():
  """torch, or a module-level skip (a failure under CNN_ZOO_REQUIRE_TORCH)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    return torch
  except ImportError as e:
    reason = f'PyTorch is not installed ({e}): pip install torch==2.13.0'
    if os.environ.get('CNN_ZOO_REQUIRE_TORCH'):
      pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def transforms_functional():
  """torchvision.transforms.functional, or a skip (a failure under CNN_ZOO_REQUIRE_TORCH)."""
  import_torch()
  from cnn_zoo.pretrained import torch_check  # pylint: disable=g-import-not-at-top
  try:
    return torch_check.transforms_functional()
  except ImportError as e:
    reason = f'torchvision is not installed ({e}): pip install --no-deps torchvision==0.28.0'
    if os.environ.get('CNN_ZOO_REQUIRE_TORCH'):
      pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)
