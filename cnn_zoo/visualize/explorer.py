"""An interactive page that shows a trained LeNet-5 seeing what you draw (after Adam Harley's).

  python -m experiments.visualize explorer --workdir=RUN --out_dir=DIR   # writes DIR/explorer.html

`page(run)` returns one self-contained HTML file, to open from disk with no server or network: the
template `explorer.html` beside this file (page, styles and a forward pass in JavaScript), the
run's weights as base64 float32, its input normalisation and one test image of each class.
The page recomputes every layer as you draw, in the model's own order: conv, activation, pool,
..., flatten, dense, activation, ..., dense, softmax. `tests/test_explorer.py` checks in headless
Chromium that its numbers are JAX's.

The pad is the model's input as the run's evaluation fits it: a dataset that is zero-padded to it
(MNIST's 28x28 in LeNet-5's 32x32) is drawn in the unpadded box, with the padding shown; one that
is resized (digits' 8x8) is drawn at the model's input size, and its examples are shown resized.
"""

import base64
import os

import numpy as np

from cnn_zoo import errors, escape, models, output_paths, predict
from cnn_zoo.data import device_pipeline, preprocess
from cnn_zoo.models import lenet
from cnn_zoo.train import trained_run

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'explorer.html')
PLACEHOLDER = '/*EXPLORER_DATA*/null'  # where the template takes its JSON
FILENAME = 'explorer.html'
NUM_EXAMPLES = 10  # one test image per class, of the first classes


def drawable_models() -> list[str]:
  """The registered models the page can draw: the LeNet family (conv, pool and dense layers)."""
  return [name for name in models.names() if models.spec(name).family == 'lenet']


def _base64(array) -> str:
  return base64.b64encode(np.ascontiguousarray(array, '<f4').tobytes()).decode('ascii')


def _ordered(params: dict, prefix: str) -> list[dict]:
  """Conv_0, Conv_1, ... (or Dense_*) in the order the model calls them."""
  keys = sorted((k for k in params if k.startswith(prefix + '_')), key=lambda k: int(k.split('_')[1]))
  return [params[k] for k in keys]


def network(run: trained_run.TrainedRun) -> list[dict]:
  """The layers the page computes, with their weights: conv (kernel HWIO), pool, dense (kernel
  in x out); the last dense layer gives the logits."""
  params = run.variables['params']
  layers = []
  for i, conv in enumerate(_ordered(params, 'Conv')):
    kernel = np.asarray(conv['kernel'], np.float32)
    layers.append({'name': f'conv{i + 1}', 'kind': 'conv', 'shape': list(kernel.shape),
                   'kernel': _base64(kernel), 'bias': _base64(conv['bias'])})
    layers.append({'name': f'pool{i + 1}', 'kind': 'pool', 'size': 2})  # LeNet5: 2x2, stride 2
  dense = _ordered(params, 'Dense')
  for i, fc in enumerate(dense):
    kernel = np.asarray(fc['kernel'], np.float32)
    last = i == len(dense) - 1
    layers.append({'name': 'output' if last else f'fc{i + 1}', 'kind': 'dense',
                   'shape': list(kernel.shape), 'kernel': _base64(kernel), 'bias': _base64(fc['bias'])})
  return layers


def _pad_box(run: trained_run.TrainedRun) -> list[int]:
  """[top, left, height, width] of the drawable box in the model's input: where a white dataset
  image lands once fitted (all of it when the run resizes, the unpadded box when it pads)."""
  white = np.full((1, *run.data.image_shape), 255, np.uint8)
  fitted = np.asarray(device_pipeline.fit(white, run.preprocess.image_shape,
                                          run.preprocess.resize_mode))[0, :, :, 0]
  rows, cols = np.nonzero(fitted > 0)
  return [int(rows.min()), int(cols.min()), int(rows.max() - rows.min() + 1),
          int(cols.max() - cols.min() + 1)]


def pad_values(run: trained_run.TrainedRun, images_uint8: np.ndarray) -> np.ndarray:
  """Dataset images as the page's pad holds them: the model's (N, H, W) input in 0..1, before
  normalisation (what `TrainedRun.inputs` computes before subtracting the mean)."""
  fitted = device_pipeline.fit(images_uint8, run.preprocess.image_shape, run.preprocess.resize_mode)
  return np.asarray(device_pipeline.HOST_OPS.to_float(fitted), np.float32)[..., 0]


def examples(run: trained_run.TrainedRun, count: int = NUM_EXAMPLES) -> list[int]:
  """Test-split indices of the first image of each of the first `count` classes."""
  labels = run.dataset.test.labels
  found = {}
  for index, label in enumerate(labels):
    if int(label) < count and int(label) not in found:
      found[int(label)] = index
      if len(found) == min(count, run.data.num_classes):
        break
  return [found[label] for label in sorted(found)]


def check(run: trained_run.TrainedRun) -> None:
  """Refuses, in one line, a run the page cannot draw."""
  if not isinstance(run.model, lenet.LeNet5) or run.preprocess.image_shape[-1] != 1:
    raise errors.ConfigError(f'the explorer draws conv/pool/dense models of one input channel; '
                             f'model {run.config.model!r} is not one; valid choices: '
                             f'{", ".join(drawable_models())}')


def _dataset_name(dataset: str) -> str:
  """npz:/a/b/mnist.npz -> npz:mnist.npz: the page names the data, not this machine's paths."""
  kind, sep, path = dataset.partition(':')
  return f'{kind}:{os.path.basename(os.path.normpath(path))}' if sep and kind in ('npz', 'folder') \
      else dataset


def data(run: trained_run.TrainedRun) -> dict:
  """Everything the page needs, JSON-ready."""
  check(run)
  prep = run.preprocess
  source = run.data.image_shape[-1]
  mean = preprocess.stats_for_channels(prep.mean, source, 1)
  std = preprocess.stats_for_channels(prep.std, source, 1)
  names = predict.class_names(run)
  indices = examples(run)
  pixels = pad_values(run, run.dataset.test.images[indices])
  height, width, _ = prep.image_shape
  return {
      'model': run.config.model, 'step': run.step, 'dataset': _dataset_name(run.config.dataset),
      'activation': run.model.activation, 'pool': run.model.pool,
      'input': {'height': height, 'width': width, 'box': _pad_box(run),
                'source': list(run.data.image_shape[:2]),
                'mean': float(np.ravel(mean)[0]), 'std': float(np.ravel(std)[0])},
      'classes': names,
      'layers': network(run),
      'examples': [{'index': int(i), 'label': names[int(run.dataset.test.labels[i])],
                    'pixels': _base64(p)} for i, p in zip(indices, pixels)],
  }


def page(run: trained_run.TrainedRun) -> str:
  """The self-contained HTML of the explorer for `run`."""
  with open(TEMPLATE, encoding='utf-8') as f:
    template = f.read()
  # No class name can end the script element or open a comment: '<', '>' and '&' as \u escapes.
  return template.replace(PLACEHOLDER, escape.json_for_html(data(run)), 1)


def write(run: trained_run.TrainedRun, out_dir: str,
          screenshots: bool = False) -> tuple[str, list[tuple[str, int]]]:
  """Writes OUT_DIR/explorer.html and, with `screenshots`, PNGs of it in headless Chromium;
  returns a line on the run and [(path, bytes)]."""
  html = page(run)
  output_paths.writable_dir(out_dir, '--out_dir')
  path = os.path.join(out_dir, FILENAME)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(html)
  text = (f'{run.config.model} (step {run.step}) on {run.config.dataset}: open {path} in a browser '
          f'(no server or network needed)')
  written = [(path, len(html.encode('utf-8')))]
  if screenshots:
    from cnn_zoo.visualize import browser  # pylint: disable=g-import-not-at-top
    written += browser.screenshots(path, out_dir)
  return text, written
