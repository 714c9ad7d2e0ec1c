"""A fast smoke of the benchmark: every field is there and sensible."""

import json
import os
import subprocess
import sys

import pytest

from cnn_zoo import benchmark, errors
from cnn_zoo.train import build as build_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The PyTorch reference and an interpreter with torch: the environment's, else the repository's
# neighbours (../shared/bench, ../torchenv or ../torchvenv); without them, their tests skip.
TORCH_REF = os.environ.get('CNN_ZOO_TORCH_REF',
                           os.path.join(ROOT, '..', 'shared', 'bench', 'torch_ref.py'))


def _torch_python():
  for python in (os.environ.get('CNN_ZOO_TORCH_PYTHON'), sys.executable,
                 os.path.join(ROOT, '..', 'torchenv', 'bin', 'python'),
                 os.path.join(ROOT, '..', 'torchvenv', 'bin', 'python')):
    if python and os.path.exists(python) and subprocess.run(
        [python, '-c', 'import torch'], capture_output=True, check=False).returncode == 0:
      return python
  pytest.skip('no Python with torch (CNN_ZOO_TORCH_PYTHON)')


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
  """The launcher leaves JAX's backend to its children (a TPU opens in one process only): a
  sitecustomize gives the launcher alone a platform that does not exist."""
  out, site = tmp_path / 'bench.json', tmp_path / 'site'
  site.mkdir()
  (site / 'sitecustomize.py').write_text(
      f"import os\nif os.getppid() == {os.getpid()}:\n"
      "  os.environ['JAX_PLATFORMS'] = 'none_in_the_launcher'\n"
      "elif os.environ.get('JAX_PLATFORMS') == 'none_in_the_launcher':\n"
      "  os.environ['JAX_PLATFORMS'] = ''\n")
  proc = subprocess.run([sys.executable, '-m', 'experiments.benchmark', '--models=lenet5',
                         '--batch_size=8', '--steps=2', f'--json={out}'],
                        cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=str(site)))
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads(out.read_text())
  assert results['lenet5']['train_img_s'] > 0
  assert results['_machine']['platform'] == 'cpu'
  assert results['lenet5']['conv_impl_train'] in ('xla', 'im2col')
  assert results['_machine']['matmul_peak_gflop_s'] > 0
  # Measured in a process of its own: at least the step's buffers, and not this test's process.
  r = results['lenet5']
  assert r['peak_mem_bytes'] >= r['train_step_memory_mb'] * 2 ** 20
  assert r['remat'] == 'none'


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
  nor does the step benchmark need the loop's TensorBoard writer, orbax or Pillow. The modules
  are blocked by a sitecustomize on PYTHONPATH, so in the launcher and in its per-model child."""
  out, site = tmp_path / 'bench.json', tmp_path / 'site'
  site.mkdir()
  (site / 'sitecustomize.py').write_text(
      "import os, sys\n"
      "for name in ('tensorflow', 'tensorflow_datasets', 'tensorboard', 'orbax',\n"
      "             'orbax.checkpoint', 'PIL'):\n"
      "  sys.modules[name] = None\n"
      f"with open({str(tmp_path / 'pids')!r}, 'a') as f:\n"
      "  f.write(f'{os.getpid()}\\n')\n")
  env = dict(os.environ, PYTHONPATH=str(site))
  proc = subprocess.run([sys.executable, '-m', 'experiments.benchmark', '--models=lenet5',
                         '--batch_size=8', '--steps=2', '--nopeak', f'--json={out}'],
                        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(out.read_text())['lenet5']['params'] == 61_706
  # The launcher, the child that describes the machine, the child that benchmarks lenet5.
  assert len(set((tmp_path / 'pids').read_text().split())) == 3


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


def test_each_model_gets_a_peak_memory_of_its_own():
  """The bigger step first, then a smaller one: the second peak is the second model's, not the
  first's high-water mark."""
  big = benchmark.in_child('train_step_peak', name='lenet5', batch_size=2048, steps=1)
  small = benchmark.in_child('train_step_peak', name='resnet20', batch_size=8, steps=1)
  assert 'error' not in big and 'error' not in small, (big, small)
  for r in (big, small):
    assert r['train_step_memory_mb'] * 2 ** 20 <= r['peak_mem_bytes'] < 4 * 2 ** 30, r
  assert big['train_step_memory_mb'] > 400 and small['train_step_memory_mb'] < 100
  assert small['peak_mem_bytes'] < big['peak_mem_bytes'] - 150 * 2 ** 20, (big, small)


def test_a_childs_peak_is_not_its_parents():
  """The kernel's rusage of a child (os.wait4) starts from the parent's resident memory at the
  fork; the child's own peak does not."""
  ballast = bytearray(400_000_000)  # touched: resident in this process
  proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(0.3)'])
  code, peak = benchmark.wait_with_peak(proc)
  assert code == 0 and 0 < peak < 100_000_000 < len(ballast)
  assert benchmark.own_peak_bytes() > 400_000_000


def test_a_failing_or_killed_child_is_reported_and_measured():
  failed = benchmark.in_child('train_step_peak', name='lenet_5', batch_size=8)
  assert failed['error'].startswith("ConfigError: config.model='lenet_5' is not valid"), failed
  assert failed['peak_mem_bytes'] > 0
  # 200 MB touched, then SIGKILL, as the out-of-memory killer would: the peak is still read.
  proc = subprocess.Popen([sys.executable, '-c', 'import os, signal, time; '
                           'b = bytearray(200_000_000); time.sleep(0.5); '
                           'os.kill(os.getpid(), signal.SIGKILL)'])
  code, peak = benchmark.wait_with_peak(proc)
  assert code == -9 and peak > 200_000_000
  assert benchmark.exit_reason(code).startswith('killed by SIGKILL')
  assert benchmark.exit_reason(3) == 'exited with status 3'


@pytest.mark.parametrize('args, message', [
    (['--models=lenet5,resnet_20'], "'resnet_20'"),
    (['--models=lenet5', '--remat=blocks'], "config.remat='blocks': model 'lenet5'"),
    (['--max_batch_memory_gb=0'], '--max_batch_memory_gb=0.0: must be a positive'),
    (['--json=/proc/no/bench.json'], '--json'),
])
def test_bad_input_is_one_line_before_compiling(args, message):
  proc = subprocess.run([sys.executable, '-m', 'experiments.benchmark', '--nopeak', *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.startswith('error: ') and message in proc.stderr, proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1 and 'compiled' not in proc.stdout


def test_max_batch_fits_and_one_more_does_not():
  budget_gb = 0.02
  r = benchmark.max_batch('lenet5', budget_gb, log=lambda _: None)
  assert r['batch_size'] > 16 and r['next_batch_size'] == r['batch_size'] + 1, r
  # Checked apart from the search: compiled again here at the answer and one above it.
  config = benchmark.step_config('lenet5', 8)
  built = build_lib.build(config, build_lib.fixed_plan(config, 10))

  def xla_bytes(b):
    return benchmark.step_memory_mb(built.compile_train(built.abstract_state, b)) * 2 ** 20

  assert xla_bytes(r['batch_size']) <= budget_gb * 2 ** 30 < xla_bytes(r['batch_size'] + 1)
  assert r['xla_step_bytes'] == int(xla_bytes(r['batch_size']))
  with pytest.raises(errors.ConfigError, match='must be a positive'):
    benchmark.max_batch('lenet5', -1)


@pytest.mark.slow
def test_max_batch_measures_a_real_step():
  r = benchmark.max_batch('lenet5', 0.6, measure=True, log=lambda _: None)
  run = r['measured'][-1]
  assert run['batch_size'] == r['batch_size'] and 'error' not in run, r
  # The budget holds for the measured process, Python and JAX included.
  assert r['xla_step_bytes'] <= r['measured_peak_bytes'] <= r['budget_bytes'], r


def test_cpu_side_by_side_pairs_each_model_with_its_peak_memory(tmp_path):
  mib = 2 ** 20
  (tmp_path / 'jax_cpu.json').write_text(json.dumps({
      '_machine': {'platform': 'cpu'},
      'lenet5': {'batch_size': 128, 'infer_batch_size': 128, 'train_img_s': 9000.0,
                 'infer_img_s': 20000.0, 'peak_mem_bytes': 500 * mib, 'train_step_memory_mb': 33.4,
                 'compile_s': 0.71},
      'densenet_bc_100': {'error': 'killed by SIGKILL', 'peak_mem_bytes': 9000 * mib}}))
  (tmp_path / 'torch_cpu.json').write_text(json.dumps({
      'lenet5': {'train_batch': 128, 'infer_batch': 256, 'train_img_s': 12000.0,
                 'infer_img_s': 30000.0, 'peak_mem_bytes': 350 * mib},
      'densenet_bc_100': {'train_batch': 128, 'infer_batch': 256, 'train_img_s': 18.3,
                          'infer_img_s': 45.4, 'peak_mem_bytes': 2500 * mib}}))
  rows = benchmark.side_by_side(str(tmp_path)).splitlines()
  assert rows[0].startswith('| model | batch | JAX train img/s | PyTorch train img/s |')
  assert rows[2] == '| lenet5 | 128 | 9,000 | 12,000 | 0.75x | 20,000 | 30,000 | 500 | 350 | 33 | 0.7 |'
  assert rows[3] == '| densenet_bc_100 | 128 | - | 18.3 | - | - | 45.4 | 9,000 | 2,500 | - | - |'
  assert rows[5:] == ['lenet5: inference batch JAX 128, PyTorch 256',
                      'densenet_bc_100: JAX failed: killed by SIGKILL']


@pytest.mark.skipif(not os.path.exists(TORCH_REF), reason='no torch_ref.py')
def test_torch_reference_runs_one_process_per_model(tmp_path):
  torch_python = _torch_python()
  out = tmp_path / 'torch_cpu.json'
  results = benchmark.torch_reference(torch_python, TORCH_REF, ['lenet5'], str(out),
                                      '--min-time 0 --min-steps 1 --warmup 0 --batch 8',
                                      log=lambda _: None)
  assert json.loads(out.read_text()) == results
  r = results['lenet5']
  assert r['params'] == 61_706 and r['train_img_s'] > 0 and r['train_batch'] == 8
  assert 50 * 2 ** 20 < r['peak_mem_bytes'] < 4 * 2 ** 30
  with pytest.raises(errors.ConfigError, match='unknown model'):
    benchmark.torch_reference(torch_python, TORCH_REF, ['lenet5', 'lenet_5'])
  with pytest.raises(errors.NotFoundError, match='--torch_ref=/no/such.py'):
    benchmark.torch_reference(torch_python, '/no/such.py', ['lenet5'])
