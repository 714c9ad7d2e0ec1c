"""The CIFAR augmentation is torchvision's: for the same crop offsets and flips, both input paths'
pad-crop-flip equals torchvision.transforms.functional's pad, crop and hflip on the same images
(what RandomCrop(32, padding=4) and RandomHorizontalFlip apply in the references' scripts).

Skipped without PyTorch and torchvision's Python code, except under CNN_ZOO_REQUIRE_TORCH (CI).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import torch_required

TF = torch_required.transforms_functional()
import torch  # noqa: E402

from cnn_zoo.data import device_pipeline  # noqa: E402

PADDING = 4


def _case(seed=0, n=16, size=32, channels=3):
  """uint8 images, and offsets and flips covering the corners, the centre and both flips."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
  offsets = rng.integers(0, 2 * PADDING + 1, (n, 2)).astype(np.int32)
  offsets[:4] = [[0, 0], [0, 2 * PADDING], [2 * PADDING, 0], [2 * PADDING, 2 * PADDING]]
  offsets[4] = [PADDING, PADDING]
  flips = rng.random(n) < 0.5
  flips[:2] = [True, False]
  return images, offsets, flips


def torchvision_augment(images, offsets, flips, augment='crop_flip'):
  """torchvision.transforms.functional on each uint8 (C, H, W) image: pad with zeros (black), crop
  at the offset (top, left), hflip where flipped."""
  out = []
  for image, (top, left), flip in zip(images, offsets, flips):
    x = torch.from_numpy(image).permute(2, 0, 1)
    h, w = x.shape[1:]
    if 'crop' in augment:
      x = TF.crop(TF.pad(x, [PADDING], fill=0), int(top), int(left), h, w)
    if 'flip' in augment and flip:
      x = TF.hflip(x)
    out.append(x.permute(1, 2, 0).numpy())
  return np.stack(out)


@pytest.mark.parametrize('augment', ['crop_flip', 'crop', 'flip'])
def test_the_device_path_is_torchvisions_pad_crop_flip(augment):
  images, offsets, flips = _case()
  ours = jax.jit(device_pipeline.augment_batch, static_argnums=(3, 4))(
      jnp.asarray(images), jnp.asarray(offsets), jnp.asarray(flips), augment, PADDING)
  np.testing.assert_array_equal(np.asarray(ours), torchvision_augment(images, offsets, flips,
                                                                      augment))


def test_the_device_batch_is_augmented_by_its_own_draws():
  """What train_batch hands the step is augment_batch of its examples under the step's draws."""
  images, _, _ = _case(n=16)
  split = device_pipeline.DeviceSplit(jnp.asarray(images), jnp.arange(16, dtype=jnp.int32))
  order = jnp.arange(16)
  for step in (0, 1, 7):
    batch = device_pipeline.ordered_batch(split, order, step, 3, batch_size=8, steps_per_epoch=2,
                                          mean=(0.0,) * 3, std=(1.0,) * 3, augment='crop_flip',
                                          crop_padding=PADDING)
    offsets, flips = device_pipeline.augmentation_draws(3, step, 8, PADDING)
    rows = np.asarray(batch['label'])
    expected = torchvision_augment(images[rows], np.asarray(offsets), np.asarray(flips))
    # Up to the last bit of the scaling to [0, 1] (XLA multiplies by 1/255).
    np.testing.assert_allclose(np.asarray(batch['image']), expected / np.float32(255), rtol=0,
                               atol=1e-7)
    assert len({tuple(o) for o in np.asarray(offsets)}) > 1 and 0 < np.asarray(flips).sum() < 8


@pytest.mark.parametrize('augment', ['crop_flip', 'crop', 'flip'])
def test_the_tfdata_path_is_torchvisions_pad_crop_flip(augment):
  tf = pytest.importorskip('tensorflow')
  from cnn_zoo.data import tfdata_pipeline, preprocess  # pylint: disable=g-import-not-at-top
  images, offsets, flips = _case(seed=1)
  prep = preprocess.Preprocess(image_shape=(32, 32, 3), mean=(0.0,) * 3, std=(1.0,) * 3,
                               augment=augment, crop_padding=PADDING)
  ours = tfdata_pipeline.preprocess_batch(tf.constant(images), prep,
                                   (tf.constant(offsets), tf.constant(flips)))
  expected = torchvision_augment(images, offsets, flips, augment) / np.float32(255)
  np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-7)
