"""The on-device input path: batches as a pure function of (seed, step), computed by JAX alone."""

import functools
import hashlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_zoo import parallel
from cnn_zoo.data import device_pipeline as dp
from cnn_zoo.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _split(n=50, shape=(8, 8, 3), seed=0):
  """Labels are the example indices, so a batch tells which examples it took."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
  sharding = parallel.replicated(parallel.mesh())
  return images, dp.put(images, np.arange(n), shape, 'auto', sharding)


def _batch_fn(split, batch_size, augment='none', padding=2):
  fn = jax.jit(functools.partial(dp.train_batch, batch_size=batch_size,
                                 steps_per_epoch=len(split) // batch_size, mean=(0.0,) * 3,
                                 std=(1.0,) * 3, augment=augment, crop_padding=padding))
  return lambda seed, step: fn(split, step, seed)


def test_each_epoch_is_a_permutation_and_drops_the_partial_batch():
  _, split = _split(50)
  batch = _batch_fn(split, 16)
  epochs = []
  for epoch in range(3):
    taken = np.concatenate([np.asarray(batch(0, 3 * epoch + i)['label']) for i in range(3)])
    assert len(set(taken.tolist())) == 48  # 3 full batches of 16; 2 examples wait for next epoch
    epochs.append(taken)
  assert not np.array_equal(epochs[0], epochs[1])  # each epoch its own order


def test_batch_is_a_pure_function_of_seed_and_step():
  images, split = _split(50)
  batch = _batch_fn(split, 16, augment='crop_flip')
  a, again, other_seed = batch(0, 5), batch(0, 5), batch(1, 5)
  # A resumed process: the split put on the device anew, a new compilation.
  _, split_again = _split(50)
  resumed = _batch_fn(split_again, 16, augment='crop_flip')(0, 5)
  for b in (again, resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  assert not np.array_equal(a['label'], other_seed['label'])
  # Without augmentation, the batch is the chosen examples scaled to [0, 1].
  plain = _batch_fn(split, 16)(0, 5)
  np.testing.assert_allclose(plain['image'], images[np.asarray(plain['label'])] / 255.0, rtol=1e-6)


def test_crop_and_flip_draws():
  """Pixels encode their column, so each cropped and flipped row tells its offset and flip."""
  n, size, padding = 512, 8, 2
  columns = np.broadcast_to((np.arange(size, dtype=np.uint8) + 1)[None, None, :, None],
                            (n, size, size, 3)).copy()
  split = dp.put(columns, np.arange(n), (size, size, 3), 'auto',
                 parallel.replicated(parallel.mesh()))
  batch = _batch_fn(split, n, augment='crop_flip', padding=padding)(0, 0)
  rows = np.rint(np.asarray(batch['image'])[:, size // 2, :, 0] * 255).astype(int)
  offsets, flips = [], []
  for row in rows:
    inside = row[row > 0]
    flipped = len(inside) > 1 and inside[0] > inside[-1]
    start = (row[::-1] if flipped else row)
    first = int(np.argmax(start > 0))
    value = start[first]
    offsets.append(value - 1 - first + padding)  # 0 .. 2 * padding
    flips.append(flipped)
    # What is left of the image is consecutive columns; the rest is zero padding.
    assert np.all(np.diff(inside) == (-1 if flipped else 1)) or len(inside) == 1
  assert set(offsets) == set(range(2 * padding + 1))
  counts = np.bincount(offsets) / n
  assert np.all(np.abs(counts - 1 / (2 * padding + 1)) < 0.06), counts
  assert abs(np.mean(flips) - 0.5) < 0.07


def test_eval_batches_count_every_example_once():
  _, split = _split(50)
  eval_fn = jax.jit(functools.partial(dp.eval_batch, split, batch_size=16, mean=(0.0,) * 3,
                                      std=(1.0,) * 3))
  batches = [eval_fn(i) for i in range(4)]  # 16 + 16 + 16 + 2 (padded to 16)
  masks = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert masks.sum() == 50 and np.array_equal(labels[masks == 1], np.arange(50))


def test_fitting_pads_tiles_and_resizes():
  grey = np.full((2, 28, 28, 1), 200, np.uint8)
  padded = dp.fit(grey, (32, 32, 3))
  assert padded.dtype == np.uint8 and padded.shape == (2, 32, 32, 3)
  assert padded[0, 2, 2, 0] == 200 and padded[0, 1, 1, 0] == 0
  resized = dp.fit(np.full((2, 8, 8, 1), 255, np.uint8), (32, 32, 1))
  assert resized.dtype == np.float32 and np.allclose(resized, 1.0, atol=1e-5)
  assert dp.nbytes(grey, (32, 32, 3)) == padded.nbytes
  assert dp.nbytes(np.zeros((2, 8, 8, 1), np.uint8), (32, 32, 1)) == resized.nbytes
  rgb = np.zeros((1, 4, 4, 3), np.uint8)
  rgb[..., 1] = 255
  np.testing.assert_allclose(dp.fit(rgb, (4, 4, 1)), 0.587, atol=1e-6)


_ON_DEVICES = '''
import functools, hashlib, json, sys
import jax, numpy as np
from cnn_zoo import parallel
from cnn_zoo.data import device_pipeline as dp
from cnn_zoo.errors import DataError
mesh = parallel.mesh()
rng = np.random.default_rng(0)
split = dp.put(rng.integers(0, 256, (100, 8, 8, 3), dtype=np.uint8), np.arange(100), (8, 8, 3),
               'auto', parallel.replicated(mesh))
fn = jax.jit(functools.partial(dp.train_batch, batch_size=32, steps_per_epoch=3,
                               mean=(0.5,) * 3, std=(0.25,) * 3, augment='crop_flip'),
             out_shardings=parallel.batch_sharded(mesh))
out = {}
for step in (0, 4, 7):
  b = fn(split, step, 0)
  assert len(b['image'].sharding.device_set) == jax.device_count()
  out[step] = hashlib.sha256(np.asarray(b['image']).tobytes() + np.asarray(b['label']).tobytes()
                             ).hexdigest()
print(json.dumps([jax.device_count(), out]))
'''


def test_batches_are_identical_on_one_and_on_eight_devices():
  results = []
  for devices in (1, 8):
    env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
           'JAX_PLATFORMS': 'cpu'}
    proc = subprocess.run([sys.executable, '-c', _ON_DEVICES], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results.append(proc.stdout.strip().splitlines()[-1])
  import json
  (n1, one), (n8, eight) = (json.loads(r) for r in results)
  assert (n1, n8) == (1, 8) and one == eight


def test_a_batch_from_its_epochs_order_is_the_batch_itself():
  _, split = _split(50)
  kwargs = dict(batch_size=16, steps_per_epoch=3, mean=(0.0,) * 3, std=(1.0,) * 3,
                augment='crop_flip', crop_padding=2)
  for step in (0, 4, 8):
    order = dp.epoch_order(len(split), 7, step // 3)
    a = dp.train_batch(split, step, 7, **kwargs)
    b = dp.ordered_batch(split, order, step, 7, **kwargs)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


MEAN, STD = (0.25, 0.5, 0.75), (0.5, 0.25, 2.0)


def test_train_and_eval_batches_are_normalised_with_the_datasets_mean_and_std():
  images, split = _split(50)
  # Resized data is held as float32 in [0, 1]: it must not be scaled again.
  resized = dp.put(images, np.arange(50), (12, 12, 3), 'resize',
                   parallel.replicated(parallel.mesh()))
  for held, raw in ((split, images / 255.0), (resized, np.asarray(resized.images))):
    train = jax.jit(functools.partial(dp.train_batch, batch_size=16, steps_per_epoch=3, mean=MEAN,
                                      std=STD))(held, 4, 0)
    test = jax.jit(functools.partial(dp.eval_batch, held, batch_size=16, mean=MEAN, std=STD))(3)
    for batch in (train, test):
      np.testing.assert_allclose(batch['image'], (raw[np.asarray(batch['label'])] - MEAN) / STD,
                                 rtol=1e-5, atol=1e-6)
    assert train['image'].dtype == test['image'].dtype == test['mask'].dtype == jnp.float32


def test_crops_and_flips_are_drawn_from_their_own_stream_of_seed_and_step():
  """The module's documented keys: split(fold_in(fold_in(key(seed), 2**30), step)) for the
  crop offsets (rows, columns) and the flips, apart from the epochs' fold_in(key(seed), epoch)."""
  images, split = _split(64, (6, 5, 3))
  padding, seed, step = 2, 3, 5
  batch = _batch_fn(split, 16, augment='crop_flip', padding=padding)(seed, step)
  crop_key, flip_key = jax.random.split(
      jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 2 ** 30), step))
  offsets = np.asarray(jax.random.randint(crop_key, (16, 2), 0, 2 * padding + 1))
  flips = np.asarray(jax.random.bernoulli(flip_key, 0.5, (16,)))
  assert len(set(offsets[:, 0])) > 1 and len(set(offsets[:, 1])) > 1 and 0 < flips.sum() < 16
  padded = np.pad(images / 255.0, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  for row, (label, (top, left), flip) in enumerate(zip(np.asarray(batch['label']), offsets, flips)):
    expected = padded[label, top:top + 6, left:left + 5]
    np.testing.assert_allclose(batch['image'][row], expected[:, ::-1] if flip else expected,
                               rtol=1e-6, err_msg=f'row {row}')


def test_the_defaults_are_no_augmentation_and_a_crop_padding_of_4():
  _, split = _split(50)
  common = dict(batch_size=16, steps_per_epoch=3, mean=MEAN, std=STD)
  order = dp.epoch_order(len(split), 0, 1)
  for fn, args in ((dp.train_batch, (split, 4, 0)), (dp.ordered_batch, (split, order, 4, 0))):
    pairs = ((fn(*args, **common), fn(*args, augment='none', **common)),
             (fn(*args, augment='crop', **common),
              fn(*args, augment='crop', crop_padding=4, **common)))
    for a, b in pairs:
      np.testing.assert_array_equal(a['image'], b['image'])


def test_the_epoch_of_a_step_is_exact_at_any_step_count():
  """step // steps_per_epoch in integers: a float quotient rounds up to the next epoch here."""
  _, split = _split(50)
  step = 3 * 2 ** 24 - 1  # the last step of epoch 2**24 - 1
  batch = jax.jit(functools.partial(dp.train_batch, batch_size=16, steps_per_epoch=3,
                                    mean=MEAN, std=STD))(split, jnp.int32(step), 0)
  order = dp.epoch_order(len(split), 0, 2 ** 24 - 1)
  np.testing.assert_array_equal(batch['label'], np.asarray(order)[32:48])


def test_fitting_pads_within_8_pixels_else_resizes_and_nbytes_says_what_it_takes():
  cases = [  # (h, w, c) -> model's (H, W, C), mode: how it is fitted
      ((24, 24, 3), (32, 32, 3), 'auto', 'pad'), ((24, 23, 3), (32, 32, 3), 'auto', 'resize'),
      ((23, 24, 3), (32, 32, 3), 'auto', 'resize'), ((23, 32, 3), (32, 32, 3), 'auto', 'resize'),
      ((32, 30, 1), (32, 32, 3), 'auto', 'pad'), ((30, 32, 1), (32, 32, 3), 'auto', 'pad'),
      ((33, 32, 3), (32, 32, 3), 'auto', 'resize'), ((24, 24, 3), (32, 32, 3), 'resize', 'resize'),
      ((24, 24, 3), (32, 32, 3), 'pad', 'pad'), ((32, 32, 3), (32, 32, 1), 'auto', 'grey'),
      ((32, 32, 1), (32, 32, 3), 'resize', 'exact')]
  for (h, w, c), (height, width, channels), mode, how in cases:
    images = np.full((2, h, w, c), 200, np.uint8)
    fitted = dp.fit(images, (height, width, channels), mode)
    case = ((h, w, c), mode)
    assert fitted.shape == (2, height, width, channels), case
    assert fitted.dtype == (np.uint8 if how in ('pad', 'exact') else np.float32), case
    assert dp.nbytes(images, (height, width, channels), mode) == fitted.nbytes, case
    if how == 'pad':  # centred: (H - h) // 2 rows above, (W - w) // 2 columns left
      top, left = (height - h) // 2, (width - w) // 2
      inside = np.zeros(fitted.shape, bool)
      inside[:, top:top + h, left:left + w] = True
      assert np.all(fitted[inside] == 200) and np.all(fitted[~inside] == 0), case
    elif how == 'resize':
      np.testing.assert_allclose(fitted, 200 / 255.0, rtol=1e-5, err_msg=str(case))
  for size in ((33, 30), (30, 33)):
    with pytest.raises(DataError, match=rf'cannot pad {size[0]}x{size[1]} images to 32x32; use '
                       'resize_mode=resize'):
      dp.fit(np.zeros((1, *size, 3), np.uint8), (32, 32, 3), 'pad')


def test_channels_that_cannot_be_converted_are_named():
  for c, channels in ((3, 4), (2, 1), (4, 3)):
    with pytest.raises(DataError) as e:
      dp.fit(np.zeros((1, 4, 5, c), np.uint8), (4, 5, channels))
    assert str(e.value) == f'cannot convert {c}-channel images to {channels} channels'


def test_grey_conversion_is_float32_and_scaled_once_before_a_resize():
  rgb = np.zeros((1, 4, 4, 3), np.uint8)
  rgb[..., 1] = 255
  grey = dp.fit(rgb, (4, 4, 1))
  assert grey.dtype == np.float32
  np.testing.assert_allclose(dp.fit(rgb, (16, 16, 1)), 0.587, atol=1e-5)


def test_downsizing_is_antialiased_so_a_lone_pixel_is_not_lost():
  """Plain bilinear sampling of a 4x reduction reads pixels 1 and 2 of every 4 and misses pixel 0."""
  images = np.zeros((1, 32, 32, 1), np.uint8)
  images[0, 0, 0] = 255
  assert dp.fit(images, (8, 8, 1))[0, 0, 0, 0] > 0.01


def test_put_keeps_the_resize_mode_and_holds_int32_labels():
  sharding = parallel.replicated(parallel.mesh())
  images = np.full((2, 28, 28, 1), 200, np.uint8)
  labels = np.array([3, 250], np.uint8)
  padded = dp.put(images, labels, (32, 32, 1), 'pad', sharding)
  resized = dp.put(images, labels, (32, 32, 1), 'resize', sharding)
  assert padded.images.dtype == jnp.uint8 and resized.images.dtype == jnp.float32
  for split in (padded, resized):
    assert split.labels.dtype == jnp.int32 and split.images.shape == (2, 32, 32, 1)
    np.testing.assert_array_equal(split.labels, [3, 250])
    assert split.images.sharding == sharding and len(split) == 2


def test_a_split_resized_in_chunks_keeps_every_example_once_and_in_order():
  """Resizing goes 1024 examples at a time (memory): more than one chunk must come back whole."""
  n = 1100
  images = (np.arange(n) % 251).astype(np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)
  fitted = dp.fit(images, (12, 12, 1), 'resize')
  assert fitted.shape == (n, 12, 12, 1)
  np.testing.assert_allclose(fitted[:, 5, 5, 0], (np.arange(n) % 251) / 255.0, atol=1e-5)
