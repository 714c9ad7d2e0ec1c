"""The explorer page: one self-contained file whose JavaScript forward pass is the model's, checked
in a real headless Chromium against JAX, with its hover highlights."""

import base64
import dataclasses
import json
import os
import re
import time

import numpy as np
import pytest

from cnn_zoo import errors, models, visualize
from cnn_zoo.train import trained_run, loop
from cnn_zoo.visualize import activations, browser, explorer
from configs import default as default_config

NUM_IMAGES = 20  # test images fed to the page
TOLERANCE = 1e-4  # absolute, float32
FORWARD_BUDGET_MS = 5.0


@pytest.fixture(scope='module', params=['lenet5', 'lenet5_fc100'])
def run(request, digits_dir, tmp_path_factory):
  """A LeNet-5 (or its 120-100 head) trained for one epoch on digits (seconds), reloaded."""
  config = default_config.get_config('smoke')
  config.data_dir = digits_dir
  config.model = request.param
  workdir = str(tmp_path_factory.mktemp(request.param))
  loop.train_and_evaluate(config, workdir)
  return trained_run.load(workdir)


@pytest.fixture(scope='module')
def page_path(run, tmp_path_factory):
  _, written = explorer.write(run, str(tmp_path_factory.mktemp('explorer')))
  return written[0][0]


@pytest.fixture(scope='module')
def driver():
  reason = browser.missing()
  if reason and os.environ.get('CNN_ZOO_REQUIRE_BROWSER'):  # CI installs it: missing is a failure
    pytest.fail(f'headless Chromium is unavailable: {reason}')
  if reason:
    pytest.skip(f'headless Chromium is unavailable: {reason}')
  d = browser.chromium()
  yield d
  d.quit()


def _floats(b64):
  return np.frombuffer(base64.b64decode(b64), '<f4')


def test_page_is_one_small_offline_file_holding_the_weights(run, page_path):
  html = open(page_path, encoding='utf-8').read()
  assert len(html.encode('utf-8')) < 2_000_000
  # Nothing fetched: no external scripts, styles, images or fonts.
  assert not re.search(r'(src|href)\s*=|https?://|@import|url\(', html)
  blob = re.search(r'<script id="explorer-data" type="application/json">(.*?)</script>', html, re.S)
  data = json.loads(blob.group(1))
  assert [l['name'] for l in data['layers']] == ['conv1', 'pool1', 'conv2', 'pool2', 'fc1', 'fc2',
                                                   'output']
  params = run.variables['params']
  conv2 = data['layers'][2]
  np.testing.assert_array_equal(_floats(conv2['kernel']).reshape(conv2['shape']),
                                params['Conv_1']['kernel'])
  np.testing.assert_array_equal(_floats(data['layers'][-1]['bias']), params['Dense_2']['bias'])
  # digits' 8x8 images are resized to the whole 32x32 input: all of it is drawable.
  assert data['input']['box'] == [0, 0, 32, 32] and data['input']['source'] == [8, 8]
  assert sorted(e['label'] for e in data['examples']) == [str(i) for i in range(10)]


def test_pad_box_of_padded_mnist_sized_images(run):
  """28x28 images are zero-padded into the 32x32 input: the pad draws the 28x28 box."""
  mnist_sized = dataclasses.replace(run.data, image_shape=(28, 28, 1))  # as the run recorded them
  assert explorer._pad_box(dataclasses.replace(run, data=mnist_sized)) == [2, 2, 28, 28]


def test_refuses_models_it_cannot_draw_and_missing_runs(run, tmp_path):
  config = run.config.copy_and_resolve_references()
  config.model = 'resnet20'
  other = dataclasses.replace(run, config=config, model=models.get('resnet20'))
  with pytest.raises(errors.ConfigError, match=r"model 'resnet20' is not one; valid choices: "
                                               r'lenet5, lenet5_fc100'):
    explorer.page(other)
  with pytest.raises(errors.NotFoundError, match='holds no run'):
    visualize.make('explorer', str(tmp_path), workdir=str(tmp_path / 'missing'))
  with pytest.raises(errors.ConfigError, match='explorer needs --workdir'):
    visualize.make('explorer', str(tmp_path))


def test_page_in_chromium_computes_jax_activations(run, page_path, driver):
  """20 test images fed to the page: every layer within 1e-4 of JAX's, the same prediction; and
  one forward pass in the page under 5 ms."""
  result = browser.agreement(driver, run, page_path, NUM_IMAGES)
  worst, ms = result['max_abs_diff'], result['forward_ms']
  print(f'\n{run.config.model}: max |page - JAX| over {NUM_IMAGES} images, per layer: '
        + ', '.join(f'{k} {v:.2e}' for k, v in worst.items()) + f'; forward pass {ms:.3f} ms')
  assert sorted(worst) == ['conv1', 'conv2', 'fc1', 'fc2', 'input', 'output', 'pool1', 'pool2']
  assert max(worst.values()) < TOLERANCE, worst
  assert result['same_prediction'] == result['count'] == NUM_IMAGES
  assert ms < FORWARD_BUDGET_MS


def test_drawing_and_examples_update_every_layer(run, page_path, driver):
  browser.open_page(driver, page_path)
  driver.find_element('id', 'clear').click()
  blank = driver.execute_script('return window.explorer.layers();')
  assert len(set(blank['input'])) == 1  # an empty pad
  box = driver.execute_script('return JSON.parse(document.getElementById("explorer-data")'
                              '.textContent).input.box;')
  browser.draw(driver, browser.digit_two(box))
  time.sleep(0.1)  # one animation frame: the page recomputes once per frame while drawing
  drawn = driver.execute_script('return window.explorer.layers();')
  pad = np.asarray(drawn['input'])
  assert (pad > pad.min()).sum() > 40  # the stroke reached the model's input
  assert drawn['conv1'] != blank['conv1'] and drawn['output'] != blank['output']
  # The drawing's numbers are JAX's too.
  raw = np.asarray(driver.execute_script('return window.explorer.pad();'), np.float32)
  data = json.loads(driver.execute_script(
      'return document.getElementById("explorer-data").textContent;'))
  mean, std = np.float32(data['input']['mean']), np.float32(data['input']['std'])
  jax_layers = activations.capture(run.model, run.variables,
                                   ((raw - mean) / std).reshape(1, 32, 32, 1))
  np.testing.assert_allclose(mean, np.ravel(run.preprocess.mean)[0], rtol=1e-7)
  for layer in jax_layers.layers:
    np.testing.assert_allclose(drawn[layer.name], layer.values.ravel(), atol=TOLERANCE)
  # An example button puts its test image on the pad.
  driver.find_elements('css selector', '.example')[3].click()
  index = data['examples'][3]['index']
  shown = np.asarray(driver.execute_script('return window.explorer.layers().input;'))
  np.testing.assert_allclose(shown, run.inputs(run.dataset.test.images[index:index + 1]).ravel(),
                             atol=1e-5)


def test_hover_highlights_windows_fields_and_connections(run, page_path, driver):
  browser.open_page(driver, page_path)
  layers = driver.execute_script('return window.explorer.layers();')
  conv1 = np.asarray(layers['conv1']).reshape(28, 28, 6)
  pool1 = np.asarray(layers['pool1']).reshape(14, 14, 6)
  # A pool pixel: its 2x2 window in conv1, the same map, with the maximum marked.
  for map_index, row, col in [browser.largest(driver, 'pool1'), (1, 3, 9)]:
    browser.hover(driver, 'pool1', map_index, row, col)
    window = browser.highlights(driver, '.hl')
    assert window == [{'layer': 'conv1', 'map': map_index, 'row': 2 * row, 'col': 2 * col,
                       'rows': 2, 'cols': 2}]
    (best,) = browser.highlights(driver, '.hl-max')
    assert best['layer'] == 'conv1' and best['map'] == map_index
    assert 2 * row <= best['row'] < 2 * row + 2 and 2 * col <= best['col'] < 2 * col + 2
    values = conv1[2 * row:2 * row + 2, 2 * col:2 * col + 2, map_index]
    assert conv1[best['row'], best['col'], map_index] == values.max() == pool1[row, col, map_index]
    assert browser.highlights(driver, '.hl-src') == [{'layer': 'pool1', 'map': map_index, 'row': row,
                                                      'col': col, 'rows': 1, 'cols': 1}]
  # A conv2 pixel: its 5x5 receptive field in every pool1 map; the filter's 6 input channels.
  browser.hover(driver, 'conv2', 4, 2, 3)
  fields = browser.highlights(driver, '.hl')
  assert fields == [{'layer': 'pool1', 'map': m, 'row': 2, 'col': 3, 'rows': 5, 'cols': 5}
                    for m in range(6)]
  assert len(driver.find_elements('css selector', '#info .filters canvas')) == 6
  # An output node: its ten strongest incoming connections, from the last hidden layer.
  browser.hover_output(driver, 7)
  incoming = browser.highlights(driver, '.hl-in')
  hidden = 'fc2'
  assert len(incoming) == 10 and {h['layer'] for h in incoming} == {hidden}
  kernel = np.asarray(run.variables['params']['Dense_2']['kernel'])[:, 7]
  terms = np.abs(kernel * np.asarray(layers[hidden]))
  cols = driver.execute_script('return document.querySelector(\'canvas[data-layer="fc2"]\').width;')
  marked = sorted(h['row'] * cols + h['col'] for h in incoming)
  assert marked == sorted(np.argsort(-terms)[:10].tolist())
