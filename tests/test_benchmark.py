"""A fast smoke of the benchmark: every field is there and sensible."""

import json
import os
import subprocess
import sys

from cnn_zoo import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_model_reports_every_field():
  r = benchmark.benchmark_model('lenet5', batch_size=8, steps=2, warmup=1, min_seconds=0.0)
  assert r['params'] == 61_706 and r['fwd_macs'] == 416_520 and r['batch_size'] == 8
  for key in ('compile_s', 'train_img_s', 'infer_img_s', 'gflop_s', 'peak_rss_mb'):
    assert r[key] > 0, key
  assert r['train_steps_timed'] >= 2
  assert benchmark.default_batch_size('resnet18') == 16
  assert benchmark.default_batch_size('resnet20') == 128


def test_launcher_writes_json(tmp_path):
  out = tmp_path / 'bench.json'
  proc = subprocess.run([sys.executable, '-m', 'experiments.benchmark', '--models=lenet5',
                         '--batch_size=8', '--steps=2', '--nopeak', f'--json={out}'],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads(out.read_text())
  assert results['lenet5']['train_img_s'] > 0
  assert results['_machine']['platform'] == 'cpu'


def test_input_pipeline_compares_the_loop_with_the_bare_step(digits_dir):
  r = benchmark.input_pipeline('digits', 'lenet5', batch_size=16, steps=5, data_dir=digits_dir)
  for path in ('device', 'tfdata'):
    assert r[f'{path}_pipeline_img_s'] > 0 and r[f'{path}_loop_img_s'] > 0
    # The loop cannot train faster than its own step, give or take timing noise.
    assert 0 < r[f'{path}_loop_vs_step'] < 1.5
  assert r['steps'] == 5 and r['batch_size'] == 16


def test_step_benchmark_runs_without_tensorflow(tmp_path):
  """A machine with JAX alone (an accelerator host without TensorFlow) can benchmark the zoo."""
  out = tmp_path / 'bench.json'
  script = ("import runpy, sys\n"
            "sys.modules['tensorflow'] = sys.modules['tensorflow_datasets'] = None\n"
            f"sys.argv = ['benchmark', '--models=lenet5', '--batch_size=8', '--steps=2', "
            f"'--nopeak', '--json={out}']\n"
            "runpy.run_module('experiments.benchmark', run_name='__main__')\n")
  proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(out.read_text())['lenet5']['params'] == 61_706
