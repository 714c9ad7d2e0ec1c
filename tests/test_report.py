"""The comparison report, on hand-written runs with known numbers."""

import csv
import json
import os
import subprocess
import sys

import pytest

from cnn_zoo import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET = {'model': 'lenet5', 'dataset': 'digits', 'params': 61_706,
         'fwd_macs_per_example': 416_520, 'epochs': 2.0, 'steps': 20, 'batch_size': 16}
RESNET = {'model': 'resnet20', 'dataset': 'digits', 'params': 269_722,
          'fwd_macs_per_example': 40_551_040, 'epochs': 2.0, 'steps': 20, 'batch_size': 16}


def _run(workdir, name, config, results=None, curve=()):
  """A run directory as train_and_evaluate leaves it; `curve`: (epoch, test acc, train loss)."""
  path = workdir / name
  path.mkdir(parents=True)
  (path / 'config.json').write_text(json.dumps({'data_dir': '', 'model_kwargs': {}, **config}))
  lines = []
  for epoch, accuracy, loss in curve:
    lines.append({'step': int(10 * epoch), 'split': 'train', 'loss': loss, 'epoch': epoch,
                  'train_time_s': 4.0 * epoch})
    lines.append({'step': int(10 * epoch), 'split': 'test', 'accuracy': accuracy, 'epoch': epoch})
  (path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))
  if results is not None:
    (path / 'results.json').write_text(json.dumps({**results, 'seed': config['seed']}))


@pytest.fixture
def sweep_dir(tmp_path):
  """Two seeds of LeNet-5, one of ResNet-20 and an unfinished second ResNet-20 seed."""
  _run(tmp_path, 'model=lenet5,seed=0', {'model': 'lenet5', 'learning_rate': 0.05, 'seed': 0},
       {**LENET, 'test_accuracy': 0.90, 'test_top5': 0.99, 'train_time_s': 10.0,
        'train_images_per_s': 1000.0}, curve=[(1.0, 0.80, 0.5), (2.0, 0.90, 0.25)])
  _run(tmp_path, 'model=lenet5,seed=1', {'model': 'lenet5', 'learning_rate': 0.05, 'seed': 1},
       {**LENET, 'test_accuracy': 0.95, 'test_top5': 1.00, 'train_time_s': 12.0,
        'train_images_per_s': 900.0}, curve=[(1.0, 0.85, 0.7), (2.0, 0.95, 0.15)])
  _run(tmp_path, 'model=resnet20,seed=0',  # from a version of cnn_zoo with a new config field
       {'model': 'resnet20', 'learning_rate': 0.1, 'seed': 0, 'new_field': 'x'},
       {**RESNET, 'test_accuracy': 0.975, 'test_top5': 1.0, 'train_time_s': 100.0,
        'train_images_per_s': 50.0}, curve=[(1.0, 0.9, 0.3), (2.0, 0.975, 0.1)])
  _run(tmp_path, 'model=resnet20,seed=1', {'model': 'resnet20', 'learning_rate': 0.1, 'seed': 1},
       curve=[(1.0, 0.5, 1.0)])
  (tmp_path / 'not_a_run').mkdir()
  return tmp_path


def test_table_aggregates_seeds_as_mean_and_sample_std(sweep_dir):
  text = report.write(str(sweep_dir))
  assert text == (sweep_dir / 'comparison.md').read_text()
  table = [line for line in text.splitlines() if line.startswith('|')]
  assert table == [
      '| model | dataset | setting | seeds | params | MACs | test top-1 (%) | test top-5 (%) '
      '| epochs | train time (s) | train images/s | to 90% top-1 |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|',
      '| lenet5 | digits | learning_rate=0.05 | 2 | 61.71K | 416.52K | 92.50 ± 3.54 '
      '| 99.50 ± 0.71 | 2 | 11.0 ± 1.4 | 950 ± 71 | 20 ± 0 steps, 8.0 ± 0.0 s |',
      '| resnet20 | digits | learning_rate=0.1 | 1 | 269.72K | 40.55M | 97.50 | 100.00 | 2 '
      '| 100.0 | 50 | 10 steps, 4.0 s |']
  assert text.splitlines()[2] == 'Budget: 20 steps of 16 images (2 epochs) per run.'
  assert '3 finished run(s)' in text and '2 configuration(s)' in text
  assert 'sample standard deviation (n - 1)' in text
  assert 'Not finished (left out): model=resnet20,seed=1.' in text


def test_csv_holds_exact_numbers(sweep_dir):
  report.write(str(sweep_dir))
  with open(sweep_dir / 'comparison.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == report.CSV_COLUMNS
  assert rows[0] == {
      'model': 'lenet5', 'dataset': 'digits', 'setting': 'learning_rate=0.05', 'seeds': '0 1',
      'runs': 'model=lenet5,seed=0 model=lenet5,seed=1', 'params': '61706',
      'fwd_macs_per_example': '416520', 'test_top1_pct_mean': '92.5',
      'test_top1_pct_std': '3.535534', 'test_top5_pct_mean': '99.5',
      'test_top5_pct_std': '0.707107', 'epochs': '2.0', 'train_time_s_mean': '11.0',
      'train_time_s_std': '1.414214', 'train_images_per_s_mean': '950.0',
      'train_images_per_s_std': '70.710678', 'steps_to_target_mean': '20.0',
      'seconds_to_target_mean': '8.0', 'seeds_reaching_target': '2'}
  assert (rows[1]['model'], rows[1]['seeds'], rows[1]['test_top1_pct_mean'],
          rows[1]['test_top1_pct_std']) == ('resnet20', '0', '97.5', '')


def test_plots_are_written_as_small_pngs(sweep_dir):
  report.write(str(sweep_dir))
  for name in report.PLOTS:
    data = (sweep_dir / name).read_bytes()
    assert data.startswith(b'\x89PNG'), name
    assert len(data) < 300_000, name


def test_learning_curves_average_seeds_per_step(sweep_dir):
  rows = report.group(report.collect(str(sweep_dir)))
  assert report._curve(rows[0], 'test', 'accuracy', 100) == ([1.0, 2.0], [82.5, 92.5])
  epochs, losses = report._curve(rows[0], 'train', 'loss')
  assert epochs == [1.0, 2.0] and losses == pytest.approx([0.6, 0.2])


def test_one_seed_per_configuration_has_no_setting_column_or_plus_minus(tmp_path):
  for model, results in (('lenet5', LENET), ('resnet20', RESNET)):
    _run(tmp_path, model, {'model': model, 'seed': 0},
         {**results, 'test_accuracy': 0.5, 'test_top5': 0.75, 'train_time_s': 1.25,
          'train_images_per_s': None, 'epochs': 0.359551})
  table = [line for line in report.write(str(tmp_path)).splitlines() if line.startswith('|')]
  assert table[0].startswith('| model | dataset | seeds | params |')
  assert table[2] == ('| lenet5 | digits | 1 | 61.71K | 416.52K | 50.00 | 75.00 | 0.36 | 1.2 | – '
                      '| not reached |')


def test_time_to_target_is_the_first_evaluation_that_reaches_it(tmp_path):
  _run(tmp_path, 'a', {'model': 'lenet5', 'seed': 0}, {**LENET, 'test_accuracy': 0.95},
       curve=[(1.0, 0.5, 1.0), (2.0, 0.91, 0.5), (3.0, 0.89, 0.4), (4.0, 0.95, 0.3)])
  _run(tmp_path, 'b', {'model': 'lenet5', 'seed': 1}, {**LENET, 'test_accuracy': 0.8},
       curve=[(1.0, 0.5, 1.0), (2.0, 0.8, 0.5)])
  runs = {r.name: r for r in report.collect(str(tmp_path))}
  assert report.time_to_target(runs['a']) == (20, 8.0)
  assert report.time_to_target(runs['b']) is None
  assert report.time_to_target(runs['b'], target=0.8) == (20, 8.0)
  row, = report.group(list(runs.values()))
  assert report._to_target_cell(row) == '20 steps, 8.0 s (1 of 2 seeds)'


def test_an_empty_or_missing_workdir(tmp_path):
  assert 'No finished runs yet.' in report.write(str(tmp_path))
  assert (tmp_path / 'comparison.csv').read_text().startswith('model,dataset,setting,')
  with pytest.raises(FileNotFoundError, match='workdir not found'):
    report.write(str(tmp_path / 'missing'))


def test_compare_launcher_prints_the_table(sweep_dir):
  proc = subprocess.run([sys.executable, '-m', 'experiments.compare', f'--workdir={sweep_dir}'],
                        cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
  assert proc.returncode == 0, proc.stderr
  assert '| resnet20 | digits | learning_rate=0.1 | 1 |' in proc.stdout
  assert (sweep_dir / 'throughput.png').exists()


def test_committed_results_rebuild_elsewhere(tmp_path):
  """docs/results holds runs' own files; the report rebuilds from them without writing there."""
  results = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         'docs', 'results')
  before = sorted(os.listdir(results))
  text = report.write(results, str(tmp_path))
  assert sorted(os.listdir(results)) == before
  row = next(line for line in text.splitlines() if line.startswith('| resnet20 |'))
  assert '| 87.55 |' in row and '| 164 |' in row  # the H200 run of He et al.'s recipe
  assert (tmp_path / 'learning_curves.png').stat().st_size > 10_000
