"""One decoder and one preprocessing for every path: the device path, the tf.data path and
prediction compute `preprocess`'s recipe to the same numbers, and a file predicted is the array its
folder dataset holds."""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cnn_zoo import parallel, predict
from cnn_zoo.data import device_pipeline as dp
from cnn_zoo.data import images, inputs, preprocess, run_data, sources
from cnn_zoo.train import build as build_lib
from cnn_zoo.train import trained_run
from configs import default

# Normalised values reach about 5 (0..1 less 0.3, over 0.2); the paths differ in the last bits, a few
# float32 steps of 5 at most (XLA scales by 1/255 as a product; TensorFlow and JAX sum a resize in
# other orders).
ATOL = 4e-6

TWIN_CASES = [  # (source (h, w, c), model (H, W, C), resize_mode, augment, crop_padding)
    ((28, 28, 1), (32, 32, 1), 'auto', 'crop_flip', 4),  # padded, as MNIST for LeNet-5
    ((29, 26, 1), (32, 32, 3), 'pad', 'crop', 3),  # tiled, padded unevenly
    ((8, 8, 3), (32, 32, 3), 'auto', 'flip', 4),  # resized up
    ((40, 36, 3), (32, 32, 3), 'resize', 'crop_flip', 2),  # resized down, antialiased
    ((32, 32, 3), (32, 32, 1), 'auto', 'crop_flip', 4),  # made grey
    ((20, 20, 3), (32, 32, 1), 'auto', 'none', 4),  # made grey, then resized
]


def _images(shape, n=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _stats(channels):
  return (0.3, 0.4, 0.5)[:channels], (0.2, 0.25, 0.3)[:channels]


@pytest.mark.parametrize('source,model,mode,augment,padding', TWIN_CASES)
def test_the_tfdata_and_device_paths_compute_one_recipe(source, model, mode, augment, padding):
  """The same pixels, the same crop offsets and flips (the device batch's own draws): the device
  batch, the recipe on the host and the tf.data pipeline's TensorFlow twin agree."""
  tf = pytest.importorskip('tensorflow')
  from cnn_zoo.data import tfdata_pipeline  # pylint: disable=g-import-not-at-top
  raw = _images(source)
  prep = preprocess.Preprocess(model, *_stats(source[-1]), mode, augment, padding)
  mean, std = preprocess.model_stats(prep, source[-1])
  split = dp.put(raw, np.arange(len(raw)), model, mode, parallel.replicated(parallel.mesh()))
  seed, step = 5, 3
  batch = jax.jit(functools.partial(
      dp.ordered_batch, batch_size=len(raw), steps_per_epoch=1, mean=tuple(mean), std=tuple(std),
      augment=augment, crop_padding=padding))(split, jnp.arange(len(raw)), step, seed)
  np.testing.assert_array_equal(batch['label'], np.arange(len(raw)))
  offsets, flips = (np.asarray(d) for d in dp.augmentation_draws(seed, step, len(raw), padding))
  assert len({tuple(o) for o in offsets}) > 1 and 0 < flips.sum() < len(raw)
  device = np.asarray(batch['image'])
  host = np.asarray(preprocess.apply(raw, prep, dp.HOST_OPS, (offsets, flips)))
  draws = (tf.constant(offsets), tf.constant(flips))
  tfdata = tfdata_pipeline.preprocess_batch(raw, prep, draws).numpy()
  assert device.shape == host.shape == tfdata.shape == (len(raw), *model)
  np.testing.assert_allclose(host, device, rtol=0, atol=ATOL)
  np.testing.assert_allclose(tfdata, device, rtol=0, atol=ATOL)
  if augment == 'none':  # and unaugmented, the recipe is the plain fit, scaled and normalised
    fitted = dp.HOST_OPS.to_float(dp.fit(raw, model, mode))
    np.testing.assert_allclose(device, (fitted - mean) / std, rtol=0, atol=ATOL)


def test_the_fit_rule_decides_from_shapes_alone():
  rule = preprocess.fit_rule((29, 26, 1), (32, 32, 3), 'pad')
  assert (rule.channels, rule.size, rule.padding, rule.exact) == ('tile', 'pad', ((1, 2), (3, 3)),
                                                                  True)
  assert preprocess.fit_rule((20, 20, 3), (32, 32, 1)) == preprocess.FitRule('grey', 'resize')
  assert preprocess.fit_rule((32, 32, 3), (32, 32, 3), 'pad') == preprocess.FitRule('keep', 'keep')
  # resize_mode=pad pads however short: held as uint8, and nbytes says so.
  far = np.full((2, 10, 10, 1), 7, np.uint8)
  fitted = dp.fit(far, (32, 32, 1), 'pad')
  assert fitted.dtype == np.uint8 and dp.nbytes(far, (32, 32, 1), 'pad') == fitted.nbytes


def _smoke(dataset_name, pipeline_name):
  config = default.get_config('smoke')
  config.dataset, config.input_pipeline = dataset_name, pipeline_name
  config.batch_size, config.eval_batch_size = 4, 16
  return config


def _eval_examples(config, dataset):
  """The first eval batch's images as the input path `config.input_pipeline` makes them."""
  plan = build_lib.make_plan(config, dataset)
  made = inputs.make(config, dataset, plan, parallel.mesh())
  assert made.path == config.input_pipeline
  return np.asarray(next(iter(made.eval()))['image'])


def _run(config, dataset) -> trained_run.TrainedRun:
  """What prediction needs of a run: its record of the dataset and its eval preprocessing (no weights: only
  the inputs are compared)."""
  plan = build_lib.make_plan(config, dataset)
  prep = inputs.training_preprocess(config, dataset, plan)
  data = run_data.of_dataset(dataset, config, plan.input_shape, plan.num_classes)
  return trained_run.TrainedRun(config, None, {}, dataclasses.replace(prep, augment='none'), data,
                                0, lambda: dataset)


@pytest.mark.parametrize('shape', [(28, 28, 1), (20, 20, 3)])  # padded; made grey and resized
def test_the_three_paths_give_the_same_normalised_eval_example(shape, tmp_path):
  """An npz dataset for LeNet-5 (32x32 grey): its test images through the device path and the
  tf.data path, and the same images saved as PNG files through prediction."""
  pytest.importorskip('tensorflow')
  rng = np.random.default_rng(1)
  arrays = {f'x_{s}': rng.integers(0, 256, (n, *shape), dtype=np.uint8)
            for s, n in (('train', 24), ('test', 12))}
  arrays.update(y_train=np.arange(24) % 2, y_test=np.arange(12) % 2)
  np.savez(tmp_path / 'data.npz', **arrays)
  name = f'npz:{tmp_path / "data.npz"}'
  dataset = sources.load(name)
  device = _eval_examples(_smoke(name, 'device'), dataset)
  tfdata = _eval_examples(_smoke(name, 'tfdata'), dataset)
  run = _run(_smoke(name, 'device'), dataset)
  for i, image in enumerate(dataset.test.images):
    path = str(tmp_path / f'{i}.png')
    Image.fromarray(image[..., 0] if shape[-1] == 1 else image).save(path)
    predicted = run.inputs(predict.read_example(run, path)[None])[0]
    assert predicted.shape == device[i].shape == (32, 32, 1)
    np.testing.assert_allclose(predicted, device[i], rtol=0, atol=ATOL)
    np.testing.assert_allclose(tfdata[i], device[i], rtol=0, atol=ATOL)
  assert np.ptp(device[:12]) > 1  # real pixels, not padding alone


def _save(path, image: Image.Image, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path, **kwargs)
  return path


def _files_of_every_mode(root, rng):
  """One file per mode the decoder knows, of different sizes: name -> (path, channels decoded)."""
  rgb = rng.integers(0, 256, (30, 22, 3), dtype=np.uint8)
  grey = rng.integers(0, 256, (17, 25), dtype=np.uint8)
  grey_palette = Image.fromarray(grey).convert('P')  # a palette of greys
  grey_palette.putpalette([v for g in range(256) for v in (g, g, g)])
  rgba = np.concatenate([rgb, rng.integers(0, 256, (30, 22, 1), dtype=np.uint8)], axis=-1)
  photo = np.kron(rgb, np.ones((4, 4, 1), np.uint8))  # 120x88: JPEG's reduced decoding applies
  files = {
      'grey.png': (Image.fromarray(grey), 1),
      'grey_alpha.png': (Image.merge('LA', [Image.fromarray(grey)] * 2), 1),
      'bilevel.png': (Image.fromarray(grey > 127), 1),
      'deep.png': (Image.fromarray(grey.astype(np.uint16) * 257), 1),  # 16-bit
      'grey_palette.png': (grey_palette, 1),
      'rgb.png': (Image.fromarray(rgb), 3),
      'rgba.png': (Image.fromarray(rgba), 3),
      'palette.png': (Image.fromarray(rgb).quantize(colors=16), 3),
      'photo.jpg': (Image.fromarray(photo), 3),
      'grey_photo.jpg': (Image.fromarray(np.kron(grey, np.ones((4, 4), np.uint8))), 1),
  }
  return {name: (_save(os.path.join(root, 'train', 'a', name), image), channels)
          for name, (image, channels) in files.items()}


@pytest.mark.parametrize('grey_only', [False, True])
def test_a_file_predicted_is_the_array_its_folder_dataset_holds(grey_only, tmp_path):
  """Every mode (grey, grey+alpha, 1-bit, 16-bit, palettes, RGB, RGBA, JPEG), decoded and fitted
  by prediction and by the folder reader (image_size=12): identical uint8 arrays. A folder of grey
  files is a grey dataset, any colour file makes it RGB."""
  files = _files_of_every_mode(str(tmp_path / 'data'), np.random.default_rng(2))
  for name, (path, channels) in files.items():
    assert images.decode(path, path).shape[-1] == channels, name  # the one mode rule
    if grey_only and channels == 3:
      os.remove(path)
  other = np.zeros((12, 12), np.uint8)
  for split in ('train', 'test'):
    _save(str(tmp_path / 'data' / split / 'b' / '0.png'), Image.fromarray(other))
  _save(str(tmp_path / 'data' / 'test' / 'a' / '0.png'), Image.fromarray(other))
  dataset = sources.load(f'folder:{tmp_path / "data"}', image_size=12)
  assert dataset.image_shape == (12, 12, 1 if grey_only else 3)
  run = _run(_smoke(dataset.name, 'device'), dataset)
  kept = sorted(n for n, (p, _) in files.items() if os.path.exists(p))
  assert len(kept) == (6 if grey_only else 10)
  for index, name in enumerate(kept):  # the folder reader's order: class, then file name
    path = files[name][0]
    np.testing.assert_array_equal(predict.read_example(run, path), dataset.train.images[index],
                                  err_msg=name)
    np.testing.assert_array_equal(
        predict.as_dataset_example(run, predict.read_image(path, predict.decode_size(run))),
        dataset.train.images[index], err_msg=name)


def test_a_dataset_is_rgb_when_either_split_is(tmp_path):
  rng = np.random.default_rng(3)
  for split, mode in (('train', 'L'), ('test', 'RGB')):
    for label in ('a', 'b'):
      shape = (8, 8) if mode == 'L' else (8, 8, 3)
      _save(str(tmp_path / split / label / '0.png'),
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)))
  dataset = sources.load(f'folder:{tmp_path}')
  assert dataset.train.images.shape[1:] == dataset.test.images.shape[1:] == (8, 8, 3)
  grey = dataset.train.images
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])  # grey copied to every channel


def test_channels_follow_one_rule_with_one_message():
  rgb = np.zeros((4, 4, 3), np.uint8)
  rgb[..., 1] = 255
  assert images.to_channels(rgb, 1)[0, 0, 0] == round(255 * float(preprocess.GREY_WEIGHTS[1]))
  assert images.to_channels(rgb[..., :1], 3).shape == (4, 4, 3)
  with pytest.raises(sources.DataError, match='cannot give a 4-channel image to a run on '
                     '3-channel images'):
    images.to_channels(np.zeros((4, 4, 4), np.uint8), 3)
  for c, channels in ((4, 3), (2, 1)):
    assert preprocess.channel_rule(c, channels) is None
    with pytest.raises(sources.DataError, match=f'cannot convert {c}-channel images'):
      preprocess.fit_rule((4, 4, c), (4, 4, channels))
