"""Devices: the data-parallel mesh, its shardings, and multi-host start-up (JAX's own).

One mesh axis, `data`, spans every device of every process. Batches are split over it; the train
state is replicated, or with `shard_params` (FSDP-style) each large parameter and its optimizer
state are split over it along one dimension, and XLA gathers them where the step needs them.
"""

import errno
import os
import socket
import sys
import threading
import time

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cnn_zoo import errors

DATA_AXIS = 'data'
# Parameters smaller than this stay replicated under shard_params: splitting them saves nothing.
MIN_SHARDED_SIZE = 2 ** 14


# What JAX's own detection needs of each cluster (jax._src.clusters): with only part of a set (an
# `salloc` shell has SLURM_JOB_ID but no task of its own), it would fail or hang.
CLUSTER_ENVIRONMENTS = (
    ('SLURM', ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID',
               'SLURM_LOCALID')),
    ('Open MPI', ('OMPI_MCA_orte_hnp_uri', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_RANK',
                  'OMPI_COMM_WORLD_LOCAL_RANK')),
    ('TPU', ('TPU_WORKER_HOSTNAMES',)),
)
_PROGRESS_EVERY_S = 10.0  # how often a wait for the coordinator is logged


def parse_address(address: str) -> tuple[str, int]:
  """(host, port) of `--coordinator_address=HOST:PORT` ([IPv6]:PORT too), or ConfigError."""
  host, sep, port = address.rpartition(':')
  host = host[1:-1] if host.startswith('[') and host.endswith(']') else host
  valid = 'give HOST:PORT of process 0, with a port in 1..65535 (e.g. 10.0.0.1:1234)'
  if not sep or ':' in host and not address.startswith('['):
    raise errors.ConfigError(f'--coordinator_address={address!r} has no port: {valid}')
  if not host:
    raise errors.ConfigError(f'--coordinator_address={address!r} has no host: {valid}')
  if not port.isdigit() or not 1 <= int(port) <= 65535:
    raise errors.ConfigError(f'--coordinator_address={address!r}: port {port!r} is not in '
                             f'1..65535: {valid}')
  return host, int(port)


def detected_cluster() -> str:
  """The cluster JAX's own detection will find ('' for none): only a whole set of its variables
  counts, and one task (SLURM_NTASKS=1) is one process. A partial set is logged in one line."""
  for name, variables in CLUSTER_ENVIRONMENTS:
    present = [v for v in variables if v in os.environ]
    if not present:
      continue
    missing = [v for v in variables if v not in os.environ]
    if missing:
      logging.warning('%s is set but not %s (a shell of the allocation, not a task of it): running '
                      'as one process; start each process with the cluster\'s launcher (srun, '
                      'mpirun) to run on several', ', '.join(present), ', '.join(missing))
      return ''
    if name == 'SLURM' and os.environ['SLURM_NTASKS'] == '1':
      return ''
    return name
  return ''


def _check_listen(address: str, port: int) -> None:
  """Process 0 serves the coordinator on JAX's bind address ([::]:PORT unless
  JAX_COORDINATOR_BIND_ADDRESS says otherwise): a port already taken is named now, in one line,
  rather than by a crash inside jax.distributed."""
  bind = os.environ.get('JAX_COORDINATOR_BIND_ADDRESS', f'[::]:{port}')
  host, _, bind_port = bind.rpartition(':')
  host = host.strip('[]')
  family = socket.AF_INET6 if ':' in host else socket.AF_INET
  try:
    with socket.socket(family, socket.SOCK_STREAM) as s:
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is fine
      if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
      s.bind((host, int(bind_port)))
  except OSError as e:
    if e.errno == errno.EAFNOSUPPORT and family == socket.AF_INET6:
      return  # no IPv6 here: JAX finds its own way
    raise errors.ConfigError(f'--coordinator_address={address}: process 0 cannot listen on port '
                             f'{bind_port} ({bind}): {e.strerror}; another program (or an earlier '
                             f'run) holds it: choose another port') from None


def _wait_for_coordinator(address: str, host: str, port: int, timeout_s: float, who: str) -> float:
  """Waits (logged, at most timeout_s) until the coordinator's port takes connections; returns
  the seconds left. An address that does not resolve, or no answer in time, is one line."""
  try:
    socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
  except socket.gaierror as e:
    raise errors.ConfigError(f'--coordinator_address={address}: cannot resolve {host!r} '
                             f'({e.strerror})') from None
  start = time.monotonic()
  logging.info('%s: waiting up to %.0fs (--coordinator_timeout_s) for the coordinator at %s',
               who, timeout_s, address)
  last_log, reason = start, ''
  while True:
    left = timeout_s - (time.monotonic() - start)
    if left <= 0:
      raise errors.ConfigError(f'--coordinator_address={address}: no coordinator answered within '
                               f'{timeout_s:g}s ({who}; last: {reason}); start process 0 there '
                               f'first, or check the address, the port and the firewall')
    try:
      with socket.create_connection((host, port), timeout=min(2.0, max(left, 0.1))):
        return left
    except OSError as e:
      reason = e.strerror or type(e).__name__
    if time.monotonic() - last_log >= _PROGRESS_EVERY_S:
      last_log = time.monotonic()
      logging.info('%s: still waiting for the coordinator at %s (%s); %.0fs left', who, address,
                   reason, left)
    time.sleep(min(0.5, max(left, 0)))


def _join_within(timeout_s: float, address: str, who: str, count: int, join) -> None:
  """Calls join() (jax.distributed.initialize, which waits for every process); if it has not
  returned within timeout_s, one line and exit status 2 (JAX itself would abort the process with
  a stack trace: it cannot be caught)."""
  done = threading.Event()

  def watch():
    if not done.wait(timeout_s):
      print(f'error: --coordinator_address={address}: the {count} processes did not all join '
            f'within {timeout_s:g}s (--coordinator_timeout_s; {who}); start every process with the '
            f'same --coordinator_address and --num_processes', file=sys.stderr, flush=True)
      os._exit(2)  # pylint: disable=protected-access

  threading.Thread(target=watch, daemon=True).start()
  try:
    join()
  finally:
    done.set()


def initialize(coordinator_address: str = '', num_processes: int = 0, process_id: int = -1,
               timeout_s: float = 300):
  """Joins a multi-process run through jax.distributed.

  With a coordinator address (HOST:PORT, checked first), the given process count and id are used
  (CPU hosts use gloo collectives); process 0 checks that it can listen on the port, the others
  wait (logged, at most `timeout_s`) for it, and all of them for each other. Without one, JAX's own
  detection is used where its whole environment is there (SLURM tasks, Open MPI, TPU VMs); a lone
  process, or an allocation's shell, stays single-process. Process flags without an address are
  refused.
  """
  if not timeout_s > 0:
    raise errors.ConfigError(f'--coordinator_timeout_s={timeout_s} must be > 0 (seconds)')
  if coordinator_address:
    host, port = parse_address(coordinator_address)
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise errors.ConfigError(f'process_id={process_id} and num_processes={num_processes} must satisfy '
                       f'0 <= process_id < num_processes')
    who = f'process {process_id} of {num_processes}'
    left = timeout_s
    if process_id == 0:
      _check_listen(coordinator_address, port)
    else:
      left = _wait_for_coordinator(coordinator_address, host, port, timeout_s, who)
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    logging.info('%s: joining the run at %s, waiting up to %.0fs for all %d', who,
                 coordinator_address, left, num_processes)
    # JAX's own timeout a little later than ours: ours says what happened in one line.
    _join_within(left, coordinator_address, who, num_processes, lambda: jax.distributed.initialize(
        coordinator_address, num_processes, process_id,
        initialization_timeout=int(left) + 30))
  elif num_processes or process_id != -1:
    raise errors.ConfigError(f'--num_processes={num_processes} and --process_id={process_id} need '
                             f'--coordinator_address=HOST:PORT (process 0\'s); without it each '
                             f'process would train alone')
  elif detected_cluster():
    jax.distributed.initialize(initialization_timeout=int(timeout_s))
  else:
    return
  logging.info('process %d of %d, %d local and %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())

  try:
    return int(os.environ.get('SLURM_NTASKS', '1'))
  except ValueError:
    return 0


def mesh() -> Mesh:
  """A one-axis mesh over every device of every process."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(m: Mesh) -> NamedSharding:
  return NamedSharding(m, P())


def batch_sharded(m: Mesh) -> NamedSharding:
  """The leading (batch) axis split over the `data` axis."""
  return NamedSharding(m, P(DATA_AXIS))


def _leaf_sharding(leaf, m: Mesh) -> NamedSharding:
  n = m.shape[DATA_AXIS]
  if n == 1 or leaf.ndim == 0 or leaf.size < MIN_SHARDED_SIZE:
    return replicated(m)
  # Split the largest dimension the devices divide.
  for dim in sorted(range(leaf.ndim), key=lambda d: -leaf.shape[d]):
    if leaf.shape[dim] % n == 0:
      spec = [None] * leaf.ndim
      spec[dim] = DATA_AXIS
      return NamedSharding(m, P(*spec))
  return replicated(m)


def state_shardings(abstract_state, m: Mesh, shard_params: bool):
  """Shardings of the train state: replicated, or FSDP-style with `shard_params`."""
  if not shard_params:
    return jax.tree.map(lambda _: replicated(m), abstract_state)
  return jax.tree.map(lambda leaf: _leaf_sharding(leaf, m), abstract_state)


def check_batch_size(batch_size: int, name: str = 'batch_size') -> None:
  devices, processes = jax.device_count(), jax.process_count()
  if batch_size % devices:
    raise errors.ConfigError(f'{name}={batch_size} does not divide over the {devices} devices; '
                     f'choose a multiple of {devices}')
  if batch_size % processes:
    raise errors.ConfigError(f'{name}={batch_size} does not divide over the {processes} processes')


def global_batch(local_batch: dict, m: Mesh) -> dict:
  """Assembles the global batch from each process's rows, without a gather through one host."""
  sharding = batch_sharded(m)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
