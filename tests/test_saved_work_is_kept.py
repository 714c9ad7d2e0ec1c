"""Trust: kill -9 at any moment resumes to bit-identical weights; corrupt checkpoints, NaNs, bad
configs and bad data are named, and nothing already saved is lost."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

from cnn_zoo import cli
from cnn_zoo.train import loop, workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _checkpoint_steps(workdir):
  path = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def _resumable(smoke_config, steps=24):
  smoke_config.num_train_steps = steps
  smoke_config.checkpoint_every_steps = 4
  smoke_config.keep_checkpoints = 2
  smoke_config.augment = 'crop'
  smoke_config.log_every_steps = 2
  return smoke_config


def _train_command(config, workdir):
  overrides = [f'--config.{k}={v}' for k, v in (
      ('data_dir', config.data_dir), ('num_train_steps', config.num_train_steps),
      ('checkpoint_every_steps', config.checkpoint_every_steps),
      ('keep_checkpoints', config.keep_checkpoints), ('augment', config.augment),
      ('log_every_steps', config.log_every_steps), ('batch_size', config.batch_size),
      ('eval_batch_size', config.eval_batch_size))]
  return [sys.executable, '-m', 'experiments.train', '--config=configs/default.py:smoke',
          *overrides, f'--workdir={workdir}']


def test_kill_9_at_several_points_resumes_to_bit_identical_weights(smoke_config, tmp_path):
  # Enough steps after the second kill point that a resumed run is still training when killed.
  config = _resumable(smoke_config, steps=200)
  reference = loop.train_and_evaluate(config, str(tmp_path / 'reference'))
  workdir = str(tmp_path / 'killed')
  kills = []
  # Kill when the first checkpoint has appeared, then a little after the next run resumed.
  for wait_for_step, delay in ((4, 0.0), (12, 0.3)):
    proc = subprocess.Popen(_train_command(config, workdir), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
      if any(s >= wait_for_step for s in _checkpoint_steps(workdir)):
        time.sleep(delay)
        break
      time.sleep(0.05)
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      kills.append(_checkpoint_steps(workdir))
    proc.wait(timeout=60)
  assert kills, 'the run finished before it could be killed'
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  resumed = loop.train_and_evaluate(config, workdir)
  assert resumed['resumed_from_step'] > 0
  assert resumed['weights_sha256'] == reference['weights_sha256']
  # The metrics log holds each record once and no torn line.
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  keys = [(r['step'], r['split']) for r in records]
  assert len(keys) == len(set(keys))
  assert [k for k in keys if k[1] == 'train'] == [(s, 'train') for s in range(2, 201, 2)]


def test_corrupt_latest_checkpoint_is_reported_and_the_previous_one_used(smoke_config, tmp_path,
                                                                       caplog):
  config = _resumable(smoke_config, steps=12)
  config.keep_checkpoints = 3
  full = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert _checkpoint_steps(tmp_path / 'run') == [4, 8, 12]
  os.remove(tmp_path / 'run' / 'results.json')
  for root, _, files in os.walk(tmp_path / 'run' / 'checkpoints' / '12'):
    for name in files:
      with open(os.path.join(root, name), 'r+b') as f:
        f.truncate(max(0, os.path.getsize(os.path.join(root, name)) // 3))
  with caplog.at_level('WARNING'):
    resumed = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert 'checkpoint at step 12 is unreadable' in caplog.text
  assert resumed['resumed_from_step'] == 8
  assert resumed['weights_sha256'] == full['weights_sha256']


def test_nan_stops_the_run_naming_the_step_and_keeps_good_checkpoints(smoke_config, tmp_path):
  config = _resumable(smoke_config, steps=12)
  config.learning_rate = 1e9  # diverges within a few steps
  with pytest.raises(loop.NonFiniteError, match=r'non-finite loss or gradient at step \d+'):
    loop.train_and_evaluate(config, str(tmp_path / 'nan'))
  assert not os.path.exists(tmp_path / 'nan' / 'results.json')
  config.nonfinite = 'skip'
  results = loop.train_and_evaluate(config, str(tmp_path / 'skip'))
  assert 0 < results['skipped_steps'] <= 12  # counted, and the run went to the end


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, digits_dir):
  from configs import default
  config = default.get_config('smoke')
  config.data_dir = digits_dir
  config.num_train_steps = 4
  config.checkpoint_every_steps = 2
  workdir = str(tmp_path_factory.mktemp('finished'))
  loop.train_and_evaluate(config, workdir)
  return config, workdir


def _snapshot(workdir):
  files = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(root, name)
      if name != '.lock':
        files[os.path.relpath(path, workdir)] = (os.path.getsize(path), os.path.getmtime(path))
  return files


def _npz(tmp_path, **overrides):
  rng = np.random.default_rng(0)
  arrays = {'x_train': rng.integers(0, 256, (40, 28, 28, 1), dtype=np.uint8),
            'y_train': rng.integers(0, 10, 40).astype(np.uint8),
            'x_test': rng.integers(0, 256, (10, 28, 28, 1), dtype=np.uint8),
            'y_test': rng.integers(0, 10, 10).astype(np.uint8)}
  arrays.update(overrides)
  path = tmp_path / 'data.npz'
  np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
  return f'npz:{path}'


BAD_INPUTS = [
    ('model', lambda p: 'lenet6', "config.model='lenet6' is not valid; did you mean lenet5"),
    ('dataset', lambda p: 'imagenet', "unknown dataset 'imagenet'; valid choices: digits"),
    ('optimizer', lambda p: 'lion', "config.optimizer='lion' is not valid; valid choices: sgd"),
    ('schedule', lambda p: 'linear', "config.schedule='linear' is not valid"),
    ('batch_size', lambda p: -8, 'config.batch_size=-8 is out of range; it must be > 0'),
    ('batch_size', lambda p: 4096, 'config.batch_size=4096 exceeds the 1437 training examples'),
    ('learning_rate', lambda p: 0.0, 'config.learning_rate=0.0 is out of range'),
    ('num_epochs', lambda p: -1.0, 'config.num_epochs=-1.0 is out of range'),
    ('image_size', lambda p: 16, "image size 16x16 is too small for model 'lenet5'"),
    ('model_kwargs', lambda p: ml_collections.ConfigDict({'depth': 7}),
     "config.model_kwargs depth is not an argument of model 'lenet5'; valid choices: activation"),
    ('model_kwargs', lambda p: ml_collections.ConfigDict({'activation': 'swish'}),
     "config.model_kwargs {'activation': 'swish'} cannot build model 'lenet5': 'swish'"),
    ('dataset', lambda p: f'npz:{p}/missing.npz', 'npz dataset file not found'),
    ('dataset', lambda p: _npz(p, y_test=None), 'missing array(s) y_test'),
    ('dataset', lambda p: _npz(p, x_train=np.zeros((40, 28, 28, 1), np.float32)),
     'x_train must be uint8 images'),
    ('dataset', lambda p: _npz(p, y_train=np.full(40, 12, np.uint8)),
     'label 12 is out of range for num_classes=10'),
    ('dataset', lambda p: f'folder:{p}', 'an image folder holds train/<class>/*'),
]


@pytest.mark.parametrize('field,value,message', BAD_INPUTS,
                         ids=[f'{f}-{i}' for i, (f, _, _) in enumerate(BAD_INPUTS)])
def test_bad_input_is_one_line_and_saved_work_is_untouched(finished_run, tmp_path, capsys, field,
                                                          value, message):
  config, workdir = finished_run
  before = _snapshot(workdir)
  bad = config.copy_and_resolve_references()
  bad[field] = value(tmp_path)
  if field == 'dataset' and bad.dataset.startswith('npz:'):
    bad.num_classes = 10
  with pytest.raises(SystemExit) as exit_info:
    cli.run(loop.train_and_evaluate, bad, workdir)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err
  assert _snapshot(workdir) == before


def test_a_workdir_of_another_config_is_refused_unless_overwritten(finished_run, tmp_path):
  config, workdir = finished_run
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  other = config.copy_and_resolve_references()
  other.learning_rate = 0.5
  with pytest.raises(workdir_lib.WorkdirError, match='holds a run of a different config '
                     r'\(learning_rate=0.05 -> 0.5\)'):
    loop.train_and_evaluate(other, copy)
  results = loop.train_and_evaluate(other, copy, overwrite=True)
  assert results['resumed_from_step'] == 0
  assert json.load(open(os.path.join(copy, 'config.json')))['learning_rate'] == 0.5


def test_a_workdir_being_written_by_a_live_run_is_refused(finished_run):
  config, workdir = finished_run
  lock = workdir_lib.Lock(workdir)  # as a live run holds it
  try:
    with pytest.raises(workdir_lib.WorkdirError, match='is being written by a live run'):
      loop.train_and_evaluate(config, workdir)
  finally:
    lock.release()
