"""Trust, round three (issue 30), sweeps that report: an unreadable config.json or results.json
leaves its run out of the report (named) instead of crashing `compare` and the end of every sweep,
and a point stopped by its time budget goes on at the next sweep run instead of being "already
finished" forever."""

import json
import os
import subprocess
import sys

import pytest

from cnn_zoo import report, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
RESULTS = {'model': 'lenet5', 'dataset': 'digits', 'params': 61_706,
           'fwd_macs_per_example': 416_520, 'epochs': 2.0, 'steps': 20, 'batch_size': 16,
           'test_accuracy': 0.9, 'test_top5': 0.99, 'train_time_s': 10.0,
           'train_images_per_s': 1000.0, 'seed': 0, 'complete': True}


def _run(workdir, name, config='{"model": "lenet5", "seed": 0}', results=json.dumps(RESULTS),
         metrics=b''):
  path = workdir / name
  path.mkdir(parents=True)
  if config is not None:
    (path / 'config.json').write_bytes(config.encode() if isinstance(config, str) else config)
  if results is not None:
    (path / 'results.json').write_bytes(results.encode() if isinstance(results, str) else results)
  (path / 'metrics.jsonl').write_bytes(metrics)


@pytest.fixture
def damaged_sweep(tmp_path):
  _run(tmp_path, 'seed=0')
  _run(tmp_path, 'seed=1', config='{"model": "lenet5", "se')  # torn by a copy
  _run(tmp_path, 'seed=2', results=b'\xff\xfe not json')
  _run(tmp_path, 'seed=3', results='[0.9]')
  _run(tmp_path, 'seed=5', results=json.dumps({**RESULTS, 'test_accuracy': '90%'}))
  _run(tmp_path, 'seed=4', config='{"model": "lenet5", "seed": 4}',
       results=json.dumps({**RESULTS, 'seed': 4}), metrics=b'\xff\xfe\n{"step": 1}\n')
  return tmp_path


def test_unreadable_runs_are_left_out_by_name_and_the_report_is_still_written(damaged_sweep):
  text = report.write(str(damaged_sweep))
  assert (damaged_sweep / report.MARKDOWN).read_text() == text
  assert (damaged_sweep / report.CSV).exists()
  assert '2 finished run(s)' in text  # seed=0 and seed=4 (its undecodable metrics lines skipped)
  left_out = [line for line in text.splitlines() if line.startswith('Unreadable (left out): ')]
  assert left_out == ['Unreadable (left out): seed=1 (config.json: JSONDecodeError: Unterminated '
                      'string starting at: line 1 column 21 (char 20)), seed=2 (results.json: '
                      "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: "
                      'invalid start byte), seed=3 (results.json: ValueError: a JSON list, not an '
                      "object), seed=5 (results.json: ValueError: test_accuracy='90%' is not a "
                      "number)."], text


@pytest.mark.slow  # ~30 s on 2 loaded cores (the launcher's imports); report.write is tested above
def test_compare_launcher_writes_the_report_of_a_damaged_sweep(damaged_sweep):
  proc = subprocess.run([sys.executable, '-m', 'experiments.compare',
                         f'--workdir={damaged_sweep}'], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=ENV)
  assert proc.returncode == 0 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert 'Unreadable (left out): seed=1' in proc.stdout


def _point():
  return sweep.Point('seed=0', 'configs/default.py', {'seed': 0}, {})


def test_a_point_stopped_by_its_time_budget_goes_on_at_the_next_sweep_run(tmp_path):
  run_dir = tmp_path / 'seed=0'
  run_dir.mkdir()
  (run_dir / 'config.json').write_text(json.dumps({'seed': 0}))
  (run_dir / 'results.json').write_text(json.dumps({**RESULTS, 'steps': 8, 'complete': False}))
  launched = []

  def launch(point, workdir, log):  # what the trainer does: resume, finish, rewrite results.json
    launched.append(point.name)
    (run_dir / 'results.json').write_text(json.dumps({**RESULTS, 'test_accuracy': 0.95}))
    return 0

  trainer = sweep.Trainer(('python',), str(tmp_path))
  outcome = sweep.run_point(_point(), str(tmp_path), trainer, launch)
  assert launched == ['seed=0'] and outcome.status == sweep.SUCCEEDED
  assert outcome.message == 'test top-1 95.00%'
  outcome = sweep.run_point(_point(), str(tmp_path), trainer, launch)  # now it is finished
  assert launched == ['seed=0'] and outcome.status == sweep.SKIPPED


def test_a_point_whose_results_json_is_unreadable_fails_naming_it(tmp_path):
  run_dir = tmp_path / 'seed=0'
  run_dir.mkdir()
  (run_dir / 'results.json').write_text('{"test_acc')
  trainer = sweep.Trainer(('python',), str(tmp_path))
  outcome = sweep.run_point(_point(), str(tmp_path), trainer,
                            launch=lambda *_: pytest.fail('launched'))
  assert outcome.status == sweep.FAILED
  assert outcome.message.startswith(f'{run_dir}/results.json is unreadable (JSONDecodeError: ')
  # A run that ends writing a results.json without its numbers fails, not a KeyError in the sweep.
  (run_dir / 'results.json').unlink()

  def launch(point, workdir, log):
    (run_dir / 'results.json').write_text('{}')
    return 0

  outcome = sweep.run_point(_point(), str(tmp_path), trainer, launch)
  assert outcome.status == sweep.FAILED
  assert outcome.message == (f'{run_dir}/results.json is unreadable (ValueError: no test_accuracy); '
                             f'remove it to evaluate the point again from its checkpoint')
