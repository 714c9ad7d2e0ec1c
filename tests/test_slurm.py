"""Sweeps on SLURM: the job scripts, the flags' checks, and a real single-node cluster (Debian's
slurmctld, slurmd and munged, started by tests/slurm_cluster.py) that runs a sweep with a point
preempted mid-run and a point of two JAX processes."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time

import ml_collections
import pytest

from cnn_zoo import errors, slurm, sweep
from tests import slurm_cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINER = sweep.Trainer((sys.executable, '-m', 'experiments.train'), ROOT)
STEPS = 100  # long enough that a signal sent at step 5 arrives before the end


def _points(models=('lenet5',), **overrides):
  c = ml_collections.ConfigDict()
  c.base = 'configs/default.py:smoke'
  c.overrides = ml_collections.ConfigDict(overrides)
  c.axes = [{'product': {'model': list(models)}}]
  return sweep.expand(c, ROOT)


def test_a_points_job_script_asks_for_its_resources_and_runs_the_local_command(tmp_path):
  [point] = _points(num_train_steps=3)
  resources = slurm.Resources(partition='gpu', nodes=2, tasks_per_node=4, gpus_per_node=4,
                              cpus_per_task=8, mem='64G', time='4:00:00', signal_s=300,
                              sbatch_args=('--account=proj', '--qos=high'))
  script = slurm.job_script(point, str(tmp_path), TRAINER, resources)
  lines = script.splitlines()
  directives = [line.split(' ', 1)[1] for line in lines if line.startswith('#SBATCH ')]
  assert directives == [
      '--job-name=cnn_zoo.model=lenet5', f'--output={tmp_path}/model=lenet5/log.txt',
      '--open-mode=append', f'--chdir={ROOT}', '--partition=gpu', '--nodes=2',
      '--ntasks-per-node=4', '--cpus-per-task=8', '--gpus-per-node=4', '--mem=64G',
      '--time=4:00:00', '--signal=TERM@300', '--requeue', '--account=proj', '--qos=high']
  command = ' '.join(point.command(str(tmp_path), TRAINER))
  assert f'srun --ntasks=8 --cpus-per-task=8 {command}' in lines
  assert 'scontrol requeue "$SLURM_JOB_ID" && exit 0' in script
  # Without requeue: neither SLURM nor the script requeues, and no resource is asked for unasked.
  bare = slurm.job_script(point, str(tmp_path), TRAINER, slurm.Resources(requeue=False, signal_s=0))
  assert [line for line in bare.splitlines() if line.startswith('#SBATCH --n')] == [
      '#SBATCH --nodes=1', '#SBATCH --ntasks-per-node=1', '#SBATCH --no-requeue']
  assert 'scontrol requeue' not in bare and '--signal' not in bare


def test_a_hostile_value_in_the_command_is_quoted_never_run(tmp_path):
  """A config value reaches the script's shell lines only inside single quotes."""
  [point] = _points(num_train_steps=3, init_from="$(touch PWNED)'; touch PWNED; '")
  script = tmp_path / 'job.sh'
  script.write_text(slurm.job_script(point, str(tmp_path), TRAINER, slurm.Resources()))
  # Run the script's shell with srun and scontrol as no-ops, and as a requeued attempt.
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for name in ('srun', 'scontrol'):
    (bin_dir / name).write_text('#!/bin/sh\nexit 0\n')
    (bin_dir / name).chmod(0o755)
  proc = subprocess.run(['bash', str(script)], cwd=tmp_path, capture_output=True, text=True,
                        env={'PATH': f'{bin_dir}:/usr/bin:/bin', 'SLURM_RESTART_COUNT': '1',
                             'SLURM_JOB_ID': '7'})
  assert proc.returncode == 0, proc.stderr
  assert not (tmp_path / 'PWNED').exists()
  assert '(job 7, restart 1)' in proc.stdout


@pytest.mark.parametrize('resources, message', [
    (slurm.Resources(partition='gpu debug'), "--slurm_partition='gpu debug' is not valid"),
    (slurm.Resources(nodes=0), '--slurm_nodes=0 is not valid: a count >= 1'),
    (slurm.Resources(time='4h'), "--slurm_time='4h' is not valid: minutes, H:M:S"),
    (slurm.Resources(mem='lots'), "--slurm_mem='lots' is not valid"),
    (slurm.Resources(sbatch_args=('--wrap=rm -rf /',)), "--slurm_sbatch_args='--wrap=rm -rf /'"),
    (slurm.Resources(sbatch_args=('-A',)), "--slurm_sbatch_args='-A' is not valid"),
])
def test_bad_resources_are_refused_in_one_line(resources, message):
  with pytest.raises(errors.ConfigError) as e:
    slurm.Launcher(resources, TRAINER)
  assert message in str(e.value) and '\n' not in str(e.value)


def test_without_slurm_the_launcher_is_refused_in_one_line(tmp_path):
  with pytest.raises(errors.ConfigError, match=r"needs SLURM's sbatch, squeue, scontrol, scancel"):
    slurm.check_available({'PATH': str(tmp_path)})
  [point] = _points()
  with pytest.raises(errors.ConfigError, match='#SBATCH lines cannot hold'):
    slurm.job_script(point, str(tmp_path / 'a b'), TRAINER, slurm.Resources())


def test_the_launchers_flags_reach_the_job_scripts_and_a_bad_one_is_one_line(tmp_path):
  args = [sys.executable, '-m', 'experiments.sweep', '--config=configs/sweeps/digits_zoo.py',
          f'--workdir={tmp_path}/z', '--launcher=slurm', '--dry_run']
  run = lambda *more: subprocess.run([*args, *more], cwd=ROOT, capture_output=True, text=True,
                                     timeout=300)
  proc = run('--slurm_partition=gpu', '--slurm_time=1:00:00', '--slurm_gpus_per_node=2',
             '--slurm_sbatch_args=--account=proj,--qos=high')
  assert proc.returncode == 0, proc.stderr
  scripts = proc.stdout.split('  #!/bin/bash')[1:]
  assert len(scripts) == len(sweep.expand(_module_config('configs/sweeps/digits_zoo.py'), ROOT))
  for line in ('--partition=gpu', '--time=1:00:00', '--gpus-per-node=2', '--account=proj',
               '--qos=high', '--signal=TERM@120', '--requeue'):
    assert all(f'  #SBATCH {line}\n' in script for script in scripts), line
  assert not os.path.exists(tmp_path / 'z')
  bad = run('--slurm_time=soon')
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
      "error: --slurm_time='soon' is not valid: minutes, H:M:S or D-H:M:S, e.g. 4:00:00")


def _module_config(path):
  spec = importlib.util.spec_from_file_location('sweep_file', os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(None)


# The real cluster.

@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
  """A running single-node SLURM cluster; its clients find it through SLURM_CONF."""
  missing = slurm_cluster.missing()
  if missing:
    reason = f'SLURM is not installed (no {", ".join(missing)}): apt-get install slurmctld ' \
        'slurmd slurm-client munge'
    if os.environ.get('CNN_ZOO_REQUIRE_SLURM'):  # CI installs it: missing is a failure
      pytest.fail(reason)
    pytest.skip(reason)
  with slurm_cluster.start(tmp_path_factory.mktemp('slurm')) as running:
    yield running


def _spec(path, digits_dir, models, **overrides):
  path.write_text(f'''"""A test sweep."""
import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.base = 'configs/default.py:smoke'
  c.overrides = ml_collections.ConfigDict({dict(data_dir=digits_dir, **overrides)!r})
  c.axes = [{{'product': {{'model': {list(models)!r}}}}}]
  return c
''')
  return str(path)


def _sweep(env, *args, **kwargs) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, '-m', 'experiments.sweep', *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _steps_logged(run_dir) -> int:
  try:
    with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
      return max([json.loads(line).get('step', 0) for line in f if line.endswith('\n')] or [0])
  except (OSError, ValueError):
    return 0


def _table(markdown: str) -> list[list[str]]:
  """The comparison's rows without the columns that measure time."""
  rows = [[c.strip() for c in line.strip('|').split('|')] for line in markdown.splitlines()
          if line.startswith('|') and not line.startswith('|---')]
  timed = [i for i, name in enumerate(rows[0]) if name in ('train time (s)', 'train images/s',
                                                          'to 90% top-1')]
  assert len(timed) == 3, rows[0]
  return [[c for i, c in enumerate(row) if i not in timed] for row in rows]


def test_a_sweep_on_slurm_survives_preemption_and_reports_as_the_local_runner(
    cluster, digits_dir, tmp_path):
  """Two points as SLURM jobs: one preempted (`scontrol requeue`, as SLURM's preemption does),
  the other sent SIGTERM while it runs on (as before its time limit); both save, are requeued,
  resume from their checkpoints, and the report equals the local runner's."""
  spec = _spec(tmp_path / 'spec.py', digits_dir, ['lenet5', 'lenet5_fc100'],
               num_train_steps=STEPS, log_every_steps=5)
  local = tmp_path / 'local'
  proc = _sweep(cluster.env, f'--config={spec}', f'--workdir={local}', '--workers=2')
  out = proc.communicate(timeout=600)[0]
  assert proc.returncode == 0, out

  remote = tmp_path / 'slurm'
  proc = _sweep(cluster.env, f'--config={spec}', f'--workdir={remote}', '--launcher=slurm',
                '--slurm_cpus_per_task=1', '--slurm_poll_s=0.5')
  try:
    dirs = [remote / 'model=lenet5', remote / 'model=lenet5_fc100']
    deadline = time.monotonic() + 300
    preempted = set()
    while len(preempted) < 2 and time.monotonic() < deadline and proc.poll() is None:
      for run_dir, how in zip(dirs, (['scontrol', 'requeue'], ['scancel', '--signal=TERM'])):
        if run_dir not in preempted and _steps_logged(run_dir) >= 5:
          job = (run_dir / 'slurm_job_id').read_text().strip()
          cluster.run(*how, job)
          preempted.add(run_dir)
      time.sleep(0.05)
    out = proc.communicate(timeout=300)[0]
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, out + cluster.log('slurmctld')[-2000:]
  assert len(preempted) == 2, out
  assert 'RUNNING on localhost: model=lenet5\n' in out and 'PENDING' in out, out
  for run_dir in dirs:
    results = json.loads((run_dir / 'results.json').read_text())
    log = (run_dir / 'log.txt').read_text()
    assert results['complete'] and 0 < results['resumed_from_step'] < STEPS, (results, log)
    assert 'SIGTERM received: saving a checkpoint' in log and '(job ' in log, log
    here = json.loads((local / run_dir.name / 'results.json').read_text())
    assert results['weights_sha256'] == here['weights_sha256'], run_dir.name
  assert 'ran on: requeueing it' in (dirs[1] / 'log.txt').read_text()  # the script's own requeue
  assert 'ran on: requeueing it' not in (dirs[0] / 'log.txt').read_text()  # SLURM's
  ours, theirs = ((d / 'comparison.md').read_text() for d in (remote, local))
  assert _table(ours) == _table(theirs) and len(_table(ours)) == 3
  assert ours.splitlines()[2] == theirs.splitlines()[2]  # the budget line


@pytest.mark.slow  # two JAX processes start and compile: 159-163 s on the loaded 2 vCPUs
def test_a_point_of_two_tasks_trains_as_two_jax_processes(cluster, digits_dir, tmp_path):
  """`--slurm_tasks_per_node=2`: srun starts two processes that join through jax.distributed
  from SLURM's variables (its coordinator on 127.0.0.1 here)."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = {**cluster.env, 'JAX_COORDINATOR_PORT': str(port),
         'JAX_COORDINATOR_BIND_ADDRESS': f'127.0.0.1:{port}'}
  spec = _spec(tmp_path / 'spec.py', digits_dir, ['lenet5'], num_train_steps=3, log_every_steps=3)
  proc = _sweep(env, f'--config={spec}', f'--workdir={tmp_path}/s', '--launcher=slurm',
                '--slurm_tasks_per_node=2', '--slurm_cpus_per_task=1', '--slurm_poll_s=0.5')
  out = proc.communicate(timeout=600)[0]
  assert proc.returncode == 0, out
  results = json.loads((tmp_path / 's' / 'model=lenet5' / 'results.json').read_text())
  assert results['num_processes'] == 2 and results['num_devices'] == 2, results
  log = (tmp_path / 's' / 'model=lenet5' / 'log.txt').read_text()
  assert 'process 0 of 2' in log and 'process 1 of 2' in log, log
