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
