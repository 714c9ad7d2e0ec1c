"""The one-call accelerator kit (experiments/accelerator.sh), run here on the CPU without
TensorFlow: carried packed data unpacked, a run trained within its budget, the report written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cnn_zoo.data import pack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _kit(tmp_path, budget, *overrides, reserve=30):
  block = tmp_path / 'block'
  block.mkdir(exist_ok=True)
  # As on a host without TensorFlow: any import of it fails.
  (block / 'sitecustomize.py').write_text(
      "import sys\nsys.modules['tensorflow'] = None\nsys.modules['tensorflow_datasets'] = None\n")
  env = {**os.environ, 'PYTHONPATH': str(block), 'PYTHON': sys.executable,
         'KIT_DATA': str(tmp_path / 'data'), 'KIT_WHEELS': str(tmp_path / 'wheels'),
         'KIT_RESERVE_S': str(reserve), 'TF_CPP_MIN_LOG_LEVEL': '2'}
  out = tmp_path / 'out'
  proc = subprocess.run(
      ['bash', 'experiments/accelerator.sh', str(out), str(budget), 'configs/default.py:smoke',
       f'--config.dataset=npz:{out}/data/tiny.npz', '--config.batch_size=8',
       '--config.eval_batch_size=10', *overrides],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  return proc, out


def _packed_data(tmp_path):
  rng = np.random.default_rng(0)
  (tmp_path / 'data').mkdir()
  np.savez(tmp_path / 'tiny.npz', x_train=rng.integers(0, 256, (40, 28, 28, 1), np.uint8),
           y_train=np.arange(40) % 10, x_test=rng.integers(0, 256, (10, 28, 28, 1), np.uint8),
           y_test=np.arange(10))
  pack.pack(str(tmp_path / 'tiny.npz'), str(tmp_path / 'data' / 'tiny.jpeg.npz'))


def test_the_kit_trains_a_config_and_reports_it(tmp_path):
  _packed_data(tmp_path)
  proc, out = _kit(tmp_path, 500, '--config.num_train_steps=4')
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  results = json.loads((out / 'runs' / 'run' / 'results.json').read_text())
  assert (results['complete'], results['steps'], results['input_pipeline']) == (True, 4, 'device')
  assert (out / 'data' / 'tiny.npz').exists()
  assert (out / 'runs' / 'comparison.md').read_text().startswith('# Comparison\n\nBudget: 4 steps')
  assert (out / 'runs' / 'run' / 'metrics.jsonl').exists()


def test_a_budget_that_runs_out_leaves_a_checkpoint_and_incomplete_results(tmp_path):
  _packed_data(tmp_path)
  # 40 s less a 30 s reserve, less start-up: seconds, far from enough for 100,000 steps.
  proc, out = _kit(tmp_path, 40, '--config.num_train_steps=100000', '--config.log_every_steps=1',
                   reserve=30)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  results = json.loads((out / 'runs' / 'run' / 'results.json').read_text())
  assert results['complete'] is False and 0 < results['steps'] < 100_000
  steps = [int(d) for d in os.listdir(out / 'runs' / 'run' / 'checkpoints') if d.isdigit()]
  assert results['steps'] in steps
  assert 'Stopped by their time budget' in (out / 'runs' / 'comparison.md').read_text()


def test_no_time_left_or_a_budget_not_in_seconds_is_refused_before_anything_runs(tmp_path):
  _packed_data(tmp_path)
  proc, out = _kit(tmp_path, 10, reserve=30)
  assert proc.returncode == 2 and 'no time left for training' in proc.stderr
  proc, out = _kit(tmp_path, '9.5')
  assert proc.returncode == 2 and 'must be whole seconds' in proc.stderr
  assert not os.path.exists(out / 'runs' / 'run')


TORCH_TRAIN = os.path.join(ROOT, '..', 'shared', 'bench', 'torch_train.py')


def test_the_reproduction_call_trains_both_sides_on_the_same_pixels_and_tables_them(tmp_path):
  """experiments/beside_pytorch.sh as the device runs it, at a smoke budget on the CPU: the
  PyTorch reference beside cnn_zoo's recipe on the unpacked data, then the reproduction table."""
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    if os.environ.get('CNN_ZOO_REQUIRE_TORCH'):
      raise
    pytest.skip('torch not installed')
  if not os.path.exists(TORCH_TRAIN):
    pytest.skip(f'the PyTorch reference trainer is not at {TORCH_TRAIN}')
  rng = np.random.default_rng(0)
  (tmp_path / 'data').mkdir()
  np.savez(tmp_path / 'tiny.npz', x_train=rng.integers(0, 256, (64, 32, 32, 3), np.uint8),
           y_train=np.arange(64) % 10, x_test=rng.integers(0, 256, (20, 32, 32, 3), np.uint8),
           y_test=np.arange(20) % 10)
  pack.pack(str(tmp_path / 'tiny.npz'), str(tmp_path / 'data' / 'tiny.jpeg.npz'))
  out = tmp_path / 'out'
  env = {**os.environ, 'PYTHON': sys.executable, 'KIT_DATA': str(tmp_path / 'data'),
         'KIT_WHEELS': str(tmp_path / 'wheels'), 'KIT_RESERVE_S': '20', 'KIT_DATASET': 'tiny',
         'TORCH_SEEDS': '0 1', 'TORCH_FLAGS': '',
         'TORCH_ARGS': '--steps 4 --batch 8 --eval-every 0 --device cpu --threads 1',
         'TF_CPP_MIN_LOG_LEVEL': '2'}
  proc = subprocess.run(
      ['bash', 'experiments/beside_pytorch.sh', str(out), '400', TORCH_TRAIN,
       'configs/cifar10_resnet.py:resnet20', '--config.num_train_steps=4',
       '--config.batch_size=8', '--config.eval_batch_size=20', '--config.log_every_steps=2',
       '--config.checkpoint_every_steps=0', '--config.eval_every_epochs=0'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  zoo = json.loads((out / 'runs' / 'run' / 'results.json').read_text())
  assert (zoo['model'], zoo['steps'], zoo['dataset']) == ('resnet20', 4, f'npz:{out}/data/tiny.npz')
  torch_runs = [json.loads((out / 'torch' / f'resnet20_s{s}.json').read_text()) for s in (0, 1)]
  assert [(r['seed'], r['steps'], r['npz']) for r in torch_runs] == [
      (s, 4, f'{out}/data/tiny.npz') for s in (0, 1)]
  table = (out / 'runs' / 'reproduction.md').read_text()
  zoo_row = next(l for l in table.splitlines() if l.startswith('| resnet20 | cnn_zoo |'))
  torch_row = next(l for l in table.splitlines() if l.startswith('| resnet20 | PyTorch |'))
  assert f'{100 * (1 - zoo["test_accuracy"]):.2f}' in zoo_row and '| 8.75 |' in zoo_row
  errors = [r['test_error_pct'] for r in torch_runs]
  assert torch_row.split('|')[3].strip() == '0, 1'
  assert f'{np.mean(errors):.2f} ± {np.std(errors, ddof=1):.2f}' in torch_row
