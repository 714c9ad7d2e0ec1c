"""Batches for training and evaluation as tf.data pipelines over in-memory arrays.

Training batch `s` is a pure function of (seed, s): epoch e = s // steps_per_epoch is ordered by a
stateless permutation seeded with (seed, e), and augmentation draws from stateless random ops seeded
with (seed, s). A resumed run therefore sees exactly the batches it would have seen, and the global
batch is the same whatever the number of processes: process p takes rows [p*L, (p+1)*L) of it.

The preprocessing is `preprocess`'s recipe, the device path's and prediction's, in TensorFlow ops
(`TF_OPS`): tests/test_preprocessing.py holds the two to the same numbers on the same pixels.
"""

import math
from typing import Iterator

import jax
import numpy as np
import tensorflow as tf

from cnn_zoo.data import preprocess, sources
from cnn_zoo.data.preprocess import (AUGMENTATIONS, RESIZE_MODES, Preprocess,  # noqa: F401
                                     check_fits, stats_for_channels)

# TensorFlow only feeds the host; keep it off any accelerator JAX is using.
tf.config.set_visible_devices([], 'GPU')


def _to_float(x):
  if tf.as_dtype(x.dtype) == tf.uint8:
    return tf.cast(x, tf.float32) / 255.0
  return tf.cast(x, tf.float32)


def _crop(x, offsets, padding):
  """Zero-pads by `padding` and crops back at `offsets` ([N, 2] in 0..2*padding) per example."""
  h, w = x.shape[1], x.shape[2]
  x = tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
  rows = offsets[:, :1] + tf.range(h)[None]
  cols = offsets[:, 1:] + tf.range(w)[None]
  x = tf.gather(x, rows, axis=1, batch_dims=1)
  return tf.gather(x, cols, axis=2, batch_dims=1)


TF_OPS = preprocess.Ops(
    to_float=_to_float,
    tile=lambda x, channels: tf.tile(x, [1, 1, 1, channels]),
    grey=lambda x: tf.tensordot(x, preprocess.GREY_WEIGHTS, [[-1], [-1]])[..., None],
    pad=lambda x, padding: tf.pad(x, [[0, 0], list(padding[0]), list(padding[1]), [0, 0]]),
    resize=lambda x, size: tf.image.resize(x, size, method='bilinear', antialias=True),
    crop=_crop,
    flip=lambda x, flips: tf.where(flips[:, None, None, None], tf.reverse(x, axis=[2]), x))


def _augmentation_draws(seed, global_batch, padding, rows):
  """Random crop offsets and flips for the whole global batch, sliced to this process's `rows`.

  Drawn for the global batch so that a process's examples are augmented the same way whatever the
  number of processes.
  """
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  offsets = tf.random.stateless_uniform([global_batch, 2], crop_seed, 0, 2 * padding + 1,
                                        dtype=tf.int32)
  flips = tf.random.stateless_uniform([global_batch], flip_seed) < 0.5
  return offsets[rows[0]:rows[1]], flips[rows[0]:rows[1]]


def preprocess_batch(images, prep: Preprocess, draws=None):
  """uint8 (N, h, w, c) -> float32 (N, H, W, C); augments when `draws` (offsets, flips) are given."""
  return preprocess.apply(tf.convert_to_tensor(images), prep, TF_OPS, draws)


def _options():
  options = tf.data.Options()
  options.deterministic = True
  if jax.default_backend() == 'cpu':
    options.threading.private_threadpool_size = 2  # leave the other cores to XLA's step
  # On an accelerator the host cores have nothing else to do: tf.data's default pool uses them all.
  options.autotune.enabled = True
  return options


def train_batches(split: sources.Split, prep: Preprocess, *, global_batch: int, seed: int,
                  start_step: int, num_steps: int, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """This process's share of training batches start_step .. num_steps - 1."""
  n = len(split)
  steps_per_epoch = n // global_batch  # the last partial batch of an epoch is dropped
  if steps_per_epoch == 0:
    raise sources.DataError(f'batch_size {global_batch} exceeds the {n} training examples')
  local_batch = global_batch // process_count
  images, labels = tf.constant(split.images), tf.constant(split.labels)

  def make_batch(step):
    epoch, in_epoch = step // steps_per_epoch, step % steps_per_epoch
    first = in_epoch * global_batch + process_index * local_batch
    positions = first + tf.range(local_batch, dtype=tf.int64)
    order_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
    index = tf.random.experimental.index_shuffle(positions, order_seed, n - 1)
    draws = None
    if prep.augment != 'none':
      aug_seed = tf.stack([tf.constant(seed, tf.int64), step])
      rows = (process_index * local_batch, (process_index + 1) * local_batch)
      draws = _augmentation_draws(aug_seed, global_batch, prep.crop_padding, rows)
    return {'image': preprocess_batch(tf.gather(images, index), prep, draws),
            'label': tf.gather(labels, index)}

  ds = tf.data.Dataset.range(start_step, num_steps)
  ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
  return _as_numpy(ds.with_options(_options()))


def num_eval_batches(n: int, global_batch: int) -> int:
  return math.ceil(n / global_batch)


def eval_batches(split: sources.Split, prep: Preprocess, *, global_batch: int,
                 process_index: int = 0, process_count: int = 1):
  """Every example once, in order; the last batch is padded and its padding masked out."""
  n = len(split)
  local_batch = global_batch // process_count
  images, labels = tf.constant(split.images), tf.constant(split.labels)

  def make_batch(b):
    positions = b * global_batch + process_index * local_batch + tf.range(local_batch, dtype=tf.int64)
    index = tf.minimum(positions, n - 1)
    return {'image': preprocess_batch(tf.gather(images, index), prep),
            'label': tf.gather(labels, index),
            'mask': tf.cast(positions < n, tf.float32)}

  ds = tf.data.Dataset.range(num_eval_batches(n, global_batch))
  ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
  return _as_numpy(ds.with_options(_options()))


def _as_numpy(ds):
  for batch in ds:
    yield {k: v.numpy() for k, v in batch.items()}
