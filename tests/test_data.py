"""Sources (TFDS under mock data, npz, image folders, digits) and the batch pipeline."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnn_zoo.data import tfdata_pipeline, sources


def _prep(shape, augment='none', mean=(0.5,), std=(0.25,)):
  return tfdata_pipeline.Preprocess(shape, mean, std, augment=augment)


@pytest.mark.parametrize('name,shape,classes', [('mnist', (28, 28, 1), 10),
                                                ('cifar10', (32, 32, 3), 10)])
def test_tfds_pipeline_under_mock_data(name, shape, classes, tmp_path):
  with tfds.testing.mock_data(num_examples=50, data_dir=str(tmp_path)):
    ds = sources.load(name, str(tmp_path))
  assert ds.image_shape == shape and ds.num_classes == classes
  assert len(ds.train) == 50 and len(ds.test) == 50
  model_shape = (32, 32, 1) if name == 'mnist' else (32, 32, 3)
  mean, std = ds.channel_stats()
  batches = list(tfdata_pipeline.train_batches(ds.train, _prep(model_shape, 'crop_flip', mean, std),
                                        global_batch=16, seed=0, start_step=0, num_steps=4))
  assert len(batches) == 4
  assert batches[0]['image'].shape == (16, *model_shape)
  assert batches[0]['image'].dtype == np.float32
  assert np.isfinite(batches[0]['image']).all()


def test_digits_is_a_fixed_real_dataset(digits_dir):
  ds = sources.load('digits', digits_dir)
  assert (len(ds.train), len(ds.test), ds.num_classes, ds.image_shape) == (1437, 360, 10, (8, 8, 1))
  assert sorted(set(ds.test.labels.tolist())) == list(range(10))
  again = sources.load('digits', digits_dir)
  np.testing.assert_array_equal(ds.train.images, again.train.images)


def _write_npz(path, n_train=40, n_test=13, shape=(28, 28, 1), **overrides):
  rng = np.random.default_rng(0)
  arrays = {'x_train': rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
            'y_train': rng.integers(0, 10, n_train).astype(np.uint8),
            'x_test': rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
            'y_test': rng.integers(0, 10, n_test).astype(np.uint8)}
  arrays.update(overrides)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  np.savez(path, **arrays)
  return arrays


def test_npz_source(tmp_path):
  arrays = _write_npz(tmp_path / 'd.npz')
  ds = sources.load(f'npz:{tmp_path / "d.npz"}')
  np.testing.assert_array_equal(ds.test.images, arrays['x_test'])
  assert ds.test.labels.dtype == np.int32 and len(ds.train) == 40


@pytest.mark.parametrize('overrides,message', [
    ({'y_test': None}, 'missing array(s) y_test'),
    ({'x_train': np.zeros((40, 28, 28, 1), np.float32)}, 'must be uint8'),
    ({'y_train': np.zeros(39, np.uint8)}, 'one integer label per image'),
])
def test_npz_errors_are_named(tmp_path, overrides, message):
  _write_npz(tmp_path / 'bad.npz', **overrides)
  with pytest.raises(sources.DataError, match=message.replace('(', r'\(').replace(')', r'\)')):
    sources.load(f'npz:{tmp_path / "bad.npz"}')


def test_missing_and_corrupt_files_are_named(tmp_path):
  with pytest.raises(sources.DataError, match='not found'):
    sources.load(f'npz:{tmp_path / "nope.npz"}')
  (tmp_path / 'corrupt.npz').write_bytes(b'PK\x03\x04 not really a zip')
  with pytest.raises(sources.DataError, match='cannot read it as an npz'):
    sources.load(f'npz:{tmp_path / "corrupt.npz"}')
  with pytest.raises(sources.DataError, match='unknown dataset'):
    sources.load('imagenet_please')


def test_folder_source(tmp_path):
  import tensorflow as tf
  rng = np.random.default_rng(0)
  for split, n in (('train', 3), ('test', 2)):
    for label in ('cat', 'dog'):
      os.makedirs(tmp_path / split / label)
      for i in range(n):
        png = tf.io.encode_png(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
        (tmp_path / split / label / f'{i}.png').write_bytes(png.numpy())
  ds = sources.load(f'folder:{tmp_path}', image_size=12)
  assert (len(ds.train), len(ds.test), ds.num_classes, ds.image_shape) == (6, 4, 2, (12, 12, 3))
  assert sorted(ds.train.labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_empty_folder_is_refused(tmp_path):
  with pytest.raises(sources.DataError, match='train/<class>'):
    sources.load(f'folder:{tmp_path}')


def _split(n=50, shape=(28, 28, 1)):
  rng = np.random.default_rng(1)
  return sources.Split(rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                       np.arange(n, dtype=np.int32) % 10)


def test_train_batches_are_a_function_of_seed_and_step():
  split, prep = _split(), _prep((32, 32, 1), 'crop_flip')
  run = lambda start, **kw: list(tfdata_pipeline.train_batches(split, prep, global_batch=10, seed=3,
                                                        start_step=start, num_steps=12, **kw))
  full, resumed = run(0), run(7)
  for a, b in zip(full[7:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
  # Each epoch (5 steps of 10) is a permutation of the 50 examples, different per epoch.
  epoch0 = np.concatenate([b['label'] for b in full[:5]])
  epoch1 = np.concatenate([b['label'] for b in full[5:10]])
  assert sorted(epoch0.tolist()) == sorted(split.labels.tolist())
  assert not np.array_equal(epoch0, epoch1)
  # Two processes each take their half of the same global batch.
  halves = [run(0, process_index=p, process_count=2)[3] for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([h['image'] for h in halves]), full[3]['image'])


def test_eval_batches_cover_every_example_once():
  split, prep = _split(23), _prep((32, 32, 1))
  batches = list(tfdata_pipeline.eval_batches(split, prep, global_batch=10))
  assert len(batches) == 3
  masks = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert masks.sum() == 23 and masks[23:].sum() == 0
  np.testing.assert_array_equal(labels[:23], split.labels)


def test_preprocessing_pads_digits_converts_channels_and_normalises():
  images = np.full((2, 28, 28, 1), 255, np.uint8)
  x = tfdata_pipeline.preprocess_batch(images, _prep((32, 32, 3), mean=(0.5,), std=(0.5,))).numpy()
  assert x.shape == (2, 32, 32, 3)
  assert np.allclose(x[:, 2:30, 2:30], 1.0) and np.allclose(x[:, :2], -1.0)  # black padding
  small = np.zeros((1, 8, 8, 1), np.uint8)
  assert tfdata_pipeline.preprocess_batch(small, _prep((32, 32, 1))).shape == (1, 32, 32, 1)


def test_digits_read_directly_and_through_tfds_hold_the_same_examples(digits_dir):
  direct, via_tfds = sources.load('digits'), sources.load('tfds:digits', digits_dir)
  for a, b in ((direct.train, via_tfds.train), (direct.test, via_tfds.test)):
    key = lambda split: sorted(zip(split.labels.tolist(), (i.tobytes() for i in split.images)))
    assert key(a) == key(b)
