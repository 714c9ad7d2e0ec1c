"""Trust, round two (issue 17): damaged checkpoint directories, impossible config values, data wrong
in ways seen late, file-system failures, signals, config files, model names, and user errors as
types (only they are one line; a bug keeps its traceback)."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

from cnn_zoo import cli, errors, output_paths, sweep
from cnn_zoo.train import config as config_lib
from cnn_zoo.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}


def _config(smoke_config, steps=12, every=4):
  smoke_config.num_train_steps = steps
  smoke_config.checkpoint_every_steps = every
  smoke_config.keep_checkpoints = 3
  smoke_config.log_every_steps = 2
  return smoke_config


def _command(config, workdir, launcher='experiments.train'):
  """The launcher's command for `config` (the smoke config plus the fields tests change)."""
  fields = ('data_dir', 'num_train_steps', 'checkpoint_every_steps', 'keep_checkpoints',
            'log_every_steps', 'batch_size', 'eval_batch_size')
  return [sys.executable, '-m', launcher, '--config=configs/default.py:smoke',
          *(f'--config.{k}={config[k]}' for k in fields), f'--workdir={workdir}']


def _steps(workdir):
  path = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def _conv_impls(workdir):
  """The convolutions a run computed with (train, eval): a launched run compared bit for bit with
  an in-process one must have chosen the same."""
  with open(os.path.join(workdir, 'conv_impl.json')) as f:
    saved = json.load(f)
  return saved['conv_impl_train'], saved['conv_impl_eval']


def _one_error_line(capsys_or_text):
  text = capsys_or_text if isinstance(capsys_or_text, str) else capsys_or_text.readouterr().err
  lines = [line for line in text.strip().splitlines() if line.startswith('error: ')]
  assert len(lines) == 1 and 'Traceback' not in text, text
  return lines[0]


def _refused(fn, *args, capsys, **kwargs) -> str:
  """Calls fn through cli.run; asserts exit status 2 and one line; returns it."""
  with pytest.raises(SystemExit) as exit_info:
    cli.run(fn, *args, **kwargs)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: '), err
  return err[0]


@pytest.fixture(scope='module')
def reference(tmp_path_factory, digits_dir):
  """An uninterrupted 12-step run with checkpoints at 4, 8 and 12."""
  from configs import default
  config = default.get_config('smoke')
  config.data_dir = digits_dir
  config.batch_size, config.eval_batch_size = 32, 64
  config = _config(config)
  workdir = str(tmp_path_factory.mktemp('reference'))
  return config, workdir, loop.train_and_evaluate(config, workdir)


# 1. A damaged checkpoint directory ---------------------------------------------------------------

def test_damaged_step_directories_are_set_aside_and_the_run_resumes(reference, tmp_path):
  config, ref_dir, ref = reference
  workdir = str(tmp_path / 'run')
  shutil.copytree(ref_dir, workdir)
  os.remove(os.path.join(workdir, 'results.json'))
  ckpt = os.path.join(workdir, 'checkpoints')
  # Step 12: an empty directory (a preempted save on a network disk, an interrupted copy).
  shutil.rmtree(os.path.join(ckpt, '12'))
  os.makedirs(os.path.join(ckpt, '12'))
  # Step 8: half-copied: its metadata is there, half of its array files are not.
  files = sorted(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(ckpt, '8')) for f in fs
                 if not f.startswith('_'))
  for path in files[::2]:
    os.remove(path)
  proc = subprocess.run(_command(config, workdir), cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=ENV)
  assert proc.returncode == 0, proc.stderr[-3000:]
  said = [line for line in proc.stderr.splitlines() if 'is unreadable' in line]
  assert len(said) == 2 and 'step 12' in said[0] and 'step 8' in said[1], proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  damaged = os.path.join(workdir, 'checkpoints.damaged')
  assert sorted(os.listdir(damaged)) == ['12', '8']  # kept for inspection, out of orbax's sight
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['resumed_from_step'] == 4
  assert results['weights_sha256'] == ref['weights_sha256']
  assert _steps(workdir) == [4, 8, 12]


# 2. Numbers that can never be right ----------------------------------------------------------------

FLOAT_FIELDS = sorted(k for k, v in config_lib.defaults().items() if isinstance(v, float))


@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize('field', FLOAT_FIELDS)
def test_every_non_finite_float_is_refused_naming_the_field(field, value):
  config = config_lib.defaults()
  config[field] = value
  with pytest.raises(errors.NonFiniteConfigError, match=rf'^config\.{field}=-?(nan|inf) is not a '
                     'finite number$'):
    config_lib.validate(config)


@pytest.mark.parametrize('field,value,message', [
    ('lr_boundaries', (0.5, math.nan), r'config\.lr_boundaries\[1\]=nan is not a finite number'),
    ('num_epochs', 1e300, r'config\.num_epochs=1e\+300 overflows float32'),
    ('learning_rate', 1e39, r'config\.learning_rate=1e\+39 overflows float32'),
    ('seed', 2**64, r'config\.seed=18446744073709551616 is out of range; it must be <= 2147483647'),
    ('num_train_steps', 10**12, r'config\.num_train_steps=1000000000000 is out of range'),
    ('num_classes', 2**40, r'config\.num_classes=1099511627776 is out of range; it must be <= '),
    ('image_size', 10**6, r'config\.image_size=1000000 is out of range'),
    ('batch_size', 2**40, r'config\.batch_size=1099511627776 is out of range'),
    ('adam_b2', 1.0, r'config\.adam_b2=1\.0 must be in \[0, 1\)'),
    ('adam_eps', 0.0, r'config\.adam_eps=0\.0 is out of range'),
])
def test_values_that_overflow_or_can_never_be_right_are_refused(field, value, message):
  config = config_lib.defaults()
  config[field] = value
  with pytest.raises(errors.ConfigError, match=message):
    config_lib.validate(config)


def test_epochs_that_make_too_many_steps_are_refused_before_the_workdir(smoke_config, tmp_path,
                                                                        capsys):
  smoke_config.num_train_steps = -1
  smoke_config.num_epochs = 1e9  # valid alone, but 44 steps per epoch overflow the step count
  line = _refused(loop.train_and_evaluate, smoke_config, str(tmp_path / 'w'), capsys=capsys)
  assert line.startswith('error: config.num_epochs=1000000000.0 makes 44,000,000,000 steps')
  assert not os.path.exists(tmp_path / 'w')


# 3. Data wrong in ways only seen late ----------------------------------------------------------------

def _npz(tmp_path, name='data.npz', **overrides):
  rng = np.random.default_rng(0)
  arrays = {'x_train': rng.integers(0, 256, (40, 28, 28, 1), dtype=np.uint8),
            'y_train': np.arange(40) % 10,
            'x_test': rng.integers(0, 256, (10, 28, 28, 1), dtype=np.uint8),
            'y_test': np.arange(10)}
  arrays.update(overrides)
  path = tmp_path / name
  np.savez(path, **arrays)
  return str(path)


def _images(shape, n=40):
  return np.random.default_rng(1).integers(0, 256, (n, *shape), dtype=np.uint8)


BAD_DATA = [
    # (overrides, num_classes, message): message follows the npz path
    (dict(x_train=_images((28, 28, 4)), x_test=_images((28, 28, 4), 10)), 0,
     "4-channel images cannot be given to a model that takes 1 channel(s)"),
    (dict(x_train=_images((28, 28, 2)), x_test=_images((28, 28, 2), 10)), 0,
     "2-channel images cannot be given"),
    (dict(y_train=np.array([{'a': 1}] * 40, dtype=object)), 0, 'cannot read it as an npz file'),
    (dict(y_train=np.array(['3'] * 40)), 0, 'y_train must be a numeric array'),
    (dict(x_train=_images((28, 28))[..., 0]), 0, 'x_train must be uint8 images of shape (N, H, W, C)'),
    (dict(y_train=np.array(7)), 0, 'y_train must hold one integer label per image'),
    (dict(x_train=np.zeros((40, 0, 28, 1), np.uint8)), 0, 'an image dimension is 0'),
    (dict(y_train=np.r_[np.arange(39) % 10, 2**40]), 0, "y_train has label 1099511627776, beyond"),
    (dict(y_test=np.r_[np.arange(9), 2**31 + 5]), 10, "y_test has label 2147483653, beyond"),
    (dict(y_test=np.r_[np.arange(9), 12]), 10, 'y_test: label 12 is out of range for num_classes=10'),
    (dict(y_train=np.r_[np.arange(39) % 10, 57]), 0,
     'labels run up to 57 but 47 of those classes have no example (label 10, 11, 12, 13, 14, ...)'),
]


@pytest.mark.parametrize('overrides,num_classes,message', BAD_DATA,
                         ids=[f'npz-{i}' for i in range(len(BAD_DATA))])
def test_bad_npz_is_named_before_anything_is_compiled_or_written(smoke_config, tmp_path, capsys,
                                                                 overrides, num_classes, message):
  path = _npz(tmp_path, **overrides)
  smoke_config.dataset = f'npz:{path}'
  smoke_config.num_classes = num_classes
  t0 = time.perf_counter()
  line = _refused(loop.train_and_evaluate, smoke_config, str(tmp_path / 'w'), capsys=capsys)
  assert path in line and message in line, line
  assert time.perf_counter() - t0 < 30  # an enormous label does not build an enormous classifier
  assert not os.path.exists(tmp_path / 'w')


def _folder(tmp_path, layout):
  """layout: {split/class: number of PNG images}."""
  import tensorflow as tf
  png = tf.io.encode_png(np.zeros((8, 8, 1), np.uint8)).numpy()
  for folder, n in layout.items():
    os.makedirs(tmp_path / 'images' / folder, exist_ok=True)
    for i in range(n):
      (tmp_path / 'images' / folder / f'{i}.png').write_bytes(png)
  return str(tmp_path / 'images')


@pytest.mark.parametrize('layout,at_fault,message', [
    ({'train/a': 2, 'train/b': 0, 'test/a': 1}, 'train/b', 'an empty class folder'),
    ({'train/a': 2, 'train/b': 2, 'test/a': 1, 'test/c': 1}, 'test/c', 'have no train/ counterpart'),
])
def test_folder_classes_that_would_be_added_silently_are_named(smoke_config, tmp_path, capsys,
                                                               layout, at_fault, message):
  path = _folder(tmp_path, layout)
  smoke_config.dataset = f'folder:{path}'
  line = _refused(loop.train_and_evaluate, smoke_config, str(tmp_path / 'w'), capsys=capsys)
  assert os.path.join(path, at_fault) in line and message in line, line
  assert not os.path.exists(tmp_path / 'w')


# 4. The file system ---------------------------------------------------------------------------------

def test_a_workdir_under_a_regular_file_is_named(smoke_config, tmp_path, capsys):
  (tmp_path / 'file').write_text('not a directory')
  line = _refused(loop.train_and_evaluate, smoke_config, str(tmp_path / 'file' / 'run'),
                  capsys=capsys)
  assert line == (f'error: workdir {tmp_path}/file/run: {tmp_path}/file is a file, not a '
                  f'directory; choose another --workdir')


def _mount_tmpfs(path, options):
  os.makedirs(path, exist_ok=True)
  try:
    proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(path)],
                          capture_output=True, text=True, timeout=30, check=False)
  except OSError as e:
    pytest.skip(f'cannot mount a tmpfs here ({e})')
  if proc.returncode != 0:
    pytest.skip(f'cannot mount a tmpfs here ({proc.stderr.strip()})')


def _umount(path):
  subprocess.run(['umount', '-l', str(path)], check=False, capture_output=True, timeout=30)


def test_a_read_only_workdir_is_named(smoke_config, tmp_path, capsys):
  workdir = tmp_path / 'ro'
  if os.geteuid() != 0:
    workdir.mkdir()
    workdir.chmod(0o555)
  else:  # root writes through permissions: a read-only file system is the honest case
    _mount_tmpfs(workdir, 'size=1m,ro')
  try:
    line = _refused(loop.train_and_evaluate, smoke_config, str(workdir), capsys=capsys)
  finally:
    if os.geteuid() == 0:
      _umount(workdir)
  assert line.startswith(f'error: workdir {workdir} cannot be written: '), line


def test_unwritable_outputs_are_refused_before_the_work(tmp_path, capsys):
  (tmp_path / 'file').write_text('')
  with pytest.raises(errors.StorageError, match='is a file, not a directory'):
    output_paths.writable_dir(str(tmp_path / 'file' / 'figures'), '--out_dir')
  with pytest.raises(errors.StorageError, match='is a directory'):
    output_paths.writable_file(str(tmp_path), '--json')
  from cnn_zoo import visualize
  line = _refused(visualize.make, 'relu', str(tmp_path / 'file' / 'figs'), capsys=capsys)
  assert line == f'error: --out_dir: {tmp_path}/file is a file, not a directory'
  proc = subprocess.run([sys.executable, '-m', 'experiments.benchmark', '--models=lenet5',
                         '--steps=1', '--nopeak', f'--json={tmp_path}/file/bench.json'], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, env=ENV)
  assert proc.returncode == 2
  assert _one_error_line(proc.stderr) == (f'error: --json: cannot write {tmp_path}/file/bench.json: '
                                          f'{tmp_path}/file is a file, not a directory')
  assert 'lenet5:' not in proc.stdout  # refused before the benchmark ran


def test_a_full_disk_at_a_checkpoint_is_one_line_and_resumes_bit_identically(reference, tmp_path):
  """A real ENOSPC: a 1 MiB tmpfs holds the first LeNet-5 checkpoint (~0.5 MiB), not the second."""
  config, ref_dir, ref = reference
  disk = tmp_path / 'disk'
  _mount_tmpfs(disk, 'size=1m')
  try:
    workdir = str(disk / 'run')
    proc = subprocess.run(_command(config, workdir), cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=ENV)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_error_line(proc.stderr)
    assert 'No space left on device' in line and workdir in line, line
    assert len(line) < 300 and len(proc.stderr.splitlines()) < 40, proc.stderr[-3000:]
    assert _steps(workdir) == [4]  # nothing already saved is lost
    assert _conv_impls(workdir) == _conv_impls(ref_dir)
    subprocess.run(['mount', '-o', 'remount,size=64m', str(disk)], check=True, timeout=30)
    resumed = loop.train_and_evaluate(config, workdir)
    assert resumed['resumed_from_step'] == 4
    assert resumed['weights_sha256'] == ref['weights_sha256']
  finally:
    _umount(disk)


# 5. Signals ------------------------------------------------------------------------------------------

def _wait_for(predicate, proc, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if predicate():
      return True
    time.sleep(0.05)
  return False


def _train_records(workdir):
  try:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      return [json.loads(line) for line in f if line.endswith('\n')]
  except (OSError, ValueError):
    return []


@pytest.fixture(scope='module')
def long_reference(tmp_path_factory, digits_dir):
  """An uninterrupted 400-step run, checkpointed only at 200 and 400."""
  from configs import default
  config = default.get_config('smoke')
  config.data_dir = digits_dir
  config.batch_size, config.eval_batch_size = 32, 64
  config = _config(config, steps=400, every=200)
  config.log_every_steps = 5
  workdir = str(tmp_path_factory.mktemp('long'))
  return config, workdir, loop.train_and_evaluate(config, workdir)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_current_step_and_the_rerun_is_bit_identical(long_reference, tmp_path,
                                                                       signum):
  config, reference_dir, reference = long_reference
  workdir = str(tmp_path / 'stopped')
  proc = subprocess.Popen(_command(config, workdir), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=ENV)
  # Signal between checkpoints, once training is under way.
  assert _wait_for(lambda: _train_records(workdir), proc), 'the run ended before any step'
  proc.send_signal(signum)
  err = proc.communicate(timeout=240)[1]
  assert proc.returncode == 128 + signum, err[-3000:]
  assert 'Traceback' not in err
  stopped = [line for line in err.splitlines() if line.startswith('stopped: ')]
  assert len(stopped) == 1, err[-3000:]
  step = _steps(workdir)[-1]
  assert _conv_impls(workdir) == _conv_impls(reference_dir)
  assert 0 < step < 400 and step % 200, 'the checkpoint is at the current step, not a scheduled one'
  assert stopped[0] == (f'stopped: {signal.Signals(signum).name} at step {step} of 400: saved a '
                        f'checkpoint at step {step} in {workdir}/checkpoints; rerun the same '
                        f'command to resume')
  resumed = loop.train_and_evaluate(config, workdir)
  assert resumed['resumed_from_step'] == step
  assert resumed['weights_sha256'] == reference['weights_sha256']


def _live(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  with open(f'/proc/{pid}/stat') as f:  # a zombie has exited
    return f.read().split(') ')[-1][0] != 'Z'


def _endless_sweep_spec(tmp_path, digits_dir, seeds) -> str:
  """A sweep spec of smoke points that train until stopped (100,000 steps), one per seed."""
  spec = tmp_path / 'spec.py'
  spec.write_text(f'''import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.base = 'configs/default.py:smoke'
  c.overrides = ml_collections.ConfigDict(
      {{'num_train_steps': 100000, 'log_every_steps': 5, 'batch_size': 32,
        'data_dir': {digits_dir!r}}})
  c.axes = [{{'product': {{'seed': {list(seeds)!r}}}}}]
  return c
''')
  return str(spec)


def test_a_sweep_passes_sigterm_to_its_running_points(digits_dir, tmp_path):
  spec = _endless_sweep_spec(tmp_path, digits_dir, [0, 1])
  workdir = tmp_path / 'sweep'
  proc = subprocess.Popen([sys.executable, '-m', 'experiments.sweep', f'--config={spec}',
                           f'--workdir={workdir}', '--workers=1'], cwd=ROOT, env=ENV,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  point = str(workdir / 'seed=0')
  assert _wait_for(lambda: _train_records(point), proc), 'the sweep ended before its point trained'
  with open(os.path.join(point, '.lock')) as f:
    child = int(f.read().split()[1])
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == 128 + signal.SIGTERM, out + err
  assert not _live(child), 'the point outlived its sweep'
  assert err.strip().splitlines()[-1].startswith('stopped: sweep stopped by SIGTERM: passed to its '
                                                 '1 running point(s)'), err[-3000:]
  log = open(os.path.join(point, 'log.txt')).read()
  assert 'stopped: SIGTERM at step' in log and _steps(point)
  assert not os.path.exists(workdir / 'seed=1' / 'metrics.jsonl')  # no further point started


# 6. Config files ------------------------------------------------------------------------------------

@pytest.mark.parametrize('flag,message', [
    ('--config=configs/defualt.py',
     'error: --config=configs/defualt.py: no such config file (did you mean: configs/default.py)'),
    ('--config=configs/default.py:smok',
     "error: --config=configs/default.py:smok: unknown config argument 'smok'; valid choices: "
     "smoke"),
])
def test_a_missing_config_file_or_variant_is_one_line(tmp_path, flag, message):
  proc = subprocess.run([sys.executable, '-m', 'experiments.train', flag,
                         f'--workdir={tmp_path}/w'], cwd=ROOT, capture_output=True, text=True,
                        timeout=120, env=ENV)
  assert proc.returncode == 2
  assert _one_error_line(proc.stderr) == message
  assert not os.path.exists(tmp_path / 'w')


def _snapshot(workdir):
  return {os.path.relpath(os.path.join(r, f), workdir): os.path.getsize(os.path.join(r, f))
          for r, _, fs in os.walk(workdir) for f in fs if f != '.lock'}


def test_a_corrupt_config_json_is_unreadable_not_a_different_run(reference, tmp_path, capsys):
  config, ref_dir, _ = reference
  workdir = str(tmp_path / 'run')
  shutil.copytree(ref_dir, workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write('{"model": "lenet5", "learn')  # damaged from outside: it is written whole and renamed
  before = _snapshot(workdir)
  line = _refused(loop.train_and_evaluate, config, workdir, capsys=capsys)
  assert line.startswith(f'error: {workdir}/config.json is unreadable (JSONDecodeError: ')
  assert 'overwrite' not in line and 'different config' not in line
  assert _snapshot(workdir) == before
  # A sweep point in such a workdir fails naming the file instead of crashing the sweep.
  point = sweep.Point('run', 'configs/default.py', {}, {})
  outcome = sweep.run_point(point, str(tmp_path), sweep.Trainer(('python',), str(tmp_path)),
                            launch=lambda *_: pytest.fail('launched'))
  assert outcome.status == sweep.FAILED and 'config.json is unreadable' in outcome.message


# 7. Unknown model names -------------------------------------------------------------------------------

def test_an_unknown_model_gets_the_closest_names_and_the_listing_command(capsys):
  config = config_lib.defaults()
  config.model = 'resnet21'
  line = _refused(config_lib.validate, config, capsys=capsys)
  assert line.startswith("error: config.model='resnet21' is not valid; did you mean resnet")
  assert 'resnet20' in line.split('?')[0] and 'vgg' not in line
  assert line.endswith('`python -m experiments.summary --list` lists all '
                       f'{len(config_lib.models.names())} models')
  assert len(line) < 200
  proc = subprocess.run([sys.executable, '-m', 'experiments.summary', '--list'], cwd=ROOT,
                        capture_output=True, text=True, timeout=120, env=ENV)
  assert proc.returncode == 0
  assert sorted(line.split()[0] for line in proc.stdout.splitlines()) == \
      config_lib.models.names()


# 8. Errors as types -----------------------------------------------------------------------------------

def test_only_user_errors_are_one_line(capsys):
  for cls in (errors.ConfigError, errors.DataError, errors.WorkdirError):
    assert issubclass(cls, errors.UserError) and issubclass(cls, ValueError)
  assert issubclass(errors.NotFoundError, FileNotFoundError)
  assert _refused(lambda: (_ for _ in ()).throw(errors.DataError('bad data')),
                  capsys=capsys) == 'error: bad data'

  def bug():  # a ValueError from inside JAX or this code is a bug, not the user's mistake
    raise ValueError('internal: shapes (3,) and (4,) do not broadcast')

  with pytest.raises(ValueError, match='do not broadcast'):
    cli.run(bug)
  with pytest.raises(FileNotFoundError):
    cli.run(lambda: open(os.path.join('/nonexistent', 'x')))


def test_an_internal_error_keeps_its_traceback_in_a_launcher(tmp_path):
  script = tmp_path / 'launcher.py'
  script.write_text('''from absl import app
from cnn_zoo import cli


def main(argv):
  cli.run(lambda: [].pop())  # an IndexError: a bug


app.run(main, flags_parser=cli.parse_flags)
''')
  proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True,
                        timeout=120, env={**ENV, 'PYTHONPATH': ROOT})
  assert proc.returncode != 0 and proc.returncode != 2
  assert 'Traceback' in proc.stderr and 'IndexError: pop from empty list' in proc.stderr
  assert 'error: ' not in proc.stderr


def test_stopped_exits_with_128_plus_the_signal(capsys):
  def stopped():
    raise errors.Stopped('SIGTERM at step 3 of 9: saved', signal.SIGTERM)
  with pytest.raises(SystemExit) as exit_info:
    cli.run(stopped)
  assert exit_info.value.code == 143
  assert capsys.readouterr().err == 'stopped: SIGTERM at step 3 of 9: saved\n'


def test_model_kwargs_floats_are_checked_too():
  config = config_lib.defaults()
  config.model_kwargs = ml_collections.ConfigDict({'dropout': math.nan})
  with pytest.raises(errors.NonFiniteConfigError, match=r'config\.model_kwargs\.dropout=nan'):
    config_lib.validate(config)
