"""The visualisations and predict: the worked examples' numbers, the kernels, pooling, LeNet-5's
feature-map panels, and predict against the eval step."""

import collections

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from cnn_zoo import models, predict, visualize
from cnn_zoo.train import trained_run, loop, step as step_lib, state as state_lib
from cnn_zoo.visualize import activations, figures, ops
from configs import default as default_config

LENET_LAYERS = {  # name -> shape of LeNet-5's activations for one 32x32x1 image
    'input': (32, 32, 1), 'conv1': (28, 28, 6), 'pool1': (14, 14, 6), 'conv2': (10, 10, 16),
    'pool2': (5, 5, 16), 'fc1': (120,), 'fc2': (84,), 'output': (10,)}


@pytest.fixture(scope='module')
def trained(digits_dir, tmp_path_factory):
  """A LeNet-5 trained for one epoch on digits (seconds), and the run reloaded from its workdir."""
  config = default_config.get_config('smoke')
  config.data_dir = digits_dir
  workdir = str(tmp_path_factory.mktemp('lenet5_digits'))
  loop.train_and_evaluate(config, workdir)
  return workdir, trained_run.load(workdir)


def test_worked_convolution_example():
  feature_map = ops.conv2d(visualize.IMAGE, visualize.FILTER)
  np.testing.assert_array_equal(feature_map, [[4, 3, 4], [2, 4, 3], [2, 3, 4]])
  steps = visualize.convolution_steps(visualize.IMAGE, visualize.FILTER)
  assert [int(line.rsplit('= ', 1)[1]) for line in steps] == [4, 3, 4, 2, 4, 3, 2, 3, 4]
  # The same numbers as an nn.Conv layer holding the filter: no kernel flip.
  conv = nn.Conv(1, (3, 3), padding='VALID', use_bias=False)
  by_flax = conv.apply({'params': {'kernel': jnp.asarray(visualize.FILTER)[:, :, None, None]}},
                       jnp.asarray(visualize.IMAGE)[None, :, :, None])
  np.testing.assert_array_equal(by_flax[0, :, :, 0], feature_map)


@pytest.mark.parametrize('padding, stride, expected', [(0, 1, 3), (1, 1, 5), (0, 2, 2), (1, 2, 3),
                                                       (0, 3, 1)])
def test_output_size_formula_matches_conv(padding, stride, expected):
  assert ops.output_size(5, 3, padding, stride) == expected
  out = ops.conv2d(visualize.IMAGE, visualize.FILTER, stride=stride, padding=padding)
  assert out.shape == (expected, expected)


def test_padded_strided_example():
  np.testing.assert_array_equal(ops.conv2d(visualize.IMAGE, visualize.FILTER, 2, 1),
                                [[2, 3, 1], [1, 4, 3], [0, 2, 1]])


def test_identity_kernel_returns_the_image():
  image = np.random.RandomState(0).rand(12, 17).astype(np.float32)
  np.testing.assert_allclose(ops.conv2d(image, ops.KERNELS['identity'], padding=1), image)
  np.testing.assert_allclose(ops.conv2d(image, ops.KERNELS['identity']), image[1:-1, 1:-1])


@pytest.mark.parametrize('name', ['box_blur', 'gaussian_blur', 'sharpen'])
def test_brightness_keeping_kernels_keep_a_constant_image(name):
  out = ops.conv2d(np.full((9, 11), 0.7, np.float32), ops.KERNELS[name])
  np.testing.assert_allclose(out, np.full((7, 9), 0.7), rtol=1e-6)


@pytest.mark.parametrize('name', ['edge', 'laplacian_4', 'laplacian_8'])
def test_edge_detectors_ignore_a_constant_image(name):
  out = ops.conv2d(np.full((9, 11), 0.7, np.float32), ops.KERNELS[name])
  np.testing.assert_allclose(out, 0, atol=1e-6)


def test_pooling_examples():
  x = visualize.POOLING_EXAMPLE
  np.testing.assert_array_equal(ops.pool(x, 'max'), [[6, 8], [3, 4]])
  np.testing.assert_array_equal(ops.pool(x, 'avg'), [[3.25, 5.25], [2, 2]])
  np.testing.assert_array_equal(ops.pool(x, 'sum'), [[13, 21], [8, 8]])
  maps = np.random.RandomState(0).rand(6, 6, 3)
  np.testing.assert_allclose(ops.pool(maps, 'sum', 3, 3), maps.reshape(2, 3, 2, 3, 3).sum((1, 3)),
                             rtol=1e-5)


def test_relu_example():
  edges = ops.conv2d(visualize.IMAGE, ops.KERNELS['edge'])
  np.testing.assert_array_equal(edges, [[1, 2, 1], [0, 1, 0], [0, -2, -1]])
  np.testing.assert_array_equal(ops.relu(edges), [[1, 2, 1], [0, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize('name, fc2', [('lenet5', 84), ('lenet5_fc100', 100)])
def test_lenet_feature_maps_panels(name, fc2):
  model = models.get(name)
  # Random weights without compiling an initializer: only the shapes come from init.
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
  rng = np.random.RandomState(0)
  variables = jax.tree.map(lambda s: rng.normal(0, 0.2, s.shape).astype(np.float32), shapes)
  acts = activations.capture(model, variables, np.random.RandomState(0).randn(1, 32, 32, 1))
  expected = dict(LENET_LAYERS, fc2=(fc2,))
  assert {layer.name: layer.values.shape for layer in acts.layers} == expected
  layers = {layer.name: layer.values for layer in acts.layers}
  # The pooled maps are what the model computed: ops.pool of the shown (activated) maps.
  np.testing.assert_allclose(ops.pool(layers['conv1']), layers['pool1'], rtol=1e-6)
  np.testing.assert_allclose(ops.pool(layers['conv2']), layers['pool2'], rtol=1e-6)
  np.testing.assert_allclose(layers['output'].sum(), 1, rtol=1e-5)
  assert acts.first_filters.shape == (5, 5, 1, 6)

  fig = figures.feature_maps_figure(acts, [str(i) for i in range(10)], name)
  panels = collections.Counter(ax.get_label() for ax in fig.axes)
  assert panels == {'input': 1, 'conv1': 6, 'pool1': 6, 'conv2': 16, 'pool2': 16, 'fc1': 1,
                    'fc2': 1, 'output': 1}
  strips = {ax.get_label(): ax.images[0].get_array().shape for ax in fig.axes
            if ax.get_label() in ('fc1', 'fc2')}
  assert strips == {'fc1': (1, 120), 'fc2': (1, fc2)}
  assert len(next(ax for ax in fig.axes if ax.get_label() == 'output').patches) == 10


@pytest.mark.parametrize('what', ['convolution', 'kernels', 'relu', 'pooling'])
def test_figure_commands_write_small_pngs(what, tmp_path):
  text, written = visualize.make(what, str(tmp_path))
  assert text and written
  for path, size in written:
    assert open(path, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert size < 150_000


def test_feature_maps_figures_of_a_trained_run(trained, tmp_path):
  _, run = trained
  text, written = visualize.feature_maps(run, str(tmp_path), index=3)
  assert [p.rsplit('/', 1)[1] for p, _ in written] == ['lenet5_feature_maps.png',
                                                       'lenet5_filters.png']
  assert all(size < 150_000 for _, size in written)
  assert 'pool2   5x5x16' in text
  with pytest.raises(ValueError, match='out of range'):
    visualize.feature_maps(run, str(tmp_path), index=10_000)


def test_feature_maps_needs_a_workdir(tmp_path):
  with pytest.raises(ValueError, match='needs --workdir'):
    visualize.make('feature-maps', str(tmp_path))


def _eval_top1(run, image, label):
  """The shared eval step's top-1 count for one image with the given label."""
  state = state_lib.TrainState(step=jnp.zeros([], jnp.int32), params=run.variables['params'],
                               batch_stats=run.variables.get('batch_stats', {}), opt_state=(),
                               rng=jax.random.PRNGKey(0), apply_fn=run.model.apply, tx=None)
  batch = {'image': run.inputs(image[None]), 'label': np.array([label], np.int32),
           'mask': np.ones([1], np.float32)}
  return float(jax.jit(step_lib.eval_step)(state, batch)['top1'])


def test_predict_sums_to_one_and_agrees_with_eval_step(trained, tmp_path):
  workdir, run = trained
  image = run.dataset.test.images[5]
  path = str(tmp_path / 'digit.png')
  tf.io.write_file(path, tf.io.encode_png(image))
  ranking = predict.predict(workdir, path, top_k=None)
  probabilities = [p for _, _, p in ranking]
  assert len(ranking) == 10 and probabilities == sorted(probabilities, reverse=True)
  assert sum(probabilities) == pytest.approx(1, abs=1e-5)
  top_class = ranking[0][0]
  assert _eval_top1(run, image, top_class) == 1
  assert predict.predict_image(run, image, top_k=3) == ranking[:3]
  lines = predict.format_ranking(ranking, 3).splitlines()
  assert len(lines) == 4 and lines[-1].lstrip().startswith('other 7')


def test_predict_converts_size_and_channels(trained, tmp_path):
  _, run = trained
  rgb = np.repeat(np.kron(run.dataset.test.images[0], np.ones((4, 4, 1), np.uint8)), 3, axis=-1)
  path = str(tmp_path / 'digit.jpg')
  tf.io.write_file(path, tf.io.encode_jpeg(rgb))
  image = predict.read_image(path)
  assert image.shape == (32, 32, 3)
  assert predict.as_dataset_example(run, image).shape == run.dataset.image_shape == (8, 8, 1)
  ranking = predict.predict_image(run, image, top_k=None)
  assert sum(p for _, _, p in ranking) == pytest.approx(1, abs=1e-5)


def test_read_image_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='not found'):
    predict.read_image(str(tmp_path / 'missing.png'))
  (tmp_path / 'notes.png').write_text('not an image')
  with pytest.raises(ValueError, match='cannot read it as an image'):
    predict.read_image(str(tmp_path / 'notes.png'))
