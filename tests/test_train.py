"""End to end: train_and_evaluate on the embedded digits, its outputs, resume and determinism."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from cnn_zoo.train import loop
from configs import default as default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lines(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def test_run_leaves_everything_a_comparison_needs(smoke_config, tmp_path):
  results = loop.train_and_evaluate(smoke_config, str(tmp_path))
  on_disk = json.load(open(tmp_path / 'results.json'))
  assert on_disk == json.loads(json.dumps(results))
  for key in ('model', 'dataset', 'params', 'batch_stats', 'flops_per_example', 'test_accuracy',
              'test_top5', 'test_loss', 'train_time_s', 'compile_time_s', 'train_images_per_s',
              'num_devices', 'platform', 'jax_version', 'weights_sha256'):
    assert key in results, key
  assert results['params'] == 61_706 and results['batch_stats'] == 0
  assert results['test_examples'] == 360  # 360 = 5 full batches of 64 + a padded one of 40
  assert len(results['weights_sha256']) == 64
  config = json.load(open(tmp_path / 'config.json'))
  assert config['model'] == 'lenet5' and config['num_train_steps'] == 6
  records = _lines(tmp_path / 'metrics.jsonl')
  train = [r for r in records if r['split'] == 'train']
  assert [r['step'] for r in train] == [3, 6]
  assert {'loss', 'accuracy', 'learning_rate', 'images_per_s', 'epoch'} <= set(train[0])
  assert records[-1]['split'] == 'test' and records[-1]['count'] == 360
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path / 'tensorboard'))
  assert 6 in [int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit()]


def test_resume_continues_to_bit_identical_weights(smoke_config, tmp_path):
  smoke_config.num_train_steps = 12
  smoke_config.checkpoint_every_steps = 3
  smoke_config.keep_checkpoints = 10
  smoke_config.augment = 'crop'
  full = loop.train_and_evaluate(smoke_config, str(tmp_path / 'full'))
  # An interrupted run: the same workdir as it stood at step 6 (later checkpoints never written,
  # a metrics line written after the checkpoint, and a torn last line).
  shutil.copytree(tmp_path / 'full', tmp_path / 'cut')
  for step in ('9', '12'):
    shutil.rmtree(tmp_path / 'cut' / 'checkpoints' / step)
  os.remove(tmp_path / 'cut' / 'results.json')
  with open(tmp_path / 'cut' / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 7, "split": "tr')
  resumed = loop.train_and_evaluate(smoke_config, str(tmp_path / 'cut'))
  assert resumed['resumed_from_step'] == 6
  assert resumed['weights_sha256'] == full['weights_sha256']
  assert resumed['test_loss'] == full['test_loss']
  steps = [(r['step'], r['split']) for r in _lines(tmp_path / 'cut' / 'metrics.jsonl')]
  assert steps == [(r['step'], r['split']) for r in _lines(tmp_path / 'full' / 'metrics.jsonl')]
  # Training time and speed cover the whole run, the time before the cut included.
  at_cut = next(r for r in _lines(tmp_path / 'full' / 'metrics.jsonl')
                if (r['step'], r['split']) == (6, 'train'))
  assert resumed['train_time_s'] > at_cut['train_time_s'] > 0
  assert resumed['train_images_per_s'] == pytest.approx(
      12 * smoke_config.batch_size / resumed['train_time_s'])


def test_same_config_and_seed_give_bit_identical_weights(smoke_config, tmp_path):
  smoke_config.augment = 'crop'
  a = loop.train_and_evaluate(smoke_config, str(tmp_path / 'a'))
  b = loop.train_and_evaluate(smoke_config, str(tmp_path / 'b'))
  smoke_config.seed = 1
  c = loop.train_and_evaluate(smoke_config, str(tmp_path / 'c'))
  assert a['weights_sha256'] == b['weights_sha256'] != c['weights_sha256']


def test_lenet5_reaches_97_percent_on_digits(digits_dir, tmp_path):
  config = default_config.get_config()
  config.data_dir = digits_dir
  results = loop.train_and_evaluate(config, str(tmp_path))
  assert results['test_accuracy'] >= 0.97


@pytest.mark.parametrize('override,message', [
    ('--config.model=lenet6', "error: config.model='lenet6' is not valid; did you mean lenet5"),
    ('--config.bach_size=7', "error: unknown config field 'bach_size' (Did you mean"),
    ('--config.num_epochs=ten', "error: "),
])
def test_launcher_turns_a_bad_value_into_one_line(tmp_path, override, message):
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.train', '--config=configs/default.py', override,
       f'--workdir={tmp_path}'],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(message), proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not os.listdir(tmp_path)


def test_a_time_budget_stops_with_a_checkpoint_and_incomplete_results(smoke_config, tmp_path):
  smoke_config.num_train_steps = 40
  smoke_config.log_every_steps = 1
  smoke_config.time_budget_s = 1e-9  # used up by the first step
  cut = loop.train_and_evaluate(smoke_config, str(tmp_path))
  assert (cut['complete'], cut['steps'], cut['test_examples']) == (False, 1, 360)
  assert 1 in [int(d) for d in os.listdir(tmp_path / 'checkpoints') if d.isdigit()]
  # The same command with time to spare goes on from there to the end, as a run never cut would.
  smoke_config.time_budget_s = 0.0  # an operational field: the same run
  done = loop.train_and_evaluate(smoke_config, str(tmp_path))
  assert (done['complete'], done['steps'], done['resumed_from_step']) == (True, 40, 1)
  whole = loop.train_and_evaluate(smoke_config, str(tmp_path / 'whole'))
  assert done['weights_sha256'] == whole['weights_sha256']


def test_a_run_from_before_weight_init_and_input_pipeline_resumes_only_as_it_ran(tmp_path):
  from cnn_zoo.train import config as config_lib
  from cnn_zoo.train import workdir
  old = json.loads(config_lib.defaults().to_json())
  del old['weight_init'], old['input_pipeline'], old['weight_decay_on']
  now = json.loads(config_lib.defaults().to_json())
  now['weight_decay_on'] = 'all'  # what the recipes now set
  assert workdir.differing_fields(old, now) == ['input_pipeline', 'weight_decay_on', 'weight_init']
  now.update(weight_init='flax', input_pipeline='tfdata', weight_decay_on='kernels')
  assert workdir.differing_fields(old, now) == []
