"""Experiment trackers through the writers' seam (issue 34): the real MLflow (a local sqlite
store) and Weights & Biases (offline mode) receive a run's config, metrics and results.json, and
a resumed run goes on in the same tracker run. tests/test_packaging.py trains into MLflow through
the installed `cnn-zoo` command."""

import glob
import json
import os

import pytest

from cnn_zoo import errors
from cnn_zoo.train import config as config_lib, trackers, writers
from configs import default

RESULTS = {'model': 'lenet5', 'steps': 6, 'test_accuracy': 0.75, 'params': 61706,
           'complete': True, 'layers': [{'name': 'conv1'}]}


class Recorder(writers.Writer):
  """A writer passed to train_and_evaluate, as a user's own tracker would be."""

  def __init__(self):
    self.calls = []

  def start(self, config, resume_step):
    self.calls.append(('start', config['model'], resume_step))

  def write(self, step, split, values):
    self.calls.append(('write', step, split, sorted(values)))

  def close(self, results=None):
    self.calls.append(('close', results and results['steps']))


def _config(**fields):
  config = default.get_config('smoke')
  config.update(fields)
  return config


def _run_once(workdir, config, resume_step, records, results):
  writer = writers.MetricWriter(workdir, resume_step=resume_step, config=config)
  for step, split, values in records:
    writer.write(step, split, values)
  writer.close(results)
  return writer


def test_mlflow_receives_config_metrics_and_results_and_a_resume_goes_on_in_its_run(
    mlflow_store, tmp_path, monkeypatch):
  MlflowClient = pytest.importorskip('mlflow.tracking').MlflowClient
  monkeypatch.chdir(tmp_path)  # MLflow's default artifact root, ./mlruns, lands here
  store = mlflow_store
  config = _config(trackers=('mlflow',), mlflow_uri=store, learning_rate=0.25)
  config.model_kwargs.activation = 'tanh'
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  # A run stopped at step 3 (a signal: no results), then resumed to its end by a new process.
  _run_once(workdir, config, 0, [(3, 'train', {'loss': 2.0, 'accuracy': 0.25, 'note': 'x'})], None)
  client = MlflowClient(tracking_uri=store)
  run_id = json.load(open(os.path.join(workdir, trackers.IDS_FILE)))['mlflow']
  assert client.get_run(run_id).info.status == 'KILLED'
  config.log_every_steps = 2  # an operational field: a resume may change it
  _run_once(workdir, config, 3, [(6, 'train', {'loss': 1.0, 'accuracy': 0.5}),
                                 (6, 'test', {'accuracy': 0.75, 'count': 360})], RESULTS)
  run = client.get_run(run_id)
  assert run.info.status == 'FINISHED'
  assert [r.info.run_id for r in client.search_runs(
      [client.get_experiment_by_name('cnn_zoo').experiment_id])] == [run_id]
  params = run.data.params
  assert params['model'] == 'lenet5' and params['learning_rate'] == '0.25'
  assert params['model_kwargs.activation'] == 'tanh' and params['trackers'] == '["mlflow"]'
  assert params['log_every_steps'] == '5'  # as the run began
  history = lambda key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
  assert history('train/loss') == [(3, 2.0), (6, 1.0)]
  assert history('test/accuracy') == [(6, 0.75)] and history('test/count') == [(6, 360)]
  assert 'train/note' not in run.data.metrics
  assert run.data.metrics['test_accuracy'] == 0.75 and run.data.metrics['params'] == 61706
  assert 'complete' not in run.data.metrics  # a bool is not a metric
  path = client.download_artifacts(run_id, 'results.json', str(tmp_path))
  assert json.load(open(path)) == RESULTS


def test_wandb_offline_keeps_config_metrics_and_results_in_the_workdir(tmp_path, monkeypatch):
  wandb = pytest.importorskip('wandb')
  monkeypatch.setenv('WANDB_MODE', 'offline')
  monkeypatch.setenv('WANDB_SILENT', 'true')
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(RESULTS, f)  # the loop writes results.json before it closes the writers
  config = _config(trackers=('wandb',), learning_rate=0.125)
  _run_once(workdir, config, 0, [(3, 'train', {'loss': 2.5}), (6, 'test', {'accuracy': 0.75})],
            RESULTS)
  wandb.teardown()  # waits for W&B's service to write its log, as the end of a process does
  run_id = json.load(open(os.path.join(workdir, trackers.IDS_FILE)))['wandb']
  [run_dir] = glob.glob(os.path.join(workdir, 'wandb', f'offline-run-*-{run_id}'))
  with open(os.path.join(run_dir, 'files', 'results.json')) as f:
    assert json.load(f) == RESULTS
  # wandb 0.31 has no Python reader of its offline log: the protobuf records hold the names
  # and values as written (W&B's own `wandb sync` uploads them).
  log = open(os.path.join(run_dir, f'run-{run_id}.wandb'), 'rb').read()
  for text in (b'train/loss', b'test/accuracy', b'learning_rate', b'0.125', b'test_accuracy',
               b'61706', b'cnn_zoo'):
    assert text in log, text


def test_the_loop_hands_a_run_to_the_writers_it_is_given(tmp_path):
  from cnn_zoo.train import loop
  recorder = Recorder()
  config = _config(num_train_steps=6, log_every_steps=3, batch_size=16, eval_batch_size=120)
  results = loop.train_and_evaluate(config, str(tmp_path / 'run'), writers=(recorder,))
  assert recorder.calls == [('start', 'lenet5', 0), ('write', 3, 'train', recorder.calls[1][3]),
                            ('write', 6, 'train', recorder.calls[1][3]),
                            ('write', 6, 'test', ['accuracy', 'count', 'epoch', 'loss', 'top5']),
                            ('close', 6)]
  assert 'loss' in recorder.calls[1][3] and results['steps'] == 6
  with open(tmp_path / 'run' / 'metrics.jsonl') as f:  # the same records, through the same seam
    assert [(r['step'], r['split']) for r in map(json.loads, f)] == [
        (3, 'train'), (6, 'train'), (6, 'test')]


@pytest.mark.parametrize('value,message', [
    (('mlfow',), "config.trackers: 'mlfow' is not a tracker; valid names: mlflow, wandb"),
    (('mlflow', 'mlflow'), "config.trackers=('mlflow', 'mlflow') names a tracker twice"),
])
def test_a_wrong_tracker_is_one_line_before_anything_runs(value, message):
  config = _config(trackers=value)
  with pytest.raises(errors.ConfigError) as e:
    config_lib.validate(config)
  assert str(e.value) == message


def test_a_tracker_not_installed_names_the_extra(monkeypatch):
  monkeypatch.setattr(trackers.importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(errors.ConfigError, match=r"'wandb' is not installed \(pip install "
                                               r"'cnn_zoo\[trackers\]'\)"):
    trackers.check(('wandb',))
