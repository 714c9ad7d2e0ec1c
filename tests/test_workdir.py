"""The workdir, through the launcher and in-process: a live training process holds it against a
second one, and a run of another config is refused with exit status 2, leaving every file of the
run as it was; --overwrite removes exactly the run's files."""

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cnn_zoo.train import config as config_lib
from cnn_zoo.train import loop, workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(workdir, data_dir, *overrides):
  return [sys.executable, '-m', 'experiments.train', '--config=configs/default.py:smoke',
          f'--config.data_dir={data_dir}', *overrides, f'--workdir={workdir}']


def _contents(workdir):
  """Every file's bytes (by digest) and every directory; the lock file is rewritten by each taker."""
  found = {}
  for root, dirs, names in os.walk(workdir):
    for d in dirs:
      found[os.path.relpath(os.path.join(root, d), workdir) + '/'] = None
    for name in names:
      if name != '.lock':
        with open(os.path.join(root, name), 'rb') as f:
          found[os.path.relpath(os.path.join(root, name), workdir)] = \
              hashlib.sha256(f.read()).hexdigest()
  return found


def test_a_live_training_process_holds_its_workdir_against_a_second(digits_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  command = _launch(workdir, digits_dir, '--config.num_train_steps=100000',
                    '--config.log_every_steps=1000')
  first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    # The lock names its holder once taken; config.json follows, before the first step.
    deadline = time.time() + 180
    holder = f'pid {first.pid} on '
    while time.time() < deadline and first.poll() is None:
      lock = os.path.join(workdir, '.lock')
      if os.path.exists(lock) and open(lock).read().startswith(holder) and \
          os.path.exists(os.path.join(workdir, 'config.json')):
        break
      time.sleep(0.1)
    assert first.poll() is None, 'the first run ended before a second could be started'
    # Refused within seconds; a second run that got in would train until the timeout.
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.poll() is None  # the holder is still training
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
  assert second.returncode == 2, second.stderr[-2000:]
  last = second.stderr.strip().splitlines()[-1]
  assert last.startswith(f'error: workdir {workdir} is being written by a live run ({holder}')


def test_a_run_of_another_config_is_refused_by_the_launcher_and_nothing_changes(smoke_config,
                                                                              tmp_path):
  smoke_config.num_train_steps = 4
  smoke_config.checkpoint_every_steps = 2
  workdir = str(tmp_path / 'done')
  loop.train_and_evaluate(smoke_config, workdir)
  before = _contents(workdir)
  assert {'config.json', 'metrics.jsonl', 'results.json', 'checkpoints/4/'} <= set(before)
  fields = [f'--config.{k}={smoke_config[k]}' for k in (
      'num_train_steps', 'checkpoint_every_steps', 'log_every_steps', 'batch_size',
      'eval_batch_size')]
  proc = subprocess.run(_launch(workdir, smoke_config.data_dir, *fields,
                                '--config.learning_rate=0.5'),
                        cwd=ROOT, capture_output=True, text=True, timeout=180)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f'error: workdir {workdir} holds a run of a different config (learning_rate=0.05 -> 0.5)')
  assert _contents(workdir) == before


# The same guarantees in this process, without training (fast enough to mutation-test the module).


def test_the_lock_holds_the_workdir_until_released_and_names_its_holder(tmp_path):
  workdir = str(tmp_path)
  holder = f'pid {os.getpid()} on {os.uname().nodename}'
  lock = workdir_lib.Lock(workdir)
  with pytest.raises(workdir_lib.WorkdirError) as e:
    workdir_lib.Lock(workdir)
  assert str(e.value) == (f'workdir {workdir} is being written by a live run ({holder}); '
                          'wait for it or choose another --workdir')
  with open(os.path.join(workdir, '.lock'), encoding='utf-8') as f:
    assert f.read() == holder  # the refused taker left the holder's line as it was
  lock.release()
  workdir_lib.Lock(workdir).release()  # free again
  # A holder that wrote nothing is 'another process'.
  with open(os.path.join(workdir, '.lock'), 'w', encoding='utf-8') as f:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(workdir_lib.WorkdirError, match=r'live run \(another process\)'):
      workdir_lib.Lock(workdir)


def test_only_fields_that_change_what_a_run_computes_make_it_another_run():
  saved = {'model': 'lenet5', 'seed': 0, **{k: 1 for k in workdir_lib.OPERATIONAL_FIELDS}}
  now = {'model': 'lenet5', 'seed': 0, **{k: 2 for k in workdir_lib.OPERATIONAL_FIELDS}}
  assert workdir_lib.differing_fields(saved, now) == []
  # A field the saved run predates counts at its default; one it has and the new config lacks differs.
  assert workdir_lib.differing_fields(saved, {**now, 'remat': 'none'}, {'remat': 'none'}) == []
  assert workdir_lib.differing_fields(saved, {**now, 'remat': 'blocks'}, {'remat': 'none'}) == \
      ['remat']
  assert workdir_lib.differing_fields({**saved, 'x': 1}, now) == ['x']
  assert workdir_lib.differing_fields(saved, {**now, 'seed': 1, 'model': 'vgg11'}) == \
      ['model', 'seed']  # sorted


def _config_json(**changes):
  return json.dumps({**json.loads(config_lib.defaults().to_json()), **changes})


def test_a_workdir_of_another_config_is_refused_and_overwrite_removes_exactly_the_runs_files(
    tmp_path):
  workdir = str(tmp_path)
  workdir_lib.check_same_run(workdir, _config_json(), overwrite=False)  # no run yet
  with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
    f.write(_config_json(seed=1, learning_rate=0.5, batch_size=8, model='vgg11'))
  for name in workdir_lib.RUN_FILES[:3]:
    os.makedirs(os.path.join(workdir, name, 'inner'))
  for name in workdir_lib.RUN_FILES[3:5] + ('notes.txt',):
    open(os.path.join(workdir, name), 'w').close()
  before = sorted(os.listdir(workdir))
  workdir_lib.check_same_run(workdir, _config_json(seed=1, learning_rate=0.5, batch_size=8,
                                                   model='vgg11', log_every_steps=7), False)
  with pytest.raises(workdir_lib.WorkdirError) as e:
    workdir_lib.check_same_run(workdir, _config_json(), overwrite=False)
  defaults = config_lib.defaults()
  assert str(e.value) == (
      f'workdir {workdir} holds a run of a different config (batch_size=8 -> '
      f'{defaults.batch_size!r}, learning_rate=0.5 -> {defaults.learning_rate!r}, model=\'vgg11\' '
      f'-> {defaults.model!r}, ...); choose another --workdir or pass --overwrite to replace it')
  assert sorted(os.listdir(workdir)) == before
  for changes, shown in (  # up to three fields, all shown and no '...'
      (dict(seed=1, learning_rate=0.5, batch_size=8), f"model='vgg11' -> {defaults.model!r}"),
      (dict(seed=1), f'batch_size=8 -> {defaults.batch_size!r}, learning_rate=0.5 -> '
                     f"{defaults.learning_rate!r}, model='vgg11' -> {defaults.model!r}")):
    with pytest.raises(workdir_lib.WorkdirError) as e:
      workdir_lib.check_same_run(workdir, _config_json(**changes), overwrite=False)
    assert str(e.value) == (f'workdir {workdir} holds a run of a different config ({shown}); '
                            'choose another --workdir or pass --overwrite to replace it')
  workdir_lib.check_same_run(workdir, _config_json(), overwrite=True)
  assert os.listdir(workdir) == ['notes.txt']


def test_a_run_from_before_a_field_existed_is_the_same_run_at_its_default(tmp_path):
  saved = json.loads(_config_json())
  del saved['remat'], saved['weight_decay']
  with open(tmp_path / 'config.json', 'w', encoding='utf-8') as f:
    json.dump(saved, f)
  workdir_lib.check_same_run(str(tmp_path), _config_json(), overwrite=False)
  with pytest.raises(workdir_lib.WorkdirError, match=r"\(remat='none' -> 'blocks'\)"):
    workdir_lib.check_same_run(str(tmp_path), _config_json(remat='blocks'), overwrite=False)


@pytest.mark.parametrize('content, reason', [('{"seed": ', 'JSONDecodeError'),
                                             ('[1, 2]', 'ValueError: a JSON list, not an object')])
def test_an_unreadable_config_json_keeps_the_run_even_with_overwrite(tmp_path, content, reason):
  workdir = str(tmp_path)
  path = os.path.join(workdir, 'config.json')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(content)
  os.makedirs(os.path.join(workdir, 'checkpoints'))
  with pytest.raises(workdir_lib.WorkdirError) as e:
    workdir_lib.check_same_run(workdir, _config_json(), overwrite=False)
  assert str(e.value).startswith(f'{path} is unreadable ({reason}')
  assert 'overwrite' not in str(e.value) and os.path.isdir(os.path.join(workdir, 'checkpoints'))
  # Even with --overwrite (issue 30): it may be another tool's file, with its checkpoints/.
  with pytest.raises(workdir_lib.WorkdirError) as e_overwrite:
    workdir_lib.check_same_run(workdir, _config_json(), overwrite=True)
  assert str(e_overwrite.value) == str(e.value)
  assert sorted(os.listdir(workdir)) == ['checkpoints', 'config.json']


def test_a_workdir_is_created_and_one_under_a_regular_file_is_named(tmp_path):
  workdir = str(tmp_path / 'a' / 'b')
  workdir_lib.prepare(workdir)
  assert os.path.isdir(workdir)
  workdir_lib.prepare(workdir)  # exists already: fine
  blocker = tmp_path / 'file'
  blocker.write_text('')
  with pytest.raises(workdir_lib.WorkdirError) as e:
    workdir_lib.prepare(str(blocker / 'run'))
  assert str(e.value) == (f'workdir {blocker / "run"}: {blocker} is a file, not a directory; '
                          'choose another --workdir')


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='needs Linux /proc')
def test_a_workdir_that_cannot_be_created_or_written_is_named():
  """/proc refuses new files and directories even to root, as a read-only disk would."""
  from cnn_zoo import errors
  with pytest.raises(errors.StorageError, match=r'^cannot create workdir /proc/cnn_zoo_run: \w'):
    workdir_lib.prepare('/proc/cnn_zoo_run')
  with pytest.raises(errors.StorageError, match=r'^workdir /proc cannot be written: \w'):
    workdir_lib.prepare('/proc')  # exists, but takes no file
