"""Class probabilities for one image file from a trained run.

The image is first made to look like an example of the run's dataset (its size and channels), then
preprocessed exactly as the run's evaluation was (`TrainedRun.inputs`): a 28x28 digit given to an
MNIST run is padded to 32x32 as in training, a large photo is resized to the dataset's size first.
"""

import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn_zoo import errors
from cnn_zoo.train import inference


def read_image(path: str) -> np.ndarray:
  """A PNG, JPEG, GIF, BMP or WebP file as uint8 (H, W, C) with C = 1 (grey) or 3 (RGB).

  decode_image scales 16-bit PNGs to 8 bits; an alpha channel is dropped.
  """
  if not os.path.isfile(path):
    raise errors.NotFoundError(f'image not found: {path}')
  try:
    image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False).numpy()
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
    raise errors.DataError(f'{path}: cannot read it as an image (PNG, JPEG, GIF, BMP or WebP)') from None
  if image.shape[-1] in (2, 4):  # grey + alpha, RGBA
    image = image[..., :-1]
  return image


def as_dataset_example(run: inference.TrainedRun, image: np.ndarray) -> np.ndarray:
  """uint8 (h, w, c) -> uint8 (H, W, C) at the size and channels of the run's dataset images."""
  height, width, channels = run.dataset.image_shape
  x = tf.convert_to_tensor(image)
  if x.shape[-1] == 3 and channels == 1:
    x = tf.image.rgb_to_grayscale(x)
  elif x.shape[-1] == 1 and channels == 3:
    x = tf.image.grayscale_to_rgb(x)
  elif x.shape[-1] != channels:
    raise errors.DataError(f'cannot give a {x.shape[-1]}-channel image to a run on '
                     f'{channels}-channel images')
  if tuple(x.shape[:2]) != (height, width):
    # As cnn_zoo.data.sources resizes images of varying size.
    x = tf.image.resize(x, (height, width), antialias=True)
    x = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)
  return x.numpy()


def class_names(run: inference.TrainedRun) -> list[str]:
  """The dataset's label names when it has them (TFDS, image folders), else the indices."""
  name, count = run.config.dataset, run.dataset.num_classes
  names = None
  try:
    if name.startswith('folder:'):
      names = tfds.ImageFolder(name[len('folder:'):]).info.features['label'].names
    elif not name.startswith('npz:'):
      builder = tfds.builder(name.removeprefix('tfds:'), data_dir=run.config.data_dir or None)
      names = builder.info.features['label'].names
  except Exception:  # names are a nicety: fall back to indices
    names = None
  if not names or len(names) < count:
    names = [str(i) for i in range(count)]
  return list(names)


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


def predict_image(run: inference.TrainedRun, image: np.ndarray,
                  top_k: int | None = 5) -> list[tuple[int, str, float]]:
  """The ranked class probabilities of one uint8 (h, w, c) image."""
  probabilities = run.probabilities(as_dataset_example(run, image)[None])[0]
  return ranked(probabilities.astype(np.float64), class_names(run), top_k)


def predict(workdir: str, image_path: str,
            top_k: int | None = 5) -> list[tuple[int, str, float]]:
  """The top_k (all when None) classes of the image at `image_path` under the run in `workdir`."""
  image = read_image(image_path)
  return predict_image(inference.load(workdir), image, top_k)


def _probability(p: float) -> str:
  return f'{p:.4f}' if p >= 1e-4 or p == 0 else f'{p:.1e}'  # tiny, but not zero


def format_ranking(ranking: list[tuple[int, str, float]], top_k: int | None = 5) -> str:
  """A full ranking as text: the top_k lines, then the rest in one line, so the column sums to 1."""
  _check_top_k(top_k)
  shown = ranking[:top_k]
  rest = ranking[len(shown):]
  other = f'other {len(rest)}'
  width = max([len(name) for _, name, _ in shown] + [len(other) if rest else 0])
  lines = [f'{rank:>3}. {name:<{width}}  {_probability(p)}'
           for rank, (_, name, p) in enumerate(shown, 1)]
  if rest:
    lines.append(f'     {other:<{width}}  {_probability(sum(p for _, _, p in rest))}')
  return '\n'.join(lines)
