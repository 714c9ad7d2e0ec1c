"""A real single-node SLURM cluster for the tests: Debian's slurmctld, slurmd and munged, started
as daemons of the test's own, with every file in one folder and every port on 127.0.0.1.

  with slurm_cluster.start(tmp_dir) as cluster:   # cluster.env has SLURM_CONF
    subprocess.run(['sbatch', ...], env=cluster.env)

The node is this machine as `slurmd -C` sees it (its CPUs and memory), named `localhost`, with one
partition, `debug`. No cgroups (proctrack/linuxproc, task/none), no accounting database.
"""

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time

DAEMONS = ('munged', 'slurmctld', 'slurmd')
CLIENTS = ('sbatch', 'squeue', 'scontrol', 'scancel', 'srun')
PARTITION = 'debug'


def missing() -> list[str]:
  """The programs this needs that are not installed."""
  found = lambda name: shutil.which(name) or os.path.exists(os.path.join('/usr/sbin', name))
  return [name for name in DAEMONS + CLIENTS if not found(name)]


def _program(name: str) -> str:
  return shutil.which(name) or os.path.join('/usr/sbin', name)


def _free_ports(n: int) -> list[int]:
  sockets = [socket.socket() for _ in range(n)]
  try:
    for s in sockets:
      s.bind(('127.0.0.1', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _node_line() -> str:
  """What this machine really has, as slurmd reports it."""
  out = subprocess.run([_program('slurmd'), '-C'], capture_output=True, text=True,
                       check=True).stdout
  fields = dict(re.findall(r'(\w+)=(\S+)', out.splitlines()[0]))
  keep = ('CPUs', 'Boards', 'SocketsPerBoard', 'CoresPerSocket', 'ThreadsPerCore', 'RealMemory')
  return 'NodeName=localhost NodeAddr=127.0.0.1 ' + ' '.join(
      f'{k}={fields[k]}' for k in keep if k in fields) + ' State=UNKNOWN'


class Cluster:
  """A running cluster: `env` is the environment its clients need."""

  def __init__(self, root: str):
    self.root = root
    self.conf = os.path.join(root, 'slurm.conf')
    self.env = {**os.environ, 'SLURM_CONF': self.conf}
    self._procs = []

  def run(self, *args, check=True) -> str:
    """A client command (scontrol, squeue, ...); its stdout."""
    proc = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
    if check and proc.returncode:
      raise RuntimeError(f'{" ".join(args)}: exit {proc.returncode}: {proc.stderr.strip()}')
    return proc.stdout

  def _daemon(self, *args):
    log = open(os.path.join(self.root, os.path.basename(args[0]) + '.out'), 'w')
    self._procs.append(subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True))
    log.close()

  def log(self, name: str) -> str:
    """A daemon's log (slurmctld, slurmd, munged), for a failing test's message."""
    path = os.path.join(self.root, f'{name}.log')
    return open(path, encoding='utf-8', errors='replace').read() if os.path.exists(path) else ''

  def start(self):
    root = self.root
    for sub in ('state', 'spool', 'munge'):
      os.makedirs(os.path.join(root, sub), exist_ok=True)
    key = os.path.join(root, 'munge.key')
    with open(key, 'wb') as f:
      f.write(os.urandom(1024))
    os.chmod(key, 0o600)
    munge_socket = os.path.join(root, 'munge', 'munge.socket')
    # --force: munged wants every folder above its socket open to all; pytest's tmp is not.
    self._daemon(_program('munged'), '--foreground', '--force', f'--key-file={key}',
                 f'--socket={munge_socket}',
                 f'--pid-file={root}/munge/munged.pid', f'--log-file={root}/munged.log',
                 f'--seed-file={root}/munge/munged.seed', '--num-threads=2')
    ctld_port, slurmd_port = _free_ports(2)
    user = pwd.getpwuid(os.getuid()).pw_name  # the daemons run as whoever runs the tests
    with open(self.conf, 'w', encoding='utf-8') as f:
      f.write(f'''ClusterName=cnnzoo
SlurmctldHost=localhost(127.0.0.1)
SlurmUser={user}
SlurmdUser={user}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
AuthType=auth/munge
AuthInfo=socket={munge_socket},cred_expire=5
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
KillWait=30
MinJobAge=600
{_node_line()}
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
''')
    self._wait(lambda: os.path.exists(munge_socket), 'munged', 'munged')
    self._daemon(_program('slurmctld'), '-D', '-i', '-f', self.conf)
    self._daemon(_program('slurmd'), '-D', '-N', 'localhost', '-f', self.conf)
    self._wait(self._node_idle, 'the node to come up', 'slurmd')
    return self

  def _node_idle(self) -> bool:
    try:
      out = self.run('sinfo', '--noheader', '--format=%T', check=False)
    except subprocess.TimeoutExpired:
      return False
    return out.strip() in ('idle', 'mixed', 'allocated')

  def _wait(self, ready, what, log, timeout=60):
    deadline = time.monotonic() + timeout
    while not ready():
      for proc in self._procs:
        if proc.poll() is not None:
          raise RuntimeError(f'{proc.args[0]} exited ({proc.returncode}) waiting for {what}:\n'
                             f'{self.log(log)[-3000:]}')
      if time.monotonic() > deadline:
        raise RuntimeError(f'timed out waiting for {what}:\n{self.log(log)[-3000:]}')
      time.sleep(0.2)

  def stop(self):
    """Stops the daemons (newest first), and what jobs they left."""
    controller_up = len(self._procs) > 1 and self._procs[1].poll() is None
    try:
      if controller_up:
        self.run('scancel', '--quiet', f'--partition={PARTITION}', check=False)
    except subprocess.TimeoutExpired:
      controller_up = False
    deadline = time.monotonic() + 45  # KillWait, and a little: their processes exit first
    while controller_up and time.monotonic() < deadline:
      try:
        if not self.run('squeue', '--noheader', check=False).strip():
          break
      except subprocess.TimeoutExpired:
        break
      time.sleep(0.5)
    for proc in reversed(self._procs):
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in reversed(self._procs):
      try:
        proc.wait(timeout=20)
      except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def start(root: str):
  """A running cluster with its files in `root`; stopped on leaving."""
  cluster = Cluster(str(root))
  try:
    yield cluster.start()
  finally:
    cluster.stop()
