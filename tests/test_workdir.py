"""The workdir through the launcher: a live training process holds it against a second one, and a
run of another config is refused with exit status 2, leaving every file of the run as it was."""

import hashlib
import os
import signal
import subprocess
import sys
import time

from cnn_zoo.train import loop

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
