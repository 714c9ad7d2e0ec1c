"""Class probabilities for one image file from a trained run.

The image is first made to look like an example of the run's dataset (its size and channels), then
preprocessed exactly as the run's evaluation was (`TrainedRun.inputs`): a 28x28 digit given to an
MNIST run is padded to 32x32 as in training, a large photo is resized to the dataset's size first.
"""

import os

import numpy as np

from cnn_zoo import errors, escape
from cnn_zoo.data import images
from cnn_zoo.pretrained import imagenet
from cnn_zoo.train import trained_run


def read_image(path: str, at_least: tuple[int, int] | None = None) -> np.ndarray:
  """A PNG, JPEG, GIF, BMP or WebP file as uint8 (H, W, C) with C = 1 (grey) or 3 (RGB), decoded
  as training's folder reader decodes (`images.decode`): 16-bit images keep their high byte; an
  alpha channel is dropped; `at_least` (width, height) lets a JPEG decode at a reduced scale."""
  if not os.path.isfile(path):
    raise errors.NotFoundError(f'image not found: {path}')
  return images.decode(path, path, images.PREDICT_FORMATS, at_least=at_least)


def decode_size(run: trained_run.TrainedRun) -> tuple[int, int]:
  """(width, height) an image needs at least to become an example of the run's dataset."""
  if run.data.fit == 'imagenet':  # its shorter side is resized to 256
    return imagenet.RESIZE, imagenet.RESIZE
  height, width, _ = run.data.image_shape
  return width, height


def as_dataset_example(run: trained_run.TrainedRun, image: np.ndarray) -> np.ndarray:
  """uint8 (h, w, c) -> uint8 (H, W, C) at the size and channels of the run's dataset images: the
  array its folder reader would hold for the same file (`images.as_example`)."""
  if run.data.fit == 'imagenet':  # torchvision's: resize 256, centre crop 224
    return imagenet.resize_and_crop(image, run.data.image_shape[0])
  return images.as_example(image, run.data.image_shape)


def read_example(run: trained_run.TrainedRun, path: str) -> np.ndarray:
  """The image file at `path` as an example of the run's dataset: decoded (reduced as it is
  decoded, as the folder reader does) and fitted by `as_dataset_example`."""
  return as_dataset_example(run, read_image(path, decode_size(run)))


def class_names(run: trained_run.TrainedRun) -> list[str]:
  """The run's class names, as training recorded them (the dataset's label names when it has
  them: image folders, TFDS, ImageNet's for a converted run; else the indices)."""
  return list(run.data.class_names)


def _check_top_k(top_k: int | None) -> None:
  if top_k is not None and top_k < 1:
    raise errors.ConfigError(f'top_k must be at least 1, got {top_k}')


def ranked(probabilities: np.ndarray, names: list[str],
           top_k: int | None = 5) -> list[tuple[int, str, float]]:
  """(class index, class name, probability) of the top_k classes (all when None), most likely
  first."""
  _check_top_k(top_k)
  order = np.argsort(-probabilities, kind='stable')[:top_k]
  return [(int(i), names[i] if i < len(names) else str(i), float(probabilities[i])) for i in order]


def predict_image(run: trained_run.TrainedRun, image: np.ndarray,
                  top_k: int | None = 5) -> list[tuple[int, str, float]]:
  """The ranked class probabilities of one uint8 (h, w, c) image."""
  probabilities = run.probabilities(as_dataset_example(run, image)[None])[0]
  return ranked(probabilities.astype(np.float64), class_names(run), top_k)


def predict(workdir: str, image_path: str,
            top_k: int | None = 5) -> list[tuple[int, str, float]]:
  """The top_k (all when None) classes of the image at `image_path` under the run in `workdir`."""
  if not os.path.isfile(image_path):
    raise errors.NotFoundError(f'image not found: {image_path}')
  images.check(image_path, image_path, images.PREDICT_FORMATS)  # refused before the run loads
  run = trained_run.load(workdir)
  return predict_image(run, read_image(image_path, decode_size(run)), top_k)


def _probability(p: float) -> str:
  return f'{p:.4f}' if p >= 1e-4 or p == 0 else f'{p:.1e}'  # tiny, but not zero


def format_ranking(ranking: list[tuple[int, str, float]], top_k: int | None = 5) -> str:
  """A full ranking as text: the top_k lines, then the rest in one line, so the column sums to 1.
  Class names (folder names) show their control characters as escapes."""
  _check_top_k(top_k)
  shown = [(i, escape.terminal(name), p) for i, name, p in ranking[:top_k]]
  rest = ranking[len(shown):]
  other = f'other {len(rest)}'
  width = max([len(name) for _, name, _ in shown] + [len(other) if rest else 0])
  lines = [f'{rank:>3}. {name:<{width}}  {_probability(p)}'
           for rank, (_, name, p) in enumerate(shown, 1)]
  if rest:
    lines.append(f'     {other:<{width}}  {_probability(sum(p for _, _, p in rest))}')
  return '\n'.join(lines)
