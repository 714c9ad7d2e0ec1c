"""Devices: the data-parallel mesh, its shardings, and multi-host start-up (JAX's own).

One mesh axis, `data`, spans every device of every process. Batches are split over it; the train
state is replicated, or with `shard_params` (FSDP-style) each large parameter and its optimizer
state are split over it along one dimension, and XLA gathers them where the step needs them.
"""

import os

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cnn_zoo import errors

DATA_AXIS = 'data'
# Parameters smaller than this stay replicated under shard_params: splitting them saves nothing.
MIN_SHARDED_SIZE = 2 ** 14


def initialize(coordinator_address: str = '', num_processes: int = 0, process_id: int = -1):
  """Joins a multi-process run through jax.distributed.

  With a coordinator address, the given process count and id are used (CPU hosts use gloo
  collectives). Without one, JAX's own detection is tried where it exists (TPU VMs, Open MPI, and
  a SLURM job step of several tasks: `srun` in a job of `--ntasks` > 1); a lone process on a
  plain machine, and a one-task SLURM job, stay single-process.
  """
  if coordinator_address:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise errors.ConfigError(f'process_id={process_id} and num_processes={num_processes} must satisfy '
                       f'0 <= process_id < num_processes')
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif _slurm_step_tasks() > 1 or any(v in os.environ for v in ('TPU_WORKER_HOSTNAMES',
                                                                  'OMPI_COMM_WORLD_SIZE')):
    jax.distributed.initialize()
  else:
    return
  logging.info('process %d of %d, %d local and %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _slurm_step_tasks() -> int:
  """The processes of the SLURM job step this one is in (0 outside a step). JAX's detection reads
  the same variables; a job's batch script, or a step of one task, has nothing to join: starting
  jax.distributed there would only open a coordinator port (on every address) for itself."""
  if 'SLURM_JOB_ID' not in os.environ or 'SLURM_STEP_NODELIST' not in os.environ:
    return 0
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
