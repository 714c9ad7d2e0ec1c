"""Where images come from: TFDS by name, `npz:PATH` arrays and `folder:PATH` image folders.

Every source is read once into host memory as uint8 NHWC arrays. The datasets cnn_zoo is built for
(digits, MNIST, Fashion-MNIST, CIFAR, Imagenette) fit easily, and in-memory arrays make the batch at
step s a pure function of (seed, s): resumable at any step and identical on any number of hosts.
`digits`, `npz:` and `folder:` are read with numpy and Pillow alone; TensorFlow and TFDS are
imported for TFDS datasets only.
"""

import dataclasses
import os

import numpy as np

from cnn_zoo.data import digits
from cnn_zoo.errors import DataError  # noqa: F401  (also sources.DataError)

# TFDS datasets cnn_zoo is tested with; any other is reachable as `tfds:NAME`.
TFDS_DATASETS = ('digits', 'mnist', 'fashion_mnist', 'cifar10', 'cifar100', 'imagenette')
PREFIXES = ('npz:', 'folder:', 'tfds:')
# More classes than any classification dataset has: a larger label is a stray value, and a
# classifier that wide would take minutes and gigabytes to create before anything failed.
MAX_CLASSES = 100_000
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # uint8, (N, H, W, C)
  labels: np.ndarray  # int32, (N,)

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train: Split
  test: Split
  num_classes: int

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train.images.shape[1:])

  def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the train images, on the 0..1 scale."""
    x = self.train.images.reshape(-1, self.train.images.shape[-1])
    # Accumulate in float64 over chunks: exact enough, and no float copy of the whole split.
    total, total_sq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for start in range(0, len(x), 1 << 22):
      chunk = x[start:start + (1 << 22)].astype(np.float64) / 255.0
      total += chunk.sum(0)
      total_sq += (chunk ** 2).sum(0)
    mean = total / len(x)
    std = np.sqrt(np.maximum(total_sq / len(x) - mean ** 2, 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)


def valid_names() -> str:
  return ', '.join(TFDS_DATASETS) + ', npz:PATH, folder:PATH, tfds:NAME'


def short_name(name: str) -> str:
  """How tables show a dataset: `npz:../shared/data/cifar10.npz` -> `npz:cifar10.npz`; TFDS names
  unchanged."""
  if name.startswith(PREFIXES):
    prefix, path = name.split(':', 1)
    return f'{prefix}:{os.path.basename(path.rstrip("/"))}'
  return name


def check_name(name: str) -> None:
  if name not in TFDS_DATASETS and not name.startswith(PREFIXES):
    raise DataError(f'unknown dataset {name!r}; valid choices: {valid_names()}')


def load(name: str, data_dir: str | None = None, image_size: int | None = None,
         num_classes: int | None = None) -> Dataset:
  """Loads dataset `name`; `image_size` resizes sources whose images vary in size.

  `num_classes` (when given) bounds the labels of local sources; without it their labels must
  cover 0..max with no gap, so a stray label is an error rather than extra classes.
  """
  check_name(name)
  if name.startswith('npz:'):
    return _load_npz(name[len('npz:'):], num_classes)
  if name.startswith('folder:'):
    return _load_folder(name[len('folder:'):], image_size, num_classes)
  if name == 'digits':  # embedded: read directly, no TFDS preparation needed
    train, test = digits.arrays()
    return Dataset('digits', Split(*train), Split(*test), 10)
  return _load_tfds(name.removeprefix('tfds:'), data_dir or None, image_size)


def _check_arrays(where: str, images, labels, split: str) -> None:
  for name, array in ((f'x_{split}', images), (f'y_{split}', labels)):
    if not isinstance(array, np.ndarray) or array.dtype.kind not in 'biuf':
      raise DataError(f'{where}: {name} must be a numeric array, got '
                      f'{getattr(array, "dtype", type(array).__name__)}')
  if images.dtype != np.uint8 or images.ndim != 4:
    raise DataError(f'{where}: x_{split} must be uint8 images of shape (N, H, W, C), got '
                    f'{images.dtype} {images.shape}')
  if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f'{where}: y_{split} must hold one integer label per image, got '
                    f'{labels.dtype} {labels.shape} for {len(images)} images')
  if len(labels) == 0:
    raise DataError(f'{where}: the {split} split is empty')
  if labels.min() < 0:
    raise DataError(f'{where}: y_{split} has a negative label {labels.min()}')
  if min(images.shape[1:]) < 1:
    raise DataError(f'{where}: x_{split} has shape {images.shape}: an image dimension is 0')
  if labels.max() >= MAX_CLASSES:
    raise DataError(f'{where}: y_{split} has label {labels.max()}, beyond any dataset\'s classes '
                    f'(at most {MAX_CLASSES:,})')


def _check_labels(where: str, labels: dict, num_classes: int | None) -> int:
  """The number of classes: `num_classes` if given (every label below it), else max + 1 with
  every class in 0..max present, so a stray label cannot add classes silently."""
  if num_classes:
    for split, y in labels.items():
      if y.max() >= num_classes:
        raise DataError(f'{where}: y_{split}: label {y.max()} is out of range for '
                        f'num_classes={num_classes}')
    return num_classes
  top = max(int(y.max()) for y in labels.values())
  present = np.unique(np.concatenate(list(labels.values())))
  if len(present) < top + 1:
    missing = np.setdiff1d(np.arange(top + 1), present)
    shown = ', '.join(map(str, missing[:5])) + (', ...' if len(missing) > 5 else '')
    raise DataError(f'{where}: labels run up to {top} but {len(missing)} of those classes have no '
                    f'example (label {shown}): a stray label? fix it, or give config.num_classes')
  return top + 1


def _load_npz(path: str, num_classes: int | None = None) -> Dataset:
  if not os.path.isfile(path):
    raise DataError(f'npz dataset file not found: {path}')
  try:
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in ('x_train', 'y_train', 'x_test', 'y_test') if k not in f.files]
      if missing:
        raise DataError(f'{path}: missing array(s) {", ".join(missing)}; an npz dataset holds '
                        f'x_train, y_train, x_test, y_test (found: {", ".join(f.files)})')
      arrays = {k: f[k] for k in ('x_train', 'y_train', 'x_test', 'y_test')}
  except DataError:
    raise
  except Exception as e:  # a truncated or corrupt zip, or not an npz at all
    raise DataError(f'{path}: cannot read it as an npz file ({type(e).__name__}: {e})') from None
  for split in ('train', 'test'):
    _check_arrays(path, arrays[f'x_{split}'], arrays[f'y_{split}'], split)
  if arrays['x_train'].shape[1:] != arrays['x_test'].shape[1:]:
    raise DataError(f'{path}: train images {arrays["x_train"].shape[1:]} and test images '
                    f'{arrays["x_test"].shape[1:]} differ in shape')
  num_classes = _check_labels(path, {'train': arrays['y_train'], 'test': arrays['y_test']},
                              num_classes)
  return Dataset(f'npz:{path}', Split(arrays['x_train'], arrays['y_train'].astype(np.int32)),
                 Split(arrays['x_test'], arrays['y_test'].astype(np.int32)), num_classes)


def _to_arrays(ds, image_size: int | None, where: str) -> Split:
  """Reads a tf.data split of {'image', 'label'} into memory, resizing if sizes vary."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if image_size:
    def resize(example):
      image = tf.image.resize(example['image'], (image_size, image_size), antialias=True)
      return {'image': tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8),
              'label': example['label']}
    ds = ds.map(resize, num_parallel_calls=tf.data.AUTOTUNE)
  images, labels = [], []
  try:
    for batch in tfds.as_numpy(ds.batch(1024)):
      images.append(batch['image'])
      labels.append(batch['label'])
  except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataError(f'{where}: unreadable or differently sized images ({first_line}); '
                    f'give image_size to resize them') from None
  if not images:
    raise DataError(f'{where}: no images')
  return Split(np.concatenate(images), np.concatenate(labels).astype(np.int32))


def _prepare_once(builder) -> None:
  """download_and_prepare under a file lock: parallel sweep workers prepare a dataset once."""
  import fcntl  # pylint: disable=g-import-not-at-top
  os.makedirs(builder.data_dir_root, exist_ok=True)
  with open(os.path.join(builder.data_dir_root, f'.{builder.name}.lock'), 'a') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not builder.is_prepared():
        builder.download_and_prepare()
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _load_tfds(name: str, data_dir: str | None, image_size: int | None) -> Dataset:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise DataError(f'dataset {name!r} is read through TFDS, which needs TensorFlow and '
                    f'tensorflow-datasets, not installed here; pass local arrays as '
                    f'--config.dataset=npz:PATH (experiments.pack carries them)') from None
  digits.register()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:
    raise DataError(f'unknown TFDS dataset {name!r} ({type(e).__name__}); valid choices: '
                    f'{valid_names()}') from None
  if not builder.is_prepared():
    try:
      _prepare_once(builder)
    except Exception as e:
      where = data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
      raise DataError(
          f'dataset {name!r} is not prepared in {where} and could not be downloaded '
          f'({type(e).__name__}); prepare it on a machine with network access '
          f'(`tfds build {name} --data_dir=DIR`) and pass --config.data_dir=DIR, '
          f'or train from local arrays with --config.dataset=npz:PATH') from None
  # Split metadata may be absent (tfds.testing.mock_data without metadata files): assume 'test'.
  splits = list(builder.info.splits) or ['train', 'test']
  test_split = next((s for s in ('test', 'validation') if s in splits), None)
  if 'train' not in splits or test_split is None:
    raise DataError(f'TFDS dataset {name!r} needs a train split and a test or validation split; '
                    f'it has {", ".join(splits)}')
  info = builder.info
  if 'image' not in info.features or 'label' not in info.features:
    raise DataError(f'TFDS dataset {name!r} has no image and label features')
  varying = None in info.features['image'].shape[:2]
  size = image_size if varying else None
  read = lambda split: _to_arrays(
      builder.as_dataset(split=split, shuffle_files=False,
                         decoders=None).map(lambda e: {'image': e['image'], 'label': e['label']}),
      size, f'{name}[{split}]')
  return Dataset(name, read('train'), read(test_split), info.features['label'].num_classes)


def _check_class_folders(path: str, test_split: str, num_classes: int | None) -> None:
  """Refuses class folders that would silently add classes: empty ones and test-only ones."""
  classes = {}
  for split in ('train', test_split):
    root = os.path.join(path, split)
    classes[split] = sorted(c for c in os.listdir(root) if os.path.isdir(os.path.join(root, c)))
    for name in classes[split]:
      folder = os.path.join(root, name)
      if not any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(folder)):
        raise DataError(f'{folder}: an empty class folder (no .jpg, .jpeg or .png) would add a '
                        f'class with no images; remove it or add its images')
  stray = sorted(set(classes[test_split]) - set(classes['train']))
  if stray:
    raise DataError(f'{os.path.join(path, test_split, stray[0])}: class folder(s) '
                    f'{", ".join(stray)} have no train/ counterpart; remove or rename them')
  if num_classes and len(classes['train']) > num_classes:
    raise DataError(f'{path}/train holds {len(classes["train"])} class folders, more than '
                    f'num_classes={num_classes}')


def _load_folder(path: str, image_size: int | None, num_classes: int | None = None) -> Dataset:
  if not os.path.isdir(path):
    raise DataError(f'image folder not found: {path}')
  splits = {s for s in os.listdir(path) if os.path.isdir(os.path.join(path, s))}
  test_split = next((s for s in ('test', 'validation', 'val') if s in splits), None)
  if 'train' not in splits or test_split is None:
    raise DataError(f'{path}: an image folder holds train/<class>/* and test/<class>/* '
                    f'(or validation/, val/); found sub-folders: {", ".join(sorted(splits)) or "none"}')
  _check_class_folders(path, test_split, num_classes)
  classes = sorted(c for c in os.listdir(os.path.join(path, 'train'))
                   if os.path.isdir(os.path.join(path, 'train', c)))
  train, test = (_read_folder_split(path, split, classes, image_size)
                 for split in ('train', test_split))
  if train.images.shape[-1] != test.images.shape[-1]:  # one split grey, the other RGB
    from cnn_zoo.data import images  # pylint: disable=g-import-not-at-top
    train, test = (Split(images.to_channels(s.images, 3), s.labels) for s in (train, test))
  return Dataset(f'folder:{path}', train, test, len(classes))


def _read_folder_split(path: str, split: str, classes: list[str], image_size: int | None) -> Split:
  """The images of PATH/split/<class>/ (sorted by class, then file name), decoded one at a time by
  `images.decode` (PNG and JPEG only; resized to image_size as it is decoded, if given): grey when
  every image is grey, RGB otherwise (`images.to_channels`; the dataset is RGB when either split
  is)."""
  from cnn_zoo.data import images  # pylint: disable=g-import-not-at-top  (Pillow: folders only)
  files, labels = [], []
  for label, name in enumerate(classes):
    folder = os.path.join(path, split, name)
    if os.path.isdir(folder):
      for f in sorted(os.listdir(folder)):
        if f.lower().endswith(IMAGE_EXTENSIONS):
          files.append(os.path.join(folder, f))
          labels.append(label)
  if not files:
    raise DataError(f'{path}/{split}: no images (.jpg, .jpeg or .png in one folder per class)')
  size = (image_size, image_size) if image_size else None
  decoded = [images.decode(f, f, images.DATASET_FORMATS, size=size) for f in files]
  sizes = sorted({x.shape[:2] for x in decoded})
  if len(sizes) > 1:
    (h0, w0), (h1, w1) = sizes[0], sizes[-1]
    raise DataError(f'{path}/{split}: images of different sizes (({w0}, {h0}) and ({w1}, {h1})); '
                    f'give image_size to resize them')
  channels = 3 if any(x.shape[-1] == 3 for x in decoded) else 1
  arrays = np.stack([images.to_channels(x, channels) for x in decoded])
  return Split(arrays, np.asarray(labels, np.int32))
