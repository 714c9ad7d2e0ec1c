"""What a trained run knows of its data (`RunData`): everything inference needs, recorded by
training in WORKDIR/dataset.json (`cnn_zoo.run_files.DATASET`), so that predict, visualize, the
explorer, export and `init_from` read the run and never its dataset. A run copied elsewhere
predicts as it did; a dataset edited, grown by a class or deleted after training changes nothing a
reloaded run computes.
"""

import dataclasses
import os

import numpy as np

from cnn_zoo import errors
from cnn_zoo.data import preprocess

# How an image from outside becomes an example of the run's dataset (`cnn_zoo.predict`):
# 'dataset': its channels converted and resized to the dataset's image size, as the folder reader
# resizes; 'imagenet': torchvision's resize to 256 and centre crop (a run converted from it).
FITS = ('dataset', 'imagenet')
FORMAT = 1  # the version of dataset.json's fields


@dataclasses.dataclass(frozen=True)
class RunData:
  dataset: str  # config.dataset as the run named it (messages, the explorer's caption)
  image_shape: tuple[int, int, int]  # the dataset's images (H, W, C), before fitting
  input_shape: tuple[int, int, int]  # the model's input (H, W, C)
  resize_mode: str  # how examples are fitted to input_shape (config.resize_mode)
  fit: str  # one of FITS
  mean: tuple[float, ...]  # the normalisation: per channel of the dataset's images, 0..1 scale
  std: tuple[float, ...]
  class_names: tuple[str, ...]  # one per class: the dataset's names, else the indices

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def to_json(self) -> dict:
    return {'format': FORMAT, **{k: list(v) if isinstance(v, tuple) else v
                                 for k, v in dataclasses.asdict(self).items()}}

  @classmethod
  def from_json(cls, value: dict, where: str) -> 'RunData':
    """The record in `value` (dataset.json's object); a field missing or of the wrong kind is a
    DataError naming it and `where`."""
    checks = {'dataset': _is_str, 'image_shape': _shape, 'input_shape': _shape,
              'resize_mode': lambda v: v in preprocess.RESIZE_MODES, 'fit': lambda v: v in FITS,
              'mean': _numbers, 'std': _numbers, 'class_names': lambda v: isinstance(v, list) and
              len(v) >= 1 and all(isinstance(n, str) for n in v)}
    damaged = 'the record of the run\'s data is damaged: restore it from a copy'
    for field, ok in checks.items():
      if not ok(value.get(field)):
        raise errors.DataError(f'{where}: {field}={repr(value.get(field))[:80]} is not valid; '
                               f'{damaged}')
    if not len(value['mean']) == len(value['std']) == value['image_shape'][-1]:
      raise errors.DataError(f'{where}: {len(value["mean"])} mean and {len(value["std"])} std '
                             f'values for images of {value["image_shape"][-1]} channel(s); '
                             f'{damaged}')
    return cls(**{field: tuple(value[field]) if isinstance(value[field], list) else value[field]
                  for field in checks})


def _is_str(v) -> bool:
  return isinstance(v, str)


def _shape(v) -> bool:
  return isinstance(v, list) and len(v) == 3 and all(type(n) is int and n > 0 for n in v)


def _numbers(v) -> bool:
  return isinstance(v, list) and len(v) >= 1 and all(
      isinstance(n, (int, float)) and not isinstance(n, bool) for n in v)


def class_names(name: str, data_dir: str | None, count: int) -> list[str]:
  """The label names of dataset `name` when it has them (image folders, TFDS), else the indices."""
  names = None
  try:
    if name.startswith('folder:'):  # as the folder reader numbers them: sorted train/ folders
      train = os.path.join(name[len('folder:'):], 'train')
      names = sorted(c for c in os.listdir(train) if os.path.isdir(os.path.join(train, c)))
    elif not name.startswith('npz:') and name != 'digits':
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      builder = tfds.builder(name.removeprefix('tfds:'), data_dir=data_dir or None)
      names = builder.info.features['label'].names
  except Exception:  # names are a nicety (and TFDS may be absent): fall back to indices
    names = None
  if not names or len(names) < count:
    names = [str(i) for i in range(count)]
  return list(names)[:count]


def of_dataset(dataset, config, input_shape, num_classes: int, fit: str = 'dataset') -> RunData:
  """The record of a run of `config` on `dataset` (a `sources.Dataset`; one with a
  `class_names()` of its own, like a converted run's photos, names its classes itself)."""
  mean, std = dataset.channel_stats()
  named = getattr(dataset, 'class_names', None)
  names = list(named())[:num_classes] if named else class_names(
      config.dataset, config.data_dir, num_classes)
  return RunData(config.dataset, tuple(int(n) for n in dataset.image_shape),
                 tuple(int(n) for n in input_shape), config.resize_mode, fit,
                 tuple(float(v) for v in np.ravel(mean)), tuple(float(v) for v in np.ravel(std)),
                 tuple(names))
