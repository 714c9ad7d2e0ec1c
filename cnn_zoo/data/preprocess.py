"""What both input paths share, and what can be checked before anything is built: TensorFlow-free.

Preprocessing, in order: scale to [0, 1], convert channels to the model's, pad or resize to the
model's size, augment (pad-and-crop, horizontal flip; training only), normalise by the train split's
mean and std.
"""

import dataclasses

import numpy as np

from cnn_zoo.errors import DataError

AUGMENTATIONS = ('none', 'crop', 'flip', 'crop_flip')
RESIZE_MODES = ('auto', 'pad', 'resize')


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """How raw uint8 images become model inputs."""
  image_shape: tuple[int, int, int]  # the model's (H, W, C)
  mean: tuple[float, ...]  # per channel of the source images, 0..1 scale
  std: tuple[float, ...]
  resize_mode: str = 'auto'  # auto: pad when at most 8 pixels short (28 -> 32), resize otherwise
  augment: str = 'none'
  crop_padding: int = 4


def check_fits(where: str, image_shape, model_shape, resize_mode: str) -> None:
  """Refuses, before anything is compiled, images that preprocessing cannot turn into the model's
  input: a channel count it cannot convert, or images too large to pad."""
  (h, w, c), (height, width, channels) = image_shape, model_shape
  if not (c == channels or c == 1 or (c == 3 and channels == 1)):
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
