"""One step over a device mesh: 8 simulated CPU devices, FSDP, two real processes, and a
checkpoint saved on 8 devices restored on 1, all agreeing with a single-device run."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from cnn_zoo.train import inference, loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8


def _config(smoke_config):
  c = smoke_config
  c.model = 'resnet20'  # BatchNorm: its statistics must be those of the global batch
  c.image_size = 16
  c.num_train_steps = STEPS
  c.log_every_steps = 1
  c.checkpoint_every_steps = 4
  c.keep_checkpoints = 10
  c.batch_size = 32
  c.eval_batch_size = 64
  c.learning_rate = 0.01  # gentle: early training amplifies reduction-order rounding
  c.augment = 'crop_flip'
  return c


def _command(config, workdir, *extra):
  fields = ('data_dir', 'model', 'image_size', 'num_train_steps', 'log_every_steps',
            'checkpoint_every_steps', 'keep_checkpoints', 'batch_size', 'eval_batch_size',
            'learning_rate', 'augment')
  return [sys.executable, '-m', 'experiments.train', '--config=configs/default.py:smoke',
          *[f'--config.{f}={config[f]}' for f in fields], f'--workdir={workdir}', *extra]


def _run(args, env=None, timeout=400):
  procs = [subprocess.Popen(a, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for a in args]
  outputs = [p.communicate(timeout=timeout)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]


def _losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r['loss'] for r in map(json.loads, f) if r['split'] == 'train']


def _weights(workdir):
  return jax.tree.leaves(jax.device_get(inference.load(workdir).variables))


def _assert_close(a, b, tol, what=''):
  """Agreement within float tolerance: the reduction order differs across devices."""
  worst = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))
  print(f'{what}: max abs difference {worst:.2e}')  # the figure WORKSPACE.md records
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


@pytest.fixture(scope='module')
def reference(digits_dir, tmp_path_factory):
  from configs import default
  config = default.get_config('smoke')
  config.data_dir = digits_dir
  config = _config(config)
  workdir = str(tmp_path_factory.mktemp('one_device'))
  results = loop.train_and_evaluate(config, workdir)
  return config, workdir, results


def test_eight_devices_with_sharded_params_match_one_device_and_restore_on_one(reference,
                                                                             tmp_path):
  config, one, results = reference
  eight = str(tmp_path / 'eight')
  _run([_command(config, eight, '--config.shard_params=True')],
       env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
  assert json.load(open(os.path.join(eight, 'results.json')))['num_devices'] == 8
  assert len(_losses(eight)) == STEPS
  _assert_close(_losses(eight), _losses(one), 2e-3, '8 vs 1 devices, losses')
  _assert_close(_weights(eight), _weights(one), 2e-3, '8 vs 1 devices, weights')
  # Saved on 8 devices at step 4, restored and continued here on 1.
  shutil.rmtree(os.path.join(eight, 'checkpoints', str(STEPS)))
  os.remove(os.path.join(eight, 'results.json'))
  config.shard_params = True
  resumed = loop.train_and_evaluate(config, eight)
  config.shard_params = False
  assert resumed['resumed_from_step'] == 4 and resumed['num_devices'] == 1
  _assert_close(_weights(eight), _weights(one), 2e-3, 'saved on 8, resumed on 1, weights')
  assert abs(resumed['test_loss'] - results['test_loss']) < 2e-3


def test_two_processes_train_together_like_one(reference, tmp_path):
  config, one, _ = reference
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  two = str(tmp_path / 'two')
  _run([_command(config, two, f'--coordinator_address=localhost:{port}', '--num_processes=2',
                 f'--process_id={i}') for i in range(2)])
  results = json.load(open(os.path.join(two, 'results.json')))
  assert results['num_processes'] == 2 and results['num_devices'] == 2
  _assert_close(_losses(two), _losses(one), 2e-3, '2 processes vs 1, losses')
  _assert_close(_weights(two), _weights(one), 2e-3, '2 processes vs 1, weights')


def test_a_batch_that_does_not_divide_the_devices_is_refused_before_compiling(reference, tmp_path):
  config, _, _ = reference
  proc = subprocess.run(_command(config, str(tmp_path / 'odd'), '--config.batch_size=36'),
                        cwd=ROOT, env={**os.environ,
                                       'XLA_FLAGS': '--xla_force_host_platform_device_count=8'},
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: batch_size=36 does not divide over the 8 devices; choose a multiple of 8')
