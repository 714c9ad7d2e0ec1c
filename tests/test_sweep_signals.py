"""Trust, round three (issue 30), sweeps that stop: a sweep killed outright (SIGKILL, the OOM killer)
stops its running points, each saving a checkpoint, instead of leaving them training as orphans;
SIGHUP (a closed terminal or SSH session) saves a checkpoint like SIGTERM and exits with 129, in a
run and in a sweep, which passes it on to its points."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from cnn_zoo import errors, sweep
from cnn_zoo.train import loop
from tests.test_user_errors import _endless_sweep_spec, _train_records as _records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}


def _wait_for(predicate, timeout=240, proc=None):
  deadline = time.time() + timeout
  while time.time() < deadline and (proc is None or proc.poll() is None):
    if predicate():
      return True
    time.sleep(0.05)
  return False


def _steps(workdir):
  path = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def _live(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  try:
    with open(f'/proc/{pid}/stat') as f:  # a zombie has exited
      return f.read().split(') ')[-1][0] != 'Z'
  except OSError:
    return False


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux')
def test_a_sweep_killed_outright_stops_its_points_with_a_checkpoint(digits_dir, tmp_path):
  spec = _endless_sweep_spec(tmp_path, digits_dir, [0])
  workdir = tmp_path / 'sweep'
  proc = subprocess.Popen([sys.executable, '-m', 'experiments.sweep', f'--config={spec}',
                           f'--workdir={workdir}'], cwd=ROOT, env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  point = str(workdir / 'seed=0')
  child = None
  try:
    assert _wait_for(lambda: _records(point), proc=proc), 'the sweep ended before its point trained'
    with open(os.path.join(point, '.lock')) as f:
      child = int(f.read().split()[1])
    proc.kill()  # SIGKILL: the sweep can pass nothing on
    proc.wait(timeout=60)
    assert _wait_for(lambda: not _live(child), timeout=120), 'the point outlived its sweep'
  finally:
    if child and _live(child):
      os.kill(child, signal.SIGKILL)
  log = open(os.path.join(point, 'log.txt')).read()
  stopped = [line for line in log.splitlines() if line.startswith('stopped: SIGTERM at step ')]
  assert len(stopped) == 1 and 'saved a checkpoint at step' in stopped[0], log[-3000:]
  assert _steps(point) and 'Traceback' not in log


_CHILD = '''import signal, sys, time
def hup(signum, frame):
    print('got SIGHUP: saving', flush=True)
    sys.exit(128 + signum)
signal.signal(signal.SIGHUP, hup)
open(sys.argv[-1].split('=', 1)[1] + '.ready', 'w').close()
time.sleep(30)  # a sweep that does not pass SIGHUP on sees this point finish
'''


def test_a_sweep_passes_sighup_on_to_its_points_and_exits_129(tmp_path):
  script = tmp_path / 'child.py'
  script.write_text(_CHILD)
  trainer = sweep.Trainer((sys.executable, str(script)), str(tmp_path))
  points = [sweep.Point('seed=0', 'configs/default.py', {'seed': 0}, {}),
            sweep.Point('seed=1', 'configs/default.py', {'seed': 1}, {})]
  workdir = tmp_path / 'sweep'
  ready = workdir / 'seed=0.ready'
  previous = signal.signal(signal.SIGHUP, lambda *_: None)  # without the fix: not this process
  try:
    hangup = threading.Thread(target=lambda: _wait_for(ready.exists, 60) and
                              os.kill(os.getpid(), signal.SIGHUP))
    hangup.start()
    with pytest.raises(errors.Stopped) as e:
      sweep.run(points, str(workdir), trainer, echo=lambda _: None)
    hangup.join()
  finally:
    signal.signal(signal.SIGHUP, previous)
  assert e.value.exit_code == 129
  assert str(e.value).startswith('sweep stopped by SIGHUP: passed to its 1 running point(s)')
  assert 'got SIGHUP: saving' in (workdir / 'seed=0' / 'log.txt').read_text()
  assert not (workdir / 'seed=1.ready').exists()  # no further point started


@pytest.mark.slow  # ~40 s on 2 loaded cores; the same path as SIGTERM (test_user_errors)
def test_sighup_saves_a_checkpoint_at_the_current_step_and_exits_129(smoke_config, tmp_path):
  smoke_config.num_train_steps = 2000
  smoke_config.checkpoint_every_steps = 1000
  smoke_config.log_every_steps = 5
  workdir = str(tmp_path / 'run')
  previous = signal.signal(signal.SIGHUP, lambda *_: None)  # without the fix: the run goes on
  try:
    hangup = threading.Thread(target=lambda: _wait_for(lambda: _records(workdir), 240) and
                              os.kill(os.getpid(), signal.SIGHUP))
    hangup.start()
    with pytest.raises(errors.Stopped) as e:
      loop.train_and_evaluate(smoke_config, workdir)
    hangup.join()
  finally:
    signal.signal(signal.SIGHUP, previous)
  assert e.value.exit_code == 129
  step = _steps(workdir)[-1]
  assert 0 < step < 1000
  assert str(e.value) == (f'SIGHUP at step {step} of 2000: saved a checkpoint at step {step} in '
                          f'{workdir}/checkpoints; rerun the same command to resume')
