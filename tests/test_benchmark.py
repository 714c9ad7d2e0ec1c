"""A fast smoke of the benchmark: every field is there and sensible."""

import json
import os
import subprocess
import sys

import pytest

from cnn_zoo import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_model_reports_every_field():
  r = benchmark.benchmark_model('lenet5', batch_size=8, steps=2, warmup=1, min_seconds=0.0,
                                infer_batch_size=16)
  assert r['params'] == 61_706 and r['fwd_macs'] == 416_520 and r['batch_size'] == 8
  assert r['infer_batch_size'] == 16
  for key in ('compile_s', 'train_img_s', 'infer_img_s', 'gflop_s', 'peak_rss_mb'):
    assert r[key] > 0, key
  assert r['train_steps_timed'] >= 2
  # 'auto' as measured on this machine, for each step.
  assert r['conv_impl'] == 'auto'
  assert {r['conv_impl_train'], r['conv_impl_eval']} <= {'xla', 'im2col'}
  assert benchmark.default_batch_size('resnet18') == 16
  assert benchmark.default_batch_size('resnet20') == 128


def test_step_memory_counts_the_state_and_grows_with_the_batch():
  small = benchmark.benchmark_model('lenet5', batch_size=8, steps=1, warmup=0, min_seconds=0.0)
  large = benchmark.benchmark_model('lenet5', batch_size=256, steps=1, warmup=0, min_seconds=0.0)
  params_and_momentum_mb = 2 * 61_706 * 4 / 2 ** 20
  assert small['train_step_memory_mb'] > params_and_momentum_mb
  # 248 more 32x32 images in and their activations kept for the backward pass
  assert large['train_step_memory_mb'] - small['train_step_memory_mb'] > 248 * 32 * 32 * 4 / 2 ** 20
  assert small['device_peak_mb'] is None  # the CPU allocator keeps no peak


def test_launcher_writes_json(tmp_path):
  out = tmp_path / 'bench.json'
  proc = subprocess.run([sys.executable, '-m', 'experiments.benchmark', '--models=lenet5',
                         '--batch_size=8', '--steps=2', '--nopeak', f'--json={out}'],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads(out.read_text())
  assert results['lenet5']['train_img_s'] > 0
  assert results['_machine']['platform'] == 'cpu'
  assert results['lenet5']['conv_impl_train'] in ('xla', 'im2col')


def test_launcher_takes_every_convolution_choice():
  proc = subprocess.run([sys.executable, '-m', 'experiments.benchmark', '--conv_impl=fft'],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and 'fft' in proc.stderr
  assert 'auto|xla|im2col|im2col_bf16' in proc.stderr


def test_input_pipeline_compares_the_loop_with_the_bare_step(digits_dir):
  r = benchmark.input_pipeline('digits', 'lenet5', batch_size=16, steps=5, data_dir=digits_dir)
  for path in ('device', 'tfdata'):
    assert r[f'{path}_pipeline_img_s'] > 0 and r[f'{path}_loop_img_s'] > 0
    # The loop cannot train faster than its own step, give or take timing noise.
    assert 0 < r[f'{path}_loop_vs_step'] < 1.5
  assert r['steps'] == 5 and r['batch_size'] == 16


def test_step_benchmark_runs_without_tensorflow(tmp_path):
  """A machine with JAX alone (an accelerator host without TensorFlow) can benchmark the zoo:
  nor does the step benchmark need the loop's TensorBoard writer, orbax or Pillow."""
  out = tmp_path / 'bench.json'
  script = ("import runpy, sys\n"
            "for name in ('tensorflow', 'tensorflow_datasets', 'tensorboard', 'orbax',\n"
            "             'orbax.checkpoint', 'PIL'):\n"
            "  sys.modules[name] = None\n"
            f"sys.argv = ['benchmark', '--models=lenet5', '--batch_size=8', '--steps=2', "
            f"'--nopeak', '--json={out}']\n"
            "runpy.run_module('experiments.benchmark', run_name='__main__')\n")
  proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(out.read_text())['lenet5']['params'] == 61_706


def test_side_by_side_pairs_each_model_with_the_reference(tmp_path):
  (tmp_path / 'jax_float32.json').write_text(json.dumps({
      '_machine': {'platform': 'gpu'},
      'resnet20': {'train_img_s': 300.0, 'infer_img_s': 1000.0, 'train_step_memory_mb': 10.0,
                   'compile_s': 2.0}}))
  (tmp_path / 'torch_float32.json').write_text(json.dumps({
      'resnet20': {'train_img_s': 100.0, 'infer_img_s': 500.0, 'peak_gpu_mem_bytes': 20 * 2 ** 20},
      'resnet56': {'train_img_s': 40.0, 'infer_img_s': 200.0}}))
  rows = benchmark.side_by_side(str(tmp_path)).splitlines()
  assert rows[2] == '| resnet20 | float32 | 300 | 100 | 3.00x | 1,000 | 500 | 2.00x | 10 | 20 | 2.0 |'
  assert rows[3] == '| resnet56 | float32 | - | 40 | - | - | 200 | - | - | - | - |'
  assert len(rows) == 4
  with pytest.raises(FileNotFoundError, match='no jax_DTYPE.json'):
    benchmark.side_by_side(str(tmp_path / 'empty'))
