"""What a model trained on ImageNet by torchvision expects of a photo, and what its outputs mean.

- Preprocessing, as torchvision's ImageNet evaluation: the shorter side resized to 256 (bilinear,
  antialiased: Pillow's), a 224x224 centre crop, scaled to [0, 1] and normalised by ImageNet's
  per-channel mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). GoogLeNet's torchvision
  weights (ported from TensorFlow) were made for (x - 0.5) / 0.5, which torchvision's model computes
  from the normalised input (`transform_input`); a converted GoogLeNet normalises so directly.
- The 1,000 class names, `cnn_zoo/data/imagenet_classes.txt`, in the order of torchvision's
  `_IMAGENET_CATEGORIES` (torchvision/models/_meta.py, torchvision 0.29.1), which is the order of
  the ILSVRC-2012 class indices its models output.
"""

import dataclasses
import functools
import os

import numpy as np
from PIL import Image

from cnn_zoo import run_files
from cnn_zoo.data import sources

RESIZE, CROP = 256, 224
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)  # GoogLeNet's transform_input
CLASSES_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data',
                            'imagenet_classes.txt')


@functools.lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
  with open(CLASSES_FILE, encoding='utf-8') as f:
    names = tuple(line.rstrip('\n') for line in f)
  assert len(names) == 1000, CLASSES_FILE
  return names


def statistics(model: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) on the 0..1 scale that the torchvision weights of `model` were trained with."""
  from cnn_zoo import models  # pylint: disable=g-import-not-at-top
  return (HALF, HALF) if models.spec(model).family == 'googlenet' else (MEAN, STD)


def resize_and_crop(image: np.ndarray, size: int = CROP, resize: int = RESIZE) -> np.ndarray:
  """uint8 (h, w, 1 or 3) -> uint8 RGB (size, size, 3): shorter side to `resize`, centre crop
  (torchvision's Resize(256) and CenterCrop(224) on a Pillow image)."""
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  h, w = image.shape[:2]
  if h <= w:
    new_h, new_w = resize, max(1, int(resize * w / h))
  else:
    new_h, new_w = max(1, int(resize * h / w)), resize
  resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(
      (new_w, new_h), Image.Resampling.BILINEAR))
  top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
  return resized[top:top + size, left:left + size]


@dataclasses.dataclass(frozen=True)
class Photos(sources.Dataset):
  """The data side of a run converted from torchvision: no images here, ImageNet's statistics
  (GoogLeNet's 0.5), crop and, for 1,000 classes, names."""
  mean: tuple[float, ...] = MEAN
  std: tuple[float, ...] = STD

  def channel_stats(self):
    return np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)

  def class_names(self) -> list[str]:
    if self.num_classes == 1000:
      return list(class_names())
    return [str(i) for i in range(self.num_classes)]


def photos(model: str, num_classes: int, size: int = CROP) -> Photos:
  """The `Photos` of a converted `model`: empty splits of size x size RGB images."""
  empty = sources.Split(np.zeros((0, size, size, 3), np.uint8), np.zeros((0,), np.int32))
  mean, std = statistics(model)
  return Photos('imagenet (converted from torchvision: no images here)', empty, empty,
                num_classes, mean, std)


# The file that marks a run directory as converted from torchvision (`cnn_zoo.train.torchvision_weights`).
CONVERTED = run_files.CONVERTED


def is_converted(workdir: str) -> bool:
  return os.path.isfile(run_files.path(workdir, CONVERTED))
