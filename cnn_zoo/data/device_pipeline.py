"""Batches computed on the device from a dataset held in device memory: JAX only, no TensorFlow.

The split is fitted to the model's size and channels once, put on the device(s) as uint8 (float32
only where a resize or a grey conversion made new values), and every batch is computed by jitted
JAX code from (seed, step) alone: epoch e = step // steps_per_epoch is ordered by
`jax.random.permutation(fold_in(key(seed), e))`, and the crop offsets and flips of step s are drawn
from `fold_in(fold_in(key(seed), 2**30), s)` (a stream apart from the epochs') for the whole global
batch. A resumed run sees exactly the batches it
would have seen, on any number of devices. The preprocessing is `preprocess`'s recipe (the
tf.data pipeline's too) in numpy on the host (`HOST_OPS`: fitting, and prediction's inputs) and JAX
on the device (`DEVICE_OPS`: augmentation and normalisation), but other random draws: the two
paths give different (equally valid) batch orders, so a run keeps the path it started with.
"""

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np

from cnn_zoo.data import preprocess
from cnn_zoo.data.preprocess import stats_for_channels  # noqa: F401

RESIZE_CHUNK = 1024  # examples resized at a time on the host: a bound on the float copy


@flax.struct.dataclass
class DeviceSplit:
  """A split in device memory, fitted to the model's (H, W, C); a pytree, so compiled batch
  functions take it as an argument rather than baking it in as a constant."""
  images: jax.Array  # (N, H, W, C): uint8, or float32 in [0, 1] where fitting made new values
  labels: jax.Array  # int32 (N,)

  def __len__(self):
    return self.labels.shape[0]


def _crop_one(image, offset, padding):
  """Zero-pads one (H, W, C) image by `padding` and crops it back at `offset` (2,)."""
  h, w, c = image.shape
  padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  return jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0), (h, w, c))


def _resize(x, size):
  return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), 'bilinear', antialias=True)


DEVICE_OPS = preprocess.Ops(
    to_float=lambda x: x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x,
    tile=lambda x, channels: jnp.repeat(x, channels, axis=-1),
    grey=lambda x: x @ jnp.asarray(preprocess.GREY_WEIGHTS)[:, None],
    pad=lambda x, padding: jnp.pad(x, ((0, 0), *padding, (0, 0))),
    resize=_resize,
    crop=lambda x, offsets, padding: jax.vmap(functools.partial(_crop_one, padding=padding))(
        x, offsets),
    flip=lambda x, flips: jnp.where(flips[:, None, None, None], x[:, :, ::-1], x))


_RESIZE = jax.jit(_resize, static_argnums=1)


def _resize_on_host(x: np.ndarray, size) -> np.ndarray:
  """float32 (N, h, w, C) -> numpy (N, H, W, C), RESIZE_CHUNK examples at a time."""
  return np.concatenate([np.asarray(_RESIZE(x[i:i + RESIZE_CHUNK], tuple(size)))
                         for i in range(0, len(x), RESIZE_CHUNK)])


# The same operations on host arrays, for what runs once (a split's fit) or per image (prediction).
HOST_OPS = dataclasses.replace(
    DEVICE_OPS,
    to_float=lambda x: x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x,
    tile=lambda x, channels: np.repeat(x, channels, axis=-1),
    grey=lambda x: x @ preprocess.GREY_WEIGHTS[:, None],
    pad=lambda x, padding: np.pad(x, ((0, 0), *padding, (0, 0))),
    resize=_resize_on_host)


def fit(images: np.ndarray, image_shape: tuple[int, int, int], resize_mode: str = 'auto'):
  """uint8 (N, h, w, c) -> the model's (N, H, W, C): uint8 when only padded or tiled, else
  float32 in [0, 1]. Runs once, before training."""
  return preprocess.fit(images, image_shape, resize_mode, HOST_OPS)


def eval_inputs(images: np.ndarray, prep: preprocess.Preprocess) -> np.ndarray:
  """uint8 (N, h, w, c) as evaluation preprocesses them, on the host: float32 (N, H, W, C)."""
  return np.asarray(preprocess.apply(images, prep, HOST_OPS), np.float32)


def put(images: np.ndarray, labels: np.ndarray, image_shape, resize_mode: str,
        sharding: jax.sharding.Sharding) -> DeviceSplit:
  """Fits a split and puts it on the device(s) with `sharding` (replicated: every device holds
  the split, so any example can join any device's share of a batch)."""
  fitted = fit(images, image_shape, resize_mode)
  # Every process holds the whole split, so its local data is the global array (multi-host too).
  put = lambda x: jax.make_array_from_process_local_data(sharding, x, x.shape)
  return DeviceSplit(put(fitted), put(np.asarray(labels, np.int32)))


def nbytes(images: np.ndarray, image_shape, resize_mode: str = 'auto') -> int:
  """Device memory a split takes once fitted (without fitting it)."""
  rule = preprocess.fit_rule(images.shape[1:], image_shape, resize_mode)
  height, width, channels = image_shape
  return len(images) * height * width * channels * (1 if rule.exact else 4)


def epoch_order(num_examples: int, seed, epoch) -> jax.Array:
  """The order of epoch `epoch`: a permutation of the split drawn from fold_in(key(seed), epoch)."""
  return jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(seed), epoch), num_examples)


def train_batch(split: DeviceSplit, step, seed, *, batch_size: int, steps_per_epoch: int,
                mean, std, augment: str = 'none', crop_padding: int = 4) -> dict:
  """Global training batch `step` (jit it; `step` and `seed` may be traced): the examples at
  positions [i * B, (i + 1) * B) of epoch e's order, augmented and normalised."""
  order = epoch_order(len(split), seed, step // steps_per_epoch)
  return ordered_batch(split, order, step, seed, batch_size=batch_size,
                       steps_per_epoch=steps_per_epoch, mean=mean, std=std, augment=augment,
                       crop_padding=crop_padding)


def ordered_batch(split: DeviceSplit, order, step, seed, *, batch_size: int, steps_per_epoch: int,
                  mean, std, augment: str = 'none', crop_padding: int = 4) -> dict:
  """train_batch given its epoch's order, which a loop computes once per epoch rather than once
  per step (a sort of the whole split: more than LeNet-5's whole step on a CPU)."""
  in_epoch = step % steps_per_epoch
  index = jax.lax.dynamic_slice(order, (in_epoch * batch_size,), (batch_size,))
  x = DEVICE_OPS.to_float(split.images[index])
  if augment != 'none':
    offsets, flips = augmentation_draws(seed, step, batch_size, crop_padding)
    x = augment_batch(x, offsets, flips, augment, crop_padding)
  return {'image': preprocess.normalise(x, mean, std, DEVICE_OPS), 'label': split.labels[index]}


def augmentation_draws(seed, step, batch_size: int, crop_padding: int):
  """The crop offsets ((batch_size, 2), each in 0 .. 2 * crop_padding: the crop's top-left corner
  in the padded image) and flips (batch_size,) of training step `step`."""
  key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 1 << 30), step)
  crop_key, flip_key = jax.random.split(key)
  offsets = jax.random.randint(crop_key, (batch_size, 2), 0, 2 * crop_padding + 1)
  return offsets, jax.random.bernoulli(flip_key, 0.5, (batch_size,))


def augment_batch(x, offsets, flips, augment: str, crop_padding: int):
  """(N, H, W, C) images zero-padded by `crop_padding` and cropped back at `offsets` ('crop'),
  then mirrored left-right where `flips` ('flip'): `preprocess.augment` in JAX."""
  return preprocess.augment(x, offsets, flips, augment, crop_padding, DEVICE_OPS)


def eval_batch(split: DeviceSplit, index, *, batch_size: int, mean, std) -> dict:
  """Evaluation batch `index` (may be traced), in order; past the end it repeats the last example
  with mask 0, so every example counts exactly once."""
  positions = index * batch_size + jnp.arange(batch_size)
  take = jnp.minimum(positions, len(split) - 1)
  return {'image': preprocess.normalise(split.images[take], mean, std, DEVICE_OPS),
          'label': split.labels[take], 'mask': (positions < len(split)).astype(jnp.float32)}
