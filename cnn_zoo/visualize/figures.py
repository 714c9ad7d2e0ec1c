"""The figures: one function per figure, each returning a matplotlib Figure (Agg, no pyplot state).

`save` writes a Figure as a small PNG (8-bit grey or a 256-colour palette), so that figures can be
committed beside the docs.
"""

import io
import math
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
import numpy as np
from PIL import Image

from cnn_zoo.visualize import activations as activations_lib
from cnn_zoo.visualize import ops

DPI = 80
MAP_CMAP = 'viridis'
SIGNED_CMAP = 'RdBu_r'  # negative blue, positive red, zero white


def save(fig: Figure, path: str) -> int:
  """Writes `fig` as a PNG at `path` and returns its size in bytes."""
  canvas = FigureCanvasAgg(fig)
  canvas.draw()
  rgb = np.asarray(canvas.buffer_rgba())[..., :3]
  if (rgb == rgb[..., :1]).all():  # all grey: one byte per pixel, lossless
    image = Image.fromarray(np.ascontiguousarray(rgb[..., 0]), 'L')
  else:  # colour maps and text need far fewer than 256 colours to look right
    image = Image.fromarray(np.ascontiguousarray(rgb), 'RGB').quantize(colors=256)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  buffer = io.BytesIO()
  image.save(buffer, format='PNG', optimize=True)
  with open(path, 'wb') as f:
    f.write(buffer.getvalue())
  return len(buffer.getvalue())


def format_number(v: float) -> str:
  """An integer without decimals, anything else with two."""
  return f'{v:.0f}' if float(v).is_integer() else f'{v:.2f}'


def matrix_text(m) -> str:
  """A kernel as one line, MATLAB style, with a common fraction pulled out: 1/16 [1 2 1; ...]."""
  m = np.asarray(m, np.float64)
  for denominator in (1, 9, 16, 256):
    scaled = m * denominator
    if np.allclose(scaled, np.round(scaled), atol=1e-4):
      rows = '; '.join(' '.join(f'{v:.0f}' for v in row) for row in np.round(scaled))
      return f'[{rows}]' if denominator == 1 else f'1/{denominator} [{rows}]'
  return '[' + '; '.join(' '.join(f'{v:.2f}' for v in row) for row in m) + ']'


def _grid(ax, values, title: str, cmap: str = 'Greys', vmin=None, vmax=None, fontsize: int = 9):
  """A small matrix as coloured cells with its numbers written in them."""
  values = np.asarray(values, np.float64)
  if vmin is None:
    vmin, vmax = min(values.min(), 0), max(values.max(), 1)
  image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
  for (i, j), v in np.ndenumerate(values):
    # Dark text on light cells and the reverse.
    shade = image.cmap(image.norm(v))[:3]
    colour = 'black' if np.dot(shade, (0.299, 0.587, 0.114)) > 0.5 else 'white'
    ax.text(j, i, format_number(v), ha='center', va='center', fontsize=fontsize, color=colour)
  ax.set_title(title, fontsize=9)
  ax.set_xticks([])
  ax.set_yticks([])


def _picture(ax, values, title: str, cmap: str = 'gray', vmin=None, vmax=None, fontsize: int = 8):
  ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, interpolation='nearest')
  ax.set_title(title, fontsize=fontsize)
  ax.set_axis_off()


def convolution_figure(image, kernel, padding: int = 1, stride: int = 2) -> Figure:
  """The worked example: image, filter, feature map at stride 1, and with padding and stride."""
  image, kernel = np.asarray(image), np.asarray(kernel)
  k = kernel.shape[0]
  feature_map = np.asarray(ops.conv2d(image, kernel))
  strided = np.asarray(ops.conv2d(image, kernel, stride=stride, padding=padding))
  fig = Figure(figsize=(10, 2.9), dpi=DPI, layout='constrained')
  axes = fig.subplots(1, 4, width_ratios=[5, 3, 3, 3])
  _grid(axes[0], image, f'image {image.shape[0]}x{image.shape[1]}', cmap='Blues', vmin=0, vmax=2)
  axes[0].add_patch(Rectangle((-0.5, -0.5), k, k, fill=False, edgecolor='red', linewidth=2))
  _grid(axes[1], kernel, f'filter {k}x{k}', cmap='Oranges', vmin=0, vmax=2)
  _grid(axes[2], feature_map, 'feature map\n(5 - 3 + 2*0) / 1 + 1 = '
        f'{ops.output_size(image.shape[0], k)}', cmap='Greens', vmin=0,
        vmax=feature_map.max() * 1.5)
  axes[2].add_patch(Rectangle((-0.5, -0.5), 1, 1, fill=False, edgecolor='red', linewidth=2))
  size = ops.output_size(image.shape[0], k, padding, stride)
  _grid(axes[3], strided, f'zero padding {padding}, stride {stride}\n'
        f'(5 - 3 + 2*{padding}) / {stride} + 1 = {size}', cmap='Greens', vmin=0,
        vmax=feature_map.max() * 1.5)
  fig.suptitle('Convolution as in ConvNets (no kernel flip): slide the filter, multiply, sum',
               fontsize=10)
  return fig


def _kernel_panel(ax, values, name: str, kernel) -> None:
  """Kernels that sum to 1 keep the brightness: shown on 0..1; kernels that sum to 0 respond to
  change only: their magnitude is shown, scaled to its 99.5th percentile."""
  if abs(float(np.sum(kernel))) < 1e-6:
    magnitude = np.abs(values)
    _picture(ax, magnitude, f'{name} (|response|)\n{matrix_text(kernel)}', vmin=0,
             vmax=max(float(np.percentile(magnitude, 99.5)), 1e-6))
  else:
    _picture(ax, np.clip(values, 0, 1), f'{name}\n{matrix_text(kernel)}', vmin=0, vmax=1)


def kernels_figure(gray: np.ndarray, kernels: dict = ops.KERNELS) -> Figure:
  """A grey image (values 0..1) and its convolution with each 3x3 kernel (no padding)."""
  panels = 1 + len(kernels)
  cols = 4
  rows = math.ceil(panels / cols)
  h, w = gray.shape
  panel_width = 2.3
  fig = Figure(figsize=(cols * panel_width, rows * (panel_width * h / w + 0.45)), dpi=DPI,
               layout='constrained')
  axes = fig.subplots(rows, cols).ravel()
  _picture(axes[0], gray, f'input (grey, {h}x{w})', vmin=0, vmax=1)
  for ax, (name, kernel) in zip(axes[1:], kernels.items()):
    _kernel_panel(ax, np.asarray(ops.conv2d(gray, kernel)), name.replace('_', ' '), kernel)
  for ax in axes[panels:]:
    ax.remove()
  return fig


def relu_figure(small: np.ndarray, real: np.ndarray, small_title: str, real_title: str) -> Figure:
  """A small and a real feature map, before and after ReLU (red positive, blue negative)."""
  fig = Figure(figsize=(8, 6.2), dpi=DPI, layout='constrained')
  axes = fig.subplots(2, 2)
  m = float(np.abs(small).max()) or 1.0
  _grid(axes[0, 0], small, f'{small_title}', cmap=SIGNED_CMAP, vmin=-m, vmax=m, fontsize=11)
  _grid(axes[0, 1], np.asarray(ops.relu(small)), 'after ReLU: max(0, x)', cmap=SIGNED_CMAP,
        vmin=-m, vmax=m, fontsize=11)
  m = float(np.percentile(np.abs(real), 99.5)) or 1.0
  _picture(axes[1, 0], real, real_title, cmap=SIGNED_CMAP, vmin=-m, vmax=m, fontsize=9)
  _picture(axes[1, 1], np.asarray(ops.relu(real)), 'after ReLU: the negative responses are 0',
           cmap=SIGNED_CMAP, vmin=-m, vmax=m, fontsize=9)
  return fig


def pooling_figure(small: np.ndarray, real: np.ndarray, real_title: str,
                   window: int = 2, stride: int = 2) -> Figure:
  """max, average and sum pooling of a small and of a real feature map."""
  fig = Figure(figsize=(10, 5.6), dpi=DPI, layout='constrained')
  axes = fig.subplots(2, 4, width_ratios=[2, 1, 1, 1])
  top = float(small.max()) * 1.2
  _grid(axes[0, 0], small, f'{small.shape[0]}x{small.shape[1]} map', cmap='Blues', vmin=0, vmax=top)
  for i in range(0, small.shape[0], window):  # outline the pooling windows
    for j in range(0, small.shape[1], window):
      axes[0, 0].add_patch(Rectangle((j - 0.5, i - 0.5), window, window, fill=False,
                                     edgecolor='red', linewidth=1.5))
  for ax, kind in zip(axes[0, 1:], ops.POOLS):
    pooled = np.asarray(ops.pool(small, kind, window, stride))
    _grid(ax, pooled, f'{kind} pool {window}x{window}/{stride}', cmap='Blues', vmin=0,
          vmax=max(top, float(pooled.max()) * 1.2))
  _picture(axes[1, 0], real, f'{real_title}\n{real.shape[0]}x{real.shape[1]}', cmap=MAP_CMAP)
  for ax, kind in zip(axes[1, 1:], ops.POOLS):
    pooled = np.asarray(ops.pool(real, kind, window, stride))
    scale = f' ({window * window} x avg)' if kind == 'sum' else ''
    _picture(ax, pooled, f'{kind} pool -> {pooled.shape[0]}x{pooled.shape[1]}{scale}',
             cmap=MAP_CMAP)
  return fig


def _show_input(ax, x: np.ndarray) -> None:
  """A preprocessed (normalised) input, stretched back to 0..1 for display."""
  x = (x - x.min()) / max(float(x.max() - x.min()), 1e-6)
  _picture(ax, x if x.shape[-1] == 3 else x.mean(-1), '')


def feature_maps_figure(acts: activations_lib.Activations, class_names: list[str], title: str,
                        cols: int = 8, max_maps: int = 16) -> Figure:
  """One row block per layer: input, each layer's maps (first `max_maps`), dense activations as
  strips, and the output probabilities as a bar chart. Every axes is labelled with its layer name
  (`ax.get_label()`), one axes per map."""
  layers = acts.layers
  heights = []
  for layer in layers:
    if layer.kind in ('conv', 'pool'):
      heights.append(math.ceil(min(layer.values.shape[-1], max_maps) / cols) + 0.3)
    else:
      heights.append({'input': 1.3, 'dense': 0.75, 'output': 1.6}[layer.kind])
  unit = 0.95  # inches per row of maps
  fig = Figure(figsize=(cols * unit, sum(heights) * unit + 0.4), dpi=DPI, layout='constrained')
  fig.suptitle(title, fontsize=10)
  for subfig, layer in zip(fig.subfigures(len(layers), 1, height_ratios=heights), layers):
    shape = 'x'.join(str(d) for d in layer.values.shape)
    if layer.kind in ('conv', 'pool'):
      count = layer.values.shape[-1]
      shown = min(count, max_maps)
      head = f'{layer.name}: {count} maps of {shape[:shape.rindex("x")]}, {layer.note}'
      if shown < count:
        head += f' (first {shown})'
      subfig.suptitle(head, x=0.01, ha='left', fontsize=9)
      axes = subfig.subplots(math.ceil(shown / cols), cols, squeeze=False).ravel()
      lo, hi = float(layer.values.min()), float(layer.values.max())  # one scale per layer
      for c, ax in enumerate(axes[:shown]):
        _picture(ax, layer.values[..., c], '', cmap=MAP_CMAP, vmin=lo, vmax=hi)
        ax.set_label(layer.name)
      for ax in axes[shown:]:
        ax.remove()
      continue
    ax = subfig.subplots(1, 1)
    ax.set_label(layer.name)
    if layer.kind == 'input':
      subfig.suptitle(f'input {shape}, {layer.note}', x=0.01, ha='left', fontsize=9)
      _show_input(ax, layer.values)
    elif layer.kind == 'dense':
      subfig.suptitle(f'{layer.name}: {shape} activations, {layer.note}', x=0.01, ha='left',
                      fontsize=9)
      ax.imshow(layer.values[None], cmap=MAP_CMAP, aspect='auto', interpolation='nearest')
      ax.set_yticks([])
      ax.set_xticks([0, len(layer.values) - 1])
      ax.tick_params(labelsize=7)
    else:
      best = int(np.argmax(layer.values))
      subfig.suptitle(f'output: {shape} probabilities (softmax); predicted '
                      f'{class_names[best]} ({layer.values[best]:.3f})', x=0.01, ha='left',
                      fontsize=9)
      colours = ['tab:red' if i == best else 'tab:blue' for i in range(len(layer.values))]
      ax.bar(range(len(layer.values)), layer.values, color=colours)
      ax.set_ylim(0, 1)
      # Every class named when they are few; of ImageNet's 1,000, the five most likely.
      named = range(len(layer.values)) if len(layer.values) <= 20 else \
          sorted(np.argsort(-layer.values, kind='stable')[:5])
      ax.set_xticks(list(named), [class_names[i] for i in named])
      ax.tick_params(labelsize=7)
  return fig


def filters_figure(kernel: np.ndarray, title: str, cols: int = 8, max_filters: int = 32) -> Figure:
  """The learned filters of a first convolution, (kh, kw, C_in, C_out): grey for one input
  channel, colour for RGB, on one symmetric scale (mid grey is 0)."""
  kh, kw, c_in, c_out = kernel.shape
  shown = min(c_out, max_filters)
  cols = min(cols, shown)
  rows = math.ceil(shown / cols)
  fig = Figure(figsize=(cols * 1.0, rows * 1.0 + 0.5), dpi=DPI, layout='constrained')
  fig.suptitle(title, fontsize=9)
  axes = fig.subplots(rows, cols, squeeze=False).ravel()
  m = float(np.abs(kernel).max()) or 1.0
  for c, ax in enumerate(axes[:shown]):
    if c_in == 3:
      _picture(ax, (kernel[..., c] / m + 1) / 2, f'{c + 1}')
    else:
      _picture(ax, kernel[..., :, c].mean(-1), f'{c + 1}', vmin=-m, vmax=m)
  for ax in axes[shown:]:
    ax.remove()
  return fig

