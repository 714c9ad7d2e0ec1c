"""Devices: the data-parallel mesh, its shardings, and multi-host start-up (JAX's own)."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def mesh() -> Mesh:
  """A one-axis mesh over every device of every process."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(m: Mesh) -> NamedSharding:
  return NamedSharding(m, P())


def batch_sharded(m: Mesh) -> NamedSharding:
  """The leading (batch) axis split over the `data` axis."""
  return NamedSharding(m, P(DATA_AXIS))


def check_batch_size(batch_size: int, name: str = 'batch_size') -> None:
  devices, processes = jax.device_count(), jax.process_count()
  if batch_size % devices:
    raise ValueError(f'{name}={batch_size} does not divide over the {devices} devices; '
                     f'choose a multiple of {devices}')
  if batch_size % processes:
    raise ValueError(f'{name}={batch_size} does not divide over the {processes} processes')


def global_batch(local_batch: dict, m: Mesh) -> dict:
  """Assembles the global batch from each process's rows, without a gather through one host."""
  sharding = batch_sharded(m)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
