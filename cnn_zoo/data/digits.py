"""`digits`: scikit-learn's bundled 8x8 handwritten digits (no network needed).

1,797 real images (Alpaydin & Kaynak, UCI), grey levels 0..16 rescaled to uint8 0..255. The split is
fixed: a permutation with seed 0, the first 1,437 images for train and the last 360 for test.
`arrays()` reads them with numpy alone (what training uses); `register()` also offers them as a TFDS
dataset for TFDS tools.
"""

import functools

import numpy as np

NUM_TRAIN = 1437


def _images_and_labels():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  order = np.random.RandomState(0).permutation(len(images))
  return images, digits.target.astype(np.int32), order


def arrays():
  """((train images, labels), (test images, labels)) in the fixed split's order."""
  images, labels, order = _images_and_labels()
  train, test = order[:NUM_TRAIN], order[NUM_TRAIN:]
  return (images[train], labels[train]), (images[test], labels[test])


@functools.cache
def register():
  """Defines (once) and returns the `digits` TFDS builder, so `tfds:digits` reads the same
  examples through TFDS (in TFDS's own order). Imports TFDS."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's handwritten digits, 8x8x1."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'Fixed 1,437 / 360 split of the 1,797 images.'}

    def _info(self) -> tfds.core.DatasetInfo:
      return self.dataset_info_from_configs(
          features=tfds.features.FeaturesDict({
              'image': tfds.features.Image(shape=(8, 8, 1)),
              'label': tfds.features.ClassLabel(num_classes=10),
          }),
          supervised_keys=('image', 'label'),
          homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html',
      )

    def _split_generators(self, dl_manager):
      del dl_manager  # the data ships with scikit-learn
      return {'train': self._generate_examples('train'), 'test': self._generate_examples('test')}

    def _generate_examples(self, split):
      images, labels, order = _images_and_labels()
      order = order[:NUM_TRAIN] if split == 'train' else order[NUM_TRAIN:]
      for i in order:
        yield int(i), {'image': images[i], 'label': int(labels[i])}

  return Digits
