"""The one definition of how uint8 images become model inputs, for every path that makes them.

The recipe, in order: fit the images to the model's (H, W, C) (`fit_rule`: channels tiled or made
grey, then padded or resized), scale to [0, 1], augment (pad-and-crop, horizontal flip; training
only, at offsets and flips drawn by the caller), normalise by mean and std. It is written once here
over `Ops`, the few array operations it needs; each input path supplies them for its array library:
numpy and JAX for the device path and prediction (`device_pipeline.HOST_OPS`, `DEVICE_OPS`),
TensorFlow for the tf.data path (`tfdata_pipeline.TF_OPS`). tests/test_preprocessing.py holds the
two to the same numbers on the same pixels. TensorFlow-free, JAX-free.

What a run needs to preprocess as it was trained is all in `Preprocess`: the model's input shape,
the mean and std (of the training images, per their channel), the resize mode and the
augmentation; no dataset.
"""

import dataclasses
from typing import Any, Callable

import numpy as np

from cnn_zoo.errors import DataError

AUGMENTATIONS = ('none', 'crop', 'flip', 'crop_flip')
RESIZE_MODES = ('auto', 'pad', 'resize')
# 'auto' pads images at most this many pixels short of the model's size (28 -> 32), resizes others.
AUTO_PAD_LIMIT = 8
# ITU-R 601 luma weights (tf.image.rgb_to_grayscale's): how RGB becomes grey everywhere.
GREY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """How raw uint8 images become model inputs."""
  image_shape: tuple[int, int, int]  # the model's (H, W, C)
  mean: tuple[float, ...]  # per channel of the source images, 0..1 scale
  std: tuple[float, ...]
  resize_mode: str = 'auto'  # auto: pad when at most 8 pixels short (28 -> 32), resize otherwise
  augment: str = 'none'
  crop_padding: int = 4


@dataclasses.dataclass(frozen=True)
class FitRule:
  """How images of one (h, w, c) are fitted to the model's (H, W, C), decided from shapes alone."""
  channels: str  # 'keep', 'tile' (grey to C copies) or 'grey' (RGB to luma)
  size: str  # 'keep', 'pad' (centred, zeros) or 'resize' (bilinear, antialiased)
  padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))  # (top, bottom), (left, right)

  @property
  def exact(self) -> bool:
    """Whether the fitted images hold only source values (uint8 stays uint8)."""
    return self.channels != 'grey' and self.size != 'resize'


@dataclasses.dataclass(frozen=True)
class Ops:
  """The array operations the recipe is written in, for one array library; x is (N, H, W, C)."""
  to_float: Callable[[Any], Any]  # uint8 -> float32 / 255; float32 unchanged
  tile: Callable[[Any, int], Any]  # (N, H, W, 1) -> (N, H, W, channels)
  grey: Callable[[Any], Any]  # float (N, H, W, 3) -> (N, H, W, 1), weighted by GREY_WEIGHTS
  pad: Callable[[Any, tuple], Any]  # zeros around H and W: ((top, bottom), (left, right))
  resize: Callable[[Any, tuple[int, int]], Any]  # float, to (H, W): bilinear, antialiased
  crop: Callable[[Any, Any, int], Any]  # zero-pad by p, crop back at offsets (N, 2) in 0..2p
  flip: Callable[[Any, Any], Any]  # left-right where flips (N,) is true


def channel_rule(source_channels: int, channels: int) -> str | None:
  """'keep', 'tile' or 'grey'; None when `source_channels` cannot become `channels` (grey images
  convert to any count, RGB to grey)."""
  if source_channels == channels:
    return 'keep'
  if source_channels == 1:
    return 'tile'
  if source_channels == 3 and channels == 1:
    return 'grey'
  return None


def fit_rule(image_shape, model_shape, resize_mode: str = 'auto') -> FitRule:
  """The `FitRule` of (h, w, c) images for a model taking (H, W, C) under `resize_mode`."""
  (h, w, c), (height, width, channels) = tuple(image_shape), tuple(model_shape)
  channel = channel_rule(c, channels)
  if channel is None:
    raise DataError(f'cannot convert {c}-channel images to {channels} channels')
  if (h, w) == (height, width):
    return FitRule(channel, 'keep')
  mode = resize_mode
  if mode == 'auto':
    short = (height - h, width - w)
    mode = 'pad' if all(0 <= s <= AUTO_PAD_LIMIT for s in short) else 'resize'
  if mode == 'resize':
    return FitRule(channel, 'resize')
  if h > height or w > width:
    raise DataError(f'cannot pad {h}x{w} images to {height}x{width}; use resize_mode=resize')
  top, left = (height - h) // 2, (width - w) // 2
  return FitRule(channel, 'pad', ((top, height - h - top), (left, width - w - left)))


def check_fits(where: str, image_shape, model_shape, resize_mode: str) -> None:
  """Refuses, before anything is compiled, images that preprocessing cannot turn into the model's
  input: a channel count it cannot convert, or images too large to pad."""
  (h, w, c), (height, width, channels) = image_shape, model_shape
  if channel_rule(c, channels) is None:
    raise DataError(f'{where}: {c}-channel images cannot be given to a model that takes '
                    f'{channels} channel(s) (grey images convert to any count, RGB to grey)')
  if resize_mode == 'pad' and (h > height or w > width):
    raise DataError(f'{where}: cannot pad {h}x{w} images to {height}x{width}; use '
                    f'resize_mode=resize')


def stats_for_channels(values, source_channels: int, channels: int) -> np.ndarray:
  """Per-channel statistics of the source images, mapped to the model's channels."""
  values = np.asarray(values, np.float32)
  if source_channels == channels:
    return values
  if source_channels == 1:
    return np.repeat(values, channels)
  return np.full([channels], values.mean(), np.float32)  # rgb -> grey: about the mean


def model_stats(prep: Preprocess, source_channels: int) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) of `prep` for the model's channels, from images of `source_channels`."""
  channels = prep.image_shape[-1]
  return (stats_for_channels(prep.mean, source_channels, channels),
          stats_for_channels(prep.std, source_channels, channels))


def fit(images, image_shape, resize_mode: str, ops: Ops):
  """(N, h, w, c) uint8 -> the model's (N, H, W, C): uint8 where the rule is exact, else float32
  in [0, 1]."""
  rule = fit_rule(tuple(images.shape[1:]), image_shape, resize_mode)
  x = images
  if rule.channels == 'tile':
    x = ops.tile(x, image_shape[-1])
  elif rule.channels == 'grey':
    x = ops.grey(ops.to_float(x))
  if rule.size == 'pad':
    x = ops.pad(x, rule.padding)
  elif rule.size == 'resize':
    x = ops.resize(ops.to_float(x), tuple(image_shape[:2]))
  return x


def augment(x, offsets, flips, augment_mode: str, crop_padding: int, ops: Ops):
  """Fitted images cropped at `offsets` ('crop') and mirrored where `flips` ('flip'): torchvision's
  pad, crop and hflip (tests/test_augment_torch.py). The crop's padding is black: applied before
  normalising."""
  if 'crop' in augment_mode:
    x = ops.crop(x, offsets, crop_padding)
  if 'flip' in augment_mode:
    x = ops.flip(x, flips)
  return x


def normalise(x, mean, std, ops: Ops):
  """Fitted (and augmented) images scaled to [0, 1], less `mean`, over `std` (the model's
  channels)."""
  return (ops.to_float(x) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def apply(images, prep: Preprocess, ops: Ops, draws=None):
  """The whole recipe in one call: uint8 (N, h, w, c) -> float32 (N, H, W, C); augmented by
  `draws` (offsets, flips) when given, as `prep.augment` says."""
  x = ops.to_float(fit(images, prep.image_shape, prep.resize_mode, ops))
  if draws is not None:
    x = augment(x, *draws, prep.augment, prep.crop_padding, ops)
  return normalise(x, *model_stats(prep, images.shape[-1]), ops)
