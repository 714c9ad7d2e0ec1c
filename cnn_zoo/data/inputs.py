"""Two input paths behind one interface: global batches on the mesh, for training and evaluation.

- 'device' (cnn_zoo.data.device_pipeline): the split lives in device memory and each batch is a
  compiled JAX function of (seed, step). No TensorFlow, no host threads competing with the step.
- 'tfdata' (cnn_zoo.data.tfdata_pipeline): tf.data batches on the host, for datasets that do not
  fit.
- 'auto': 'device' when the fitted train and test splits take at most a quarter of one device's
  memory (DEVICE_SHARE; 2 GiB on a CPU, whose memory JAX does not report), else 'tfdata'.

Both follow the same recipe and the same contract (batch s a pure function of (seed, s); evaluation
padded and masked), with other random draws: a run keeps the path it started with (config.json).
"""

import dataclasses
import functools
import math
import time
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from cnn_zoo import errors, parallel
from cnn_zoo.data import device_pipeline, preprocess

INPUT_PIPELINES = ('auto', 'device', 'tfdata')
DEVICE_SHARE = 0.25
CPU_BUDGET = 2 << 30


@dataclasses.dataclass(frozen=True)
class Inputs:
  path: str  # 'device' or 'tfdata'
  train: Callable[[int, int], Iterator[dict]]  # (start_step, num_steps) -> global batches
  eval: Callable[[], Iterator[dict]]  # every test example once, padded and masked
  compile_time: float = 0.0


def device_budget() -> int:
  stats = jax.local_devices()[0].memory_stats() or {}
  return int(stats['bytes_limit'] * DEVICE_SHARE) if 'bytes_limit' in stats else CPU_BUDGET


def choose(requested: str, dataset, image_shape, resize_mode: str) -> str:
  """The path `requested` ('auto' decided by the splits' size on the device)."""
  if requested != 'auto':
    return requested
  need = sum(device_pipeline.nbytes(split.images, image_shape, resize_mode)
             for split in (dataset.train, dataset.test))
  return 'device' if need <= device_budget() else 'tfdata'


def training_preprocess(config, dataset, plan) -> preprocess.Preprocess:
  """The one preprocessing both paths apply: the model's input shape, the train split's mean and
  std, and the config's resize mode and augmentation."""
  mean, std = dataset.channel_stats()
  return preprocess.Preprocess(plan.input_shape, tuple(mean), tuple(std), config.resize_mode,
                               config.augment, config.crop_padding)


def make(config, dataset, plan, mesh) -> Inputs:
  """The batches of config.input_pipeline for `dataset` under `plan` on `mesh`."""
  prep = training_preprocess(config, dataset, plan)
  path = choose(config.input_pipeline, dataset, prep.image_shape, prep.resize_mode)
  if path == 'device':
    return _device(config, dataset, plan, mesh, prep)
  if config.seeds:
    raise errors.ConfigError(f'config.seeds={tuple(config.seeds)!r}: replicas need the device '
                             f'input path, and {dataset.name} does not fit a quarter of the '
                             f'device memory; train one seed per run (seeds=())')
  return _tfdata(config, dataset, plan, mesh, prep)


def _device(config, dataset, plan, mesh, prep) -> Inputs:
  mean, std = preprocess.model_stats(prep, dataset.train.images.shape[-1])
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  put = lambda split: device_pipeline.put(split.images, split.labels, prep.image_shape,
                                          prep.resize_mode, replicated)
  train_split, test_split = put(dataset.train), put(dataset.test)
  scalar = jax.ShapeDtypeStruct((), jnp.int32)
  order = functools.partial(device_pipeline.epoch_order, len(train_split))
  batch = functools.partial(
      device_pipeline.ordered_batch, batch_size=plan.batch_size,
      steps_per_epoch=plan.steps_per_epoch, mean=tuple(mean), std=tuple(std),
      augment=prep.augment, crop_padding=prep.crop_padding)
  seeds, order_shape, train_sharding = np.int32(config.seed), (len(train_split),), sharded
  if config.seeds:  # replicas (cnn_zoo.train.replicas): each seed's order and batch, stacked
    seeds, order_shape = np.asarray(config.seeds, np.int32), (len(config.seeds), len(train_split))
    order, batch = jax.vmap(order, (0, None)), jax.vmap(batch, (None, 0, None, 0))
    train_sharding = NamedSharding(mesh, P(None, parallel.DATA_AXIS))
  seed_spec = jax.ShapeDtypeStruct(seeds.shape, jnp.int32)
  t0 = time.perf_counter()
  order_fn = jax.jit(order, out_shardings=replicated).lower(seed_spec, scalar).compile()
  order_spec = jax.ShapeDtypeStruct(order_shape, jnp.int32, sharding=replicated)
  train_fn = jax.jit(batch, out_shardings=train_sharding).lower(train_split, order_spec, scalar,
                                                          seed_spec).compile()
  eval_fn = jax.jit(functools.partial(
      device_pipeline.eval_batch, batch_size=plan.eval_batch_size, mean=tuple(mean),
      std=tuple(std)), out_shardings=sharded).lower(test_split, scalar).compile()
  compile_time = time.perf_counter() - t0

  def train(start_step, num_steps):
    epoch, order = None, None
    for step in range(start_step, num_steps):
      if step // plan.steps_per_epoch != epoch:  # the epoch's order, once per epoch
        epoch = step // plan.steps_per_epoch
        order = order_fn(seeds, np.int32(epoch))
      yield train_fn(train_split, order, np.int32(step), seeds)

  def evaluate():
    for index in range(math.ceil(len(test_split) / plan.eval_batch_size)):
      yield eval_fn(test_split, np.int32(index))

  return Inputs('device', train, evaluate, compile_time)


def _tfdata(config, dataset, plan, mesh, train_prep) -> Inputs:
  try:
    from cnn_zoo.data import tfdata_pipeline  # TensorFlow: imported only on this path
  except ImportError:
    raise errors.ConfigError('config.input_pipeline=tfdata needs TensorFlow, which is not '
                             'installed here; use input_pipeline=device (or auto)') from None
  eval_prep = dataclasses.replace(train_prep, augment='none')
  where = {'process_index': jax.process_index(), 'process_count': jax.process_count()}

  def train(start_step, num_steps):
    for batch in tfdata_pipeline.train_batches(dataset.train, train_prep,
                                               global_batch=plan.batch_size, seed=config.seed,
                                               start_step=start_step, num_steps=num_steps,
                                               **where):
      yield parallel.global_batch(batch, mesh)

  def evaluate():
    for batch in tfdata_pipeline.eval_batches(dataset.test, eval_prep,
                                              global_batch=plan.eval_batch_size, **where):
      yield parallel.global_batch(batch, mesh)

  return Inputs('tfdata', train, evaluate)
