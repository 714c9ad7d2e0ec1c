"""How a ConvNet sees an image, computed with the ops the models use.

  python -m experiments.visualize convolution|kernels|relu|pooling [--image=FILE]
  python -m experiments.visualize feature-maps --workdir=RUN [--image=FILE | --index=N]
  python -m experiments.visualize explorer --workdir=RUN [--screenshots]   # explorer.html

`make(what, out_dir, ...)` writes the PNG figures of one command into out_dir and returns the
numbers of its small examples as text, with the paths and sizes of the files written; `explorer`
writes one self-contained HTML page (see explorer.py).
"""

import os

import numpy as np

from cnn_zoo import errors, output_paths
from cnn_zoo import predict
from cnn_zoo.data import preprocess
from cnn_zoo.train import trained_run
from cnn_zoo.visualize import activations, explorer, figures, ops

# The textbook example: a 5x5 binary image and a 3x3 filter.
IMAGE = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0],
                  [0, 1, 1, 0, 0]], np.float32)
FILTER = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], np.float32)
# CS231n's pooling example.
POOLING_EXAMPLE = np.array([[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]], np.float32)
# (padding, stride) pairs that show how the output size changes.
PADDING_STRIDE = ((0, 1), (1, 1), (0, 2), (1, 2), (0, 3))

COMMANDS = ('convolution', 'kernels', 'relu', 'pooling', 'feature-maps', 'explorer')
PHOTO_MAX_SIDE = 240  # pixels; small enough for a 3x3 kernel's effect to show, and for small PNGs


def photo(path: str | None = None, max_side: int = PHOTO_MAX_SIDE) -> np.ndarray:
  """A grey photograph with values in 0..1: FILE, or scikit-learn's bundled china.jpg."""
  if path:
    image = predict.read_image(path).astype(np.float32)
  else:
    from sklearn import datasets  # only for its bundled sample photograph
    image = datasets.load_sample_image('china.jpg').astype(np.float32)
  if image.shape[-1] == 3:  # luma, as the input paths make RGB grey
    image = image @ preprocess.GREY_WEIGHTS
  else:
    image = image[..., 0]
  # Shrink by block averages: a whole factor keeps every pixel's weight equal.
  factor = max(1, -(-max(image.shape) // max_side))
  h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
  image = image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean((1, 3))
  return image / 255.0


def _matrix(m, indent: str = '  ') -> str:
  m = np.asarray(m)
  width = max(len(figures.format_number(v)) for v in m.ravel())
  return '\n'.join(indent + ' '.join(f'{figures.format_number(v):>{width}}' for v in row)
                   for row in m)


def convolution_steps(image: np.ndarray, kernel: np.ndarray) -> list[str]:
  """out[i,j] = sum of image window (i,j) times the kernel, written out term by term."""
  k = kernel.shape[0]
  lines = []
  for i in range(image.shape[0] - k + 1):
    for j in range(image.shape[1] - k + 1):
      window = image[i:i + k, j:j + k]
      terms = ' + '.join(f'{a:.0f}*{b:.0f}' for a, b in zip(window.ravel(), kernel.ravel()))
      lines.append(f'  out[{i},{j}] = {terms} = {float(np.sum(window * kernel)):.0f}')
  return lines


def _convolution(out_dir, **_):
  feature_map = np.asarray(ops.conv2d(IMAGE, FILTER))
  lines = ['The 5x5 image:', _matrix(IMAGE), 'convolved with the 3x3 filter (stride 1, no padding; '
           'as in ConvNets the filter is not flipped):', _matrix(FILTER),
           'Each output is the sum of an image window times the filter:',
           *convolution_steps(IMAGE, FILTER),
           'The feature map, from jax.lax.conv_general_dilated as flax.linen.Conv calls it:',
           _matrix(feature_map), '',
           'Output size: out = (in - k + 2p) / s + 1, rounded down (a window that does not fit is '
           'dropped)',
           '  in  k  p  s   out                    conv2d output']
  k, size = FILTER.shape[0], IMAGE.shape[0]
  for padding, stride in PADDING_STRIDE:
    out = np.asarray(ops.conv2d(IMAGE, FILTER, stride=stride, padding=padding))
    exact = (size - k + 2 * padding) / stride + 1
    value = f'{exact:g}' if exact.is_integer() else \
        f'{exact:.2f}, rounded down: {ops.output_size(size, k, padding, stride)}'
    lines.append(f'  {size:>2} {k:>2} {padding:>2} {stride:>2}   {value:<22} '
                 f'{out.shape[0]}x{out.shape[1]}')
  lines += ['With zero padding 1 and stride 2:', _matrix(ops.conv2d(IMAGE, FILTER, 2, 1))]
  path = os.path.join(out_dir, 'convolution.png')
  return '\n'.join(lines), [(path, figures.save(figures.convolution_figure(IMAGE, FILTER), path))]


def _kernels(out_dir, image=None, **_):
  gray = photo(image)
  lines = [f'{name:<14} {figures.matrix_text(kernel)}' for name, kernel in ops.KERNELS.items()]
  path = os.path.join(out_dir, 'kernels.png')
  return '\n'.join(lines), [(path, figures.save(figures.kernels_figure(gray), path))]


def _relu(out_dir, image=None, **_):
  small = np.asarray(ops.conv2d(IMAGE, ops.KERNELS['edge']))
  real = np.asarray(ops.conv2d(photo(image), ops.KERNELS['edge']))
  text = '\n'.join(['The 5x5 image through the edge filter [1 0 -1; 0 0 0; -1 0 1]:',
                    _matrix(small), 'after ReLU, max(0, x):', _matrix(ops.relu(small))])
  fig = figures.relu_figure(small, real, 'the 5x5 image * edge filter',
                            'a photograph * edge filter')
  path = os.path.join(out_dir, 'relu.png')
  return text, [(path, figures.save(fig, path))]


def _pooling(out_dir, image=None, **_):
  lines = ['2x2 pooling at stride 2 of', _matrix(POOLING_EXAMPLE)]
  for kind in ops.POOLS:
    lines += [f'{kind}:', _matrix(ops.pool(POOLING_EXAMPLE, kind))]
  gray = photo(image)
  # A real feature map: the photograph's edge response after ReLU, its central 64x64.
  edges = np.asarray(ops.relu(ops.conv2d(gray, ops.KERNELS['laplacian_8'])))
  top, left = (edges.shape[0] - 64) // 2, (edges.shape[1] - 64) // 2
  crop = edges[max(top, 0):max(top, 0) + 64, max(left, 0):max(left, 0) + 64]
  fig = figures.pooling_figure(POOLING_EXAMPLE, crop, 'ReLU(photograph * Laplacian)')
  path = os.path.join(out_dir, 'pooling.png')
  return '\n'.join(lines), [(path, figures.save(fig, path))]


def _feature_maps(out_dir, image=None, workdir=None, index=None):
  if not workdir:
    raise errors.ConfigError('feature-maps needs --workdir=RUN, the workdir of a trained run')
  if image and index is not None:
    raise errors.ConfigError('give --image=FILE or --index=N, not both')
  return feature_maps(trained_run.load(workdir), out_dir, image, index)


def feature_maps(run: trained_run.TrainedRun, out_dir: str, image: str | None = None,
                 index: int | None = None) -> tuple[str, list[tuple[str, int]]]:
  """Writes MODEL_feature_maps.png for image file `image` or test image `index` (default 0), and
  MODEL_filters.png, the learned first-layer filters."""
  names = predict.class_names(run)
  if image:
    example = predict.read_example(run, image)
    what = os.path.basename(image)
  else:
    index = index or 0
    if not len(run.dataset.test):  # a run converted from torchvision holds no images
      raise errors.ConfigError(f'{run.dataset.name}: no test images; give --image=FILE')
    if not 0 <= index < len(run.dataset.test):
      raise errors.ConfigError(f'--index={index} is out of range: the test split of {run.config.dataset} '
                       f'has {len(run.dataset.test)} images (0..{len(run.dataset.test) - 1})')
    example = run.dataset.test.images[index]
    label = names[run.dataset.test.labels[index]]
    what = f'{run.config.dataset} test image #{index} (label {label})'
  acts = activations.capture(run.model, run.variables, run.inputs(example[None]))
  model = run.config.model
  lines = [f'{layer.name:<7} {"x".join(map(str, layer.values.shape)):<9} {layer.note}'
           for layer in acts.layers]
  lines.append(predict.format_ranking(predict.ranked(acts.layers[-1].values, names, None), 3))
  maps_path = os.path.join(out_dir, f'{model}_feature_maps.png')
  written = [(maps_path, figures.save(
      figures.feature_maps_figure(activations.thinned(acts), names,
                                  f'{model} (step {run.step}) on {what}'), maps_path))]
  if acts.first_filters is not None:
    path = os.path.join(out_dir, f'{model}_filters.png')
    kh, kw, _, count = acts.first_filters.shape
    fig = figures.filters_figure(acts.first_filters,
                                 f'{model}: the {count} learned {kh}x{kw} filters of conv1')
    written.append((path, figures.save(fig, path)))
  return '\n'.join(lines), written


def _explorer(out_dir, image=None, workdir=None, index=None, screenshots=False):
  if not workdir:
    raise errors.ConfigError('explorer needs --workdir=RUN, the workdir of a trained run')
  if image or index is not None:
    raise errors.ConfigError('explorer takes no --image or --index: its page has a drawing pad and '
                             'the run\'s test images')
  return explorer.write(trained_run.load(workdir), out_dir, screenshots)


_MAKERS = {'convolution': _convolution, 'kernels': _kernels, 'relu': _relu, 'pooling': _pooling,
           'feature-maps': _feature_maps, 'explorer': _explorer}


def make(what: str, out_dir: str, image: str | None = None, workdir: str | None = None,
         index: int | None = None, screenshots: bool = False) -> tuple[str, list[tuple[str, int]]]:
  """Writes the figures of `what` into out_dir; returns its text and [(path, bytes)] written."""
  if what not in _MAKERS:
    raise errors.ConfigError(f'unknown figure {what!r}; valid choices: {", ".join(COMMANDS)}')
  if what not in ('feature-maps', 'explorer') and (workdir or index is not None):
    raise errors.ConfigError(f'--workdir and --index are for feature-maps (--workdir also for '
                             f'explorer), not {what}')
  if what == 'convolution' and image:
    raise errors.ConfigError('convolution draws the textbook 5x5 example; --image is for kernels, '
                             'relu, pooling and feature-maps')
  if screenshots and what != 'explorer':
    raise errors.ConfigError(f'--screenshots is for explorer, not {what}')
  output_paths.writable_dir(out_dir, '--out_dir')  # before a run is loaded or anything is drawn
  if what == 'explorer':
    return _explorer(out_dir, image=image, workdir=workdir, index=index, screenshots=screenshots)
  return _MAKERS[what](out_dir, image=image, workdir=workdir, index=index)
