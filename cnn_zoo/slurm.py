"""SLURM: a sweep's points as batch jobs, one `sbatch` per point, waited on from the sweep.

`Launcher(resources, trainer)` is a `launch(point, workdir, log)` for `sweep.run`. Each point's
job runs, under `srun`, the same command the local runner runs, from the same folder; its output
goes to the point's log.txt, appended across attempts. A job asks for SIGTERM `signal_s` seconds
before its time limit (`--signal=TERM@S`) and may be requeued (`--requeue`): the trainer saves a
checkpoint on SIGTERM and exits 143; if its job is still RUNNING then (the time limit is near,
or someone sent `scancel --signal=TERM`), the job script requeues itself; if SLURM is
requeueing it (preemption, `scontrol requeue`, a failed node) SLURM does. Either way the job
starts again later and the point resumes from its checkpoint. A cancelled job (`scancel`) stays
cancelled. The sweep waits on every job with one `squeue` per poll for all of them, prints each
job's state as it changes, and writes the report as the local runner does.

A job whose point asks for several tasks (`nodes` x `tasks_per_node`) runs one process per task;
each joins the others through jax.distributed from SLURM's variables (`parallel.initialize`).
"""

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from typing import Callable

from cnn_zoo import errors, run_files, sweep

SCRIPT_NAME = 'slurm_job.sh'  # in the point's run directory: `sbatch` it to run the point by hand
JOB_ID_NAME = 'slurm_job_id'  # the point's latest job, so that a rerun waits on it, not submits
# States after which a job does not run again on its own (squeue's %T).
FINAL = ('BOOT_FAIL', 'CANCELLED', 'COMPLETED', 'DEADLINE', 'FAILED', 'NODE_FAIL', 'OUT_OF_MEMORY',
         'PREEMPTED', 'TIMEOUT')
STOPPED_BY_SIGTERM = 143  # what experiments.train exits with once it saved on SIGTERM

_WORD = re.compile(r'^[A-Za-z0-9_.,:@%+-]+$')  # what a flag value may hold inside a #SBATCH line
_TIME = re.compile(r'^(\d+-)?\d+(:\d+){0,2}$')  # minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_MEM = re.compile(r'^\d+[KMGT]?$')
_PATH = re.compile(r'^[^\s\'"\\%]+$')  # a path a #SBATCH line holds as it is
_OPTION = re.compile(r'^--[a-z][a-z0-9-]*(=[A-Za-z0-9_.,:@%+=/-]+)?$')


@dataclasses.dataclass(frozen=True)
class Resources:
  """What each point's job asks for; '' or 0 leaves a field to the cluster's defaults."""
  partition: str = ''
  nodes: int = 1
  tasks_per_node: int = 1  # one process each: several in all start jax.distributed
  gpus_per_node: int = 0
  cpus_per_task: int = 0
  mem: str = ''  # per node: '16G'
  time: str = ''  # the time limit: '4:00:00', '1-00:00:00', or minutes
  signal_s: int = 120  # SIGTERM this many seconds before the time limit: enough to save
  requeue: bool = True
  sbatch_args: tuple[str, ...] = ()  # further sbatch options: '--account=X', '--qos=Y'

  def check(self) -> None:
    """Refuses a value sbatch would misread, in one line naming it."""
    def bad(flag, value, valid):
      raise errors.ConfigError(f'--slurm_{flag}={value!r} is not valid: {valid}')
    if self.partition and not _WORD.match(self.partition):
      bad('partition', self.partition, 'a partition name (letters, digits, _ . , -)')
    for flag in ('nodes', 'tasks_per_node'):
      if getattr(self, flag) < 1:
        bad(flag, getattr(self, flag), 'a count >= 1')
    for flag in ('gpus_per_node', 'cpus_per_task', 'signal_s'):
      if getattr(self, flag) < 0:
        bad(flag, getattr(self, flag), 'a count >= 0 (0: the cluster default)')
    if self.mem and not _MEM.match(self.mem):
      bad('mem', self.mem, "a size such as 16G, 500M or 2048 (megabytes)")
    if self.time and not _TIME.match(self.time):
      bad('time', self.time, 'minutes, H:M:S or D-H:M:S, e.g. 4:00:00')
    for option in self.sbatch_args:
      if not _OPTION.match(option):
        bad('sbatch_args', option, 'sbatch options as --name or --name=value, without spaces, '
            'e.g. --account=proj,--qos=normal')

  @property
  def tasks(self) -> int:
    return self.nodes * self.tasks_per_node

  def directives(self) -> list[str]:
    """The #SBATCH options these resources give."""
    options = [f'--partition={self.partition}' if self.partition else '',
               f'--nodes={self.nodes}', f'--ntasks-per-node={self.tasks_per_node}',
               f'--cpus-per-task={self.cpus_per_task}' if self.cpus_per_task else '',
               f'--gpus-per-node={self.gpus_per_node}' if self.gpus_per_node else '',
               f'--mem={self.mem}' if self.mem else '', f'--time={self.time}' if self.time else '',
               f'--signal=TERM@{self.signal_s}' if self.signal_s else '',
               '--requeue' if self.requeue else '--no-requeue', *self.sbatch_args]
    return [o for o in options if o]


def job_script(point: sweep.Point, workdir: str, trainer: sweep.Trainer, resources: Resources,
               output: str = '') -> str:
  """The batch script that trains `point` (output: into its log.txt): srun the point's command,
  then requeue itself when the point saved on SIGTERM while its job was still running."""
  run_dir = os.path.abspath(os.path.join(workdir, point.name))
  for path in (run_dir, trainer.root):
    if not _PATH.match(path):
      raise errors.ConfigError(f'--launcher=slurm: {path!r} holds a space, quote, backslash or %, '
                               f'which #SBATCH lines cannot hold; choose a plainer --workdir')
  command = shlex.join(point.command(workdir, trainer))
  srun = ['srun', f'--ntasks={resources.tasks}']
  if resources.cpus_per_task:  # srun does not take sbatch's --cpus-per-task (SLURM >= 22.05)
    srun.append(f'--cpus-per-task={resources.cpus_per_task}')
  lines = ['#!/bin/bash',
           f'#SBATCH --job-name=cnn_zoo.{point.name}',
           f'#SBATCH --output={output or os.path.join(run_dir, sweep.LOG_NAME)}',
           '#SBATCH --open-mode=append',
           f'#SBATCH --chdir={trainer.root}',
           *(f'#SBATCH {o}' for o in resources.directives()),
           f'# cnn_zoo sweep point {point.name}: `sbatch` this file to train it by hand.',
           '# The batch shell outlives a SIGTERM to the job until the point has saved.',
           "trap 'echo \"slurm: job $SLURM_JOB_ID got SIGTERM; waiting for the point to save\"' "
           'TERM',
           'if [ "${SLURM_RESTART_COUNT:-0}" != 0 ]; then  # a new attempt: a header, as the sweep',
           f'  printf \'# %s %s (job %s, restart %s)\\n\' "$(date +%Y-%m-%dT%H:%M:%S)" '
           f'{shlex.quote(command)} "$SLURM_JOB_ID" "$SLURM_RESTART_COUNT"',
           'fi',
           f'{shlex.join(srun)} {command}',
           'status=$?']
  if resources.requeue:
    lines += [f'if [ $status = {STOPPED_BY_SIGTERM} ] && scontrol show job "$SLURM_JOB_ID" '
              '| grep -q "JobState=RUNNING"; then',
              '  echo "slurm: the point saved on SIGTERM while job $SLURM_JOB_ID ran on: '
              'requeueing it"',
              '  scontrol requeue "$SLURM_JOB_ID" && exit 0',
              'fi']
  lines.append('exit $status')
  return '\n'.join(lines) + '\n'


def describe(points: list[sweep.Point], workdir: str, trainer: sweep.Trainer,
             resources: Resources) -> str:
  """The dry-run listing: every point's batch script."""
  out = [f'{len(points)} point(s), each a SLURM batch job (WORKDIR/POINT/{SCRIPT_NAME}):']
  for i, point in enumerate(points, 1):
    out.append(f'[{i}/{len(points)}] {point.name}')
    out += ['  ' + line for line in job_script(point, workdir, trainer, resources).splitlines()]
  return '\n'.join(out)


def check_available(env=None) -> None:
  """Refuses --launcher=slurm where SLURM's commands are absent."""
  path = (env or os.environ).get('PATH')
  missing = [c for c in ('sbatch', 'squeue', 'scontrol', 'scancel')
             if not shutil.which(c, path=path)]
  if missing:
    raise errors.ConfigError(f'--launcher=slurm needs SLURM\'s {", ".join(missing)} on PATH; '
                             f'run the sweep where jobs are submitted (a login node), or use '
                             f'--launcher=local')


def _run(args, env) -> subprocess.CompletedProcess:
  """A SLURM client command; one that hangs (an unreachable controller) counts as failed."""
  try:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
  except subprocess.TimeoutExpired:
    return subprocess.CompletedProcess(args, 1, '', f'{args[0]} timed out after 120 s')


def _job_state(text: str) -> str:
  found = re.search(r'\bJobState=(\S+)', text)
  return found.group(1) if found else ''


def _exit_status(text: str) -> int | None:
  """`ExitCode=A:B` (status, signal) as one exit status; None if absent."""
  found = re.search(r'\bExitCode=(\d+):(\d+)', text)
  if not found:
    return None
  code, signum = map(int, found.groups())
  return 128 + signum if signum else code


class _Queue:
  """The states of the sweep's jobs: one `squeue` call per poll for all of them, shared by the
  threads that wait on them."""

  def __init__(self, env, poll_s: float):
    self._env, self._poll_s = env, poll_s
    self._lock = threading.Lock()
    self._jobs: set[str] = set()
    self._states: dict[str, tuple[str, str, str]] = {}  # job -> (state, reason, nodes)
    self._polled = -float('inf')

  def watch(self, job: str):
    with self._lock:
      self._jobs.add(job)
      self._polled = -float('inf')  # a new job: the next call asks

  def forget(self, job: str):
    with self._lock:
      self._jobs.discard(job)

  def state(self, job: str) -> tuple[str, str, str]:
    """(state, reason, nodes) of a watched job, at most poll_s old; ('GONE', '', '') once SLURM
    no longer knows it."""
    with self._lock:
      if time.monotonic() - self._polled >= self._poll_s:
        self._poll()
      return self._states.get(job, ('GONE', '', ''))

  def _poll(self):
    jobs = sorted(self._jobs, key=int)
    proc = _run(['squeue', '--noheader', '--states=all', f'--jobs={",".join(jobs)}',
                 '--format=%i|%T|%r|%N'], self._env)
    if proc.returncode:  # e.g. every listed job purged already: ask one by one
      states = {}
      for job in jobs:
        one = _run(['squeue', '--noheader', '--states=all', f'--jobs={job}',
                    '--format=%i|%T|%r|%N'], self._env)
        if one.returncode == 0:
          states.update(self._parse(one.stdout))
        elif 'Invalid job id' not in one.stderr:
          states[job] = self._states.get(job, ('UNKNOWN', one.stderr.strip(), ''))
    else:
      states = self._parse(proc.stdout)
    self._states = states
    self._polled = time.monotonic()

  @staticmethod
  def _parse(text: str) -> dict[str, tuple[str, str, str]]:
    states = {}
    for line in text.splitlines():
      parts = line.strip().split('|')
      if len(parts) == 4:
        states[parts[0]] = (parts[1], parts[2], parts[3])
    return states


class Launcher:
  """`launch(point, workdir, log)` that trains the point as a SLURM job and waits for it."""

  def __init__(self, resources: Resources, trainer: sweep.Trainer, *, poll_s: float = 10.0,
               echo: Callable[[str], None] = print, env=None):
    resources.check()
    self.resources, self.trainer, self.echo = resources, trainer, echo
    self.env = dict(os.environ if env is None else env)
    self.poll_s = poll_s
    self._queue = _Queue(self.env, poll_s)

  def test_submission(self, point: sweep.Point, workdir: str) -> None:
    """Asks sbatch to check one job's options (`--test-only`: nothing is queued) before any point
    is submitted, so that a wrong partition or limit is one line, not a failure per point."""
    check_available(self.env)
    script = job_script(point, workdir, self.trainer, self.resources, output='/dev/null')
    proc = subprocess.run(['sbatch', '--test-only'], input=script, env=self.env,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode:
      reason = (proc.stderr.strip().splitlines() or ['no reason given'])[-1]
      raise errors.ConfigError(f'sbatch refuses the jobs these --slurm_* flags ask for '
                               f'({" ".join(self.resources.directives())}): {reason}')

  def __call__(self, point: sweep.Point, workdir: str, log) -> int:
    run_dir = os.path.join(workdir, point.name)
    job = self._running_job(run_dir)
    if job:
      self._say(log, f'slurm: job {job} of this point is still queued or running: waiting on it',
                echo=f'slurm: job {job} of an earlier sweep still runs {point.name}: waiting on it')
    else:
      job = self._submit(point, workdir, log)
      if job is None:
        return 1
    try:
      return self._wait(point, job, log)
    finally:
      self._queue.forget(job)

  def _say(self, log, line: str, echo: str = ''):
    log.write(line + '\n')
    log.flush()
    if echo:
      self.echo(echo)

  def _running_job(self, run_dir: str) -> str:
    """The point's job from an earlier sweep if SLURM still has it queued or running."""
    try:
      with open(os.path.join(run_dir, JOB_ID_NAME), encoding='utf-8') as f:
        job = f.read().strip()
    except OSError:
      return ''
    if not job.isdigit():
      return ''
    proc = _run(['squeue', '--noheader', f'--jobs={job}', '--format=%T'], self.env)
    state = proc.stdout.strip() if proc.returncode == 0 else ''
    return job if state and state not in FINAL else ''

  def _submit(self, point, workdir, log) -> str | None:
    run_dir = os.path.join(workdir, point.name)
    script = os.path.join(run_dir, SCRIPT_NAME)
    run_files.write_text(script, job_script(point, workdir, self.trainer, self.resources))
    log.flush()
    proc = _run(['sbatch', '--parsable', script], self.env)
    job = proc.stdout.strip().split(';')[0]
    if proc.returncode or not job.isdigit():
      reason = (proc.stderr.strip().splitlines() or [proc.stdout.strip() or 'no reason given'])[-1]
      self._say(log, f'error: sbatch {script}: {reason}')
      return None
    with open(os.path.join(run_dir, JOB_ID_NAME), 'w', encoding='utf-8') as f:
      f.write(job + '\n')
    self._say(log, f'slurm: submitted {script} as job {job}')
    return job

  def _wait(self, point, job: str, log) -> int:
    self._queue.watch(job)
    shown, cancelled = None, None
    while True:
      signum = sweep.stop_signal()
      if signum and cancelled is None:
        cancelled = signum
        state = self._queue.state(job)[0]
        _run(['scancel', job], self.env)  # SIGTERM to its processes: they save, then stop
        self._say(log, f'slurm: job {job} cancelled: the sweep was stopped')
        if state == 'PENDING':
          return 1
      state, reason, nodes = self._queue.state(job)
      now = (state, reason if state == 'PENDING' else nodes)
      if now != shown:
        shown = now
        where = f' ({reason})' if state == 'PENDING' and reason not in ('', 'None') else \
            (f' on {nodes}' if state == 'RUNNING' and nodes else '')
        self.echo(f'slurm: job {job} {state}{where}: {point.name}')
      if state in FINAL or state == 'GONE':
        shown_job = _run(['scontrol', 'show', 'job', '-o', job], self.env).stdout
        # squeue may catch a job that is being requeued (preempted, its node failed) in between.
        if _job_state(shown_job) in ('', *FINAL):
          break
      time.sleep(min(self.poll_s, 0.5) if cancelled else self.poll_s / 4)
    status = _exit_status(shown_job)
    if status is None:  # purged from slurmctld already: its accounting, where there is some
      sacct = _run(['sacct', '--noheader', '--allocations', '--parsable2', f'--jobs={job}',
                    '--format=State,ExitCode'], self.env)
      status = _exit_status('ExitCode=' + sacct.stdout.strip().split('|')[-1]) if \
          sacct.returncode == 0 and '|' in sacct.stdout else None
    if cancelled:
      return 128 + cancelled
    if status is None:
      results = run_files.path(os.path.dirname(log.name), run_files.RESULTS)
      status = 0 if os.path.exists(results) else 1
    if state != 'COMPLETED' and status == 0:
      status = 1
    if status:
      self._say(log, f'slurm: job {job} ended {state} with exit status {status}')
    return status
