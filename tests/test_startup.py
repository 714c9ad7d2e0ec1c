"""Trust, round three (issue 30), multi-host start-up that explains itself: the coordinator address
is checked first, JAX's cluster detection is used only when a whole set of its variables is there,
process flags without a coordinator are refused, the wait for the coordinator and the other
processes is logged and bounded (--coordinator_timeout_s), and a busy port or an absent coordinator
is one line naming it. Every address here is on 127.0.0.1."""

import logging
import os
import socket
import subprocess
import sys
import time

import jax
import pytest

from cnn_zoo import errors, parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
CLUSTER_VARIABLES = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID',
                     'SLURM_LOCALID', 'OMPI_MCA_orte_hnp_uri', 'OMPI_COMM_WORLD_SIZE',
                     'OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK', 'TPU_WORKER_HOSTNAMES')
VALID = 'give HOST:PORT of process 0, with a port in 1..65535 (e.g. 10.0.0.1:1234)'


@pytest.fixture
def joins(monkeypatch):
  """jax.distributed.initialize recorded, not run (it would wait for processes that never come),
  and no cluster variables from the machine the suite runs on."""
  joined = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda *a, **k: joined.append((a, k)))
  monkeypatch.setattr(jax.config, 'update', lambda *a: None)
  for variable in CLUSTER_VARIABLES:
    monkeypatch.delenv(variable, raising=False)
  return joined


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.parametrize('address,message', [
    ('127.0.0.1', "--coordinator_address='127.0.0.1' has no port: " + VALID),
    (':1234', "--coordinator_address=':1234' has no host: " + VALID),
    ('127.0.0.1:', "--coordinator_address='127.0.0.1:': port '' is not in 1..65535: " + VALID),
    ('127.0.0.1:0', "--coordinator_address='127.0.0.1:0': port '0' is not in 1..65535: " + VALID),
    ('127.0.0.1:65536', "--coordinator_address='127.0.0.1:65536': port '65536' is not in "
                        '1..65535: ' + VALID),
    ('127.0.0.1:http', "--coordinator_address='127.0.0.1:http': port 'http' is not in 1..65535: "
                       + VALID),
    ('::1:1234', "--coordinator_address='::1:1234' has no port: " + VALID),
])
def test_a_coordinator_address_without_a_valid_port_is_refused_first(joins, address, message):
  with pytest.raises(errors.ConfigError) as e:
    parallel.initialize(address, 2, 1)
  assert str(e.value) == message
  assert joins == []


def test_an_ipv6_address_in_brackets_is_an_address():
  assert parallel.parse_address('[::1]:1234') == ('::1', 1234)
  assert parallel.parse_address('127.0.0.1:65535') == ('127.0.0.1', 65535)


@pytest.mark.parametrize('flags', [dict(num_processes=2, process_id=1), dict(num_processes=2),
                                   dict(process_id=0)])
def test_process_flags_without_a_coordinator_are_refused(joins, flags):
  with pytest.raises(errors.ConfigError) as e:
    parallel.initialize('', **flags)
  assert str(e.value) == (
      f'--num_processes={flags.get("num_processes", 0)} and --process_id='
      f'{flags.get("process_id", -1)} need --coordinator_address=HOST:PORT (process 0\'s); '
      f'without it each process would train alone')
  assert joins == []


def test_an_allocation_shell_with_only_slurm_job_id_is_one_process_and_says_so(joins, monkeypatch,
                                                                              caplog):
  monkeypatch.setenv('SLURM_JOB_ID', '4242')
  monkeypatch.setenv('SLURM_NTASKS', '4')
  caplog.set_level(logging.WARNING)
  parallel.initialize()
  assert joins == []
  assert [r.getMessage() for r in caplog.records] == [
      'SLURM_JOB_ID, SLURM_NTASKS is set but not SLURM_STEP_NODELIST, SLURM_PROCID, SLURM_LOCALID '
      '(a shell of the allocation, not a task of it): running as one process; start each process '
      "with the cluster's launcher (srun, mpirun) to run on several"]
  for variable, value in (('SLURM_STEP_NODELIST', 'node[1-4]'), ('SLURM_PROCID', '1'),
                          ('SLURM_LOCALID', '0')):  # an srun task: JAX's own detection
    monkeypatch.setenv(variable, value)
  parallel.initialize(timeout_s=20)
  assert joins == [((), {'initialization_timeout': 20})]
  monkeypatch.setenv('SLURM_NTASKS', '1')  # a task alone: nothing to join
  parallel.initialize()
  assert len(joins) == 1
  monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '2')  # Open MPI without its server's address
  monkeypatch.delenv('SLURM_JOB_ID')
  parallel.initialize()
  assert len(joins) == 1


def test_a_busy_port_is_named_before_joining(joins, monkeypatch):
  with socket.socket() as holder:
    holder.bind(('127.0.0.1', 0))
    holder.listen()
    port = holder.getsockname()[1]
    monkeypatch.setenv('JAX_COORDINATOR_BIND_ADDRESS', f'127.0.0.1:{port}')
    with pytest.raises(errors.ConfigError) as e:
      parallel.initialize(f'127.0.0.1:{port}', 2, 0)
  assert str(e.value) == (f'--coordinator_address=127.0.0.1:{port}: process 0 cannot listen on port '
                          f'{port} (127.0.0.1:{port}): Address already in use; another program (or '
                          f'an earlier run) holds it: choose another port')
  assert joins == []


def test_the_wait_for_an_absent_coordinator_is_logged_bounded_and_one_line(joins, monkeypatch,
                                                                           caplog):
  monkeypatch.setattr(parallel, '_PROGRESS_EVERY_S', 0.5, raising=False)
  port = _free_port()  # nothing listens there
  caplog.set_level(logging.INFO)
  t0 = time.monotonic()
  with pytest.raises(errors.ConfigError) as e:
    parallel.initialize(f'127.0.0.1:{port}', 2, 1, timeout_s=2)
  assert 1.9 < time.monotonic() - t0 < 10
  assert str(e.value) == (f'--coordinator_address=127.0.0.1:{port}: no coordinator answered within '
                          f'2s (process 1 of 2; last: Connection refused); start process 0 there '
                          f'first, or check the address, the port and the firewall')
  said = [r.getMessage() for r in caplog.records]
  assert said[0] == (f'process 1 of 2: waiting up to 2s (--coordinator_timeout_s) for the '
                     f'coordinator at 127.0.0.1:{port}')
  assert any(m.startswith(f'process 1 of 2: still waiting for the coordinator at 127.0.0.1:{port} '
                          f'(Connection refused); ') for m in said[1:]), said
  assert joins == []
  with pytest.raises(errors.ConfigError, match=r'--coordinator_timeout_s=0 must be > 0'):
    parallel.initialize(f'127.0.0.1:{port}', 2, 1, timeout_s=0)


_JOIN = '''import sys
from cnn_zoo import cli, parallel
cli.run(parallel.initialize, sys.argv[1], 2, 0, float(sys.argv[2]))
'''


def test_processes_that_never_join_are_one_line_within_the_timeout(tmp_path):
  """Process 0 of 2, alone: JAX itself would wait, then abort with a stack trace."""
  port = _free_port()
  t0 = time.monotonic()
  proc = subprocess.run([sys.executable, '-c', _JOIN, f'127.0.0.1:{port}', '3'], cwd=ROOT,
                        capture_output=True, text=True, timeout=120,
                        env={**ENV, 'JAX_COORDINATOR_BIND_ADDRESS': f'127.0.0.1:{port}'})
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors_said = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert errors_said == [f'error: --coordinator_address=127.0.0.1:{port}: the 2 processes did not '
                         f'all join within 3s (--coordinator_timeout_s; process 0 of 2); start '
                         f'every process with the same --coordinator_address and --num_processes']
  assert 'Traceback' not in proc.stderr and 'Check failure' not in proc.stderr
  assert time.monotonic() - t0 < 60


def test_the_launcher_refuses_an_address_without_a_port_before_anything(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'experiments.train',
                         '--config=configs/default.py:smoke', '--coordinator_address=127.0.0.1',
                         '--num_processes=2', '--process_id=1', f'--workdir={tmp_path}/w'],
                        cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: --coordinator_address='127.0.0.1' has no port: " + VALID)
  assert 'Traceback' not in proc.stderr and not os.path.exists(tmp_path / 'w')
