"""Image files decoded the one way cnn_zoo reads them: training's `folder:` reader, `pack` and
prediction all call `decode` here.

Only the formats cnn_zoo documents are decoded (`Image.open(..., formats=...)`): Pillow would
otherwise pick a decoder by the content, and a `.png` that is PostScript would run Ghostscript.
Each image is bounded before its pixels are decoded (`MAX_PIXELS`, `MAX_ASPECT`: a small file can
declare a huge image), and reduced as it is decoded when a target size is known (JPEG's draft mode
decodes at 1/2, 1/4 or 1/8 scale), so a folder of phone photos costs their result, not their
full size. Anything else is a `DataError` naming the file.

One mode rule: grey images (modes 1, L, LA, 16-bit I;16 and I, and palette images whose pixels
are all grey) decode to one channel, every other (RGB, RGBA, CMYK, colour palettes) to three; an
alpha channel is dropped, not composited; 16-bit images keep their high byte (value / 256), as
Pillow reads 16-bit colour. The folder reader and prediction then give a decoded image the same
size and channels (`resize`, `to_channels`: `as_example`), so a file predicted is the array its
folder dataset holds (tests/test_preprocessing.py).
"""

import warnings

import numpy as np
from PIL import Image

from cnn_zoo.data import preprocess
from cnn_zoo.errors import DataError

DATASET_FORMATS = ('PNG', 'JPEG')  # folder: datasets and packs
PREDICT_FORMATS = ('PNG', 'JPEG', 'GIF', 'BMP', 'WEBP')  # what experiments.predict documents
# 50 megapixels: a large phone photo; a decoded RGB image of it is 150 MB.
MAX_PIXELS = 50_000_000
# The longer side at most this many times the shorter: a 1x4000 strip resized to a 256-pixel short
# side (ImageNet's preprocessing) would be a gigapixel.
MAX_ASPECT = 16
_GREY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'I;16L', 'I;16B')
_SIXTEEN_BIT = ('I', 'I;16', 'I;16L', 'I;16B')


def format_names(formats) -> str:
  """'PNG or JPEG', 'PNG, JPEG, GIF, BMP or WEBP'."""
  return ' or '.join(formats) if len(formats) < 3 else f'{", ".join(formats[:-1])} or {formats[-1]}'


def _open(source, where: str, formats) -> Image.Image:
  """The opened image (header read, pixels not yet), its size bounded."""
  try:
    with warnings.catch_warnings():  # a large image is refused below, in our words
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      image = Image.open(source, formats=list(formats))
  except Image.DecompressionBombError:  # declared beyond Pillow's own limit, far beyond ours
    raise DataError(f'{where}: an image beyond the limit of {MAX_PIXELS / 1e6:.0f} megapixels '
                    f'per image') from None
  except FileNotFoundError:
    raise DataError(f'{where}: no such file') from None
  except Exception:  # UnidentifiedImageError and whatever a damaged header raises
    raise DataError(f'{where}: cannot read it as an image: not a {format_names(formats)} file (the '
                    f'formats read here)') from None
  width, height = image.size
  if width < 1 or height < 1:
    image.close()
    raise DataError(f'{where}: a {width}x{height} image has no pixels')
  if width * height > MAX_PIXELS:
    image.close()
    raise DataError(f'{where}: a {width}x{height} image ({width * height / 1e6:.0f} megapixels) is '
                    f'beyond the limit of {MAX_PIXELS / 1e6:.0f} megapixels per image')
  if max(width, height) > MAX_ASPECT * min(width, height):
    image.close()
    raise DataError(f'{where}: a {width}x{height} image is more than {MAX_ASPECT} times as long '
                    f'as it is wide (the limit of a panorama\'s aspect)')
  return image


def check(source, where: str, formats=DATASET_FORMATS) -> tuple[int, int]:
  """(width, height) of an image file, checked as `decode` checks it, without decoding it."""
  with _open(source, where, formats) as image:
    return image.size


def _is_grey(image: Image.Image) -> bool:
  if image.mode in _GREY_MODES:
    return True
  if image.mode == 'P':
    rgb = np.asarray(image.convert('RGB'))
    return bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))
  return False


def _to_array(image: Image.Image, channels: int | None) -> np.ndarray:
  """uint8 (H, W, C): C = `channels`, or 1 for a grey image and 3 otherwise; alpha dropped."""
  if image.mode in _SIXTEEN_BIT:  # the high byte, whatever the values: the same scale everywhere
    grey = (np.asarray(image, np.int64) >> 8).clip(0, 255).astype(np.uint8)[..., None]
    return to_channels(grey, 3) if channels == 3 else grey
  grey = _is_grey(image) if channels is None else channels == 1
  return np.asarray(image.convert('L'))[..., None] if grey else np.asarray(image.convert('RGB'))


def resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 (H, W, C) resized to `size` (width, height): bilinear, antialiased, per channel."""
  if (x.shape[1], x.shape[0]) == tuple(size):
    return x
  planes = [Image.fromarray(np.ascontiguousarray(x[..., c])).resize(size, Image.Resampling.BILINEAR)
            for c in range(x.shape[-1])]
  return np.stack([np.asarray(p) for p in planes], axis=-1)


def decode(source, where: str, formats=DATASET_FORMATS, *, channels: int | None = None,
           size: tuple[int, int] | None = None,
           at_least: tuple[int, int] | None = None) -> np.ndarray:
  """The image in `source` (a path or a file object) as uint8 (H, W, C).

  `channels`: 1 or 3, or None for 1 when the image is grey and 3 otherwise. `size` (width,
  height): resized to exactly that. `at_least` (width, height): decoded at a reduced scale no
  smaller than that where the format allows (JPEG), for a caller that resizes later. `where`
  names the file in errors.
  """
  with _open(source, where, formats) as image:
    target = size or at_least
    try:
      if target and image.format == 'JPEG':
        image.draft(image.mode, tuple(target))  # decodes at 1/2, 1/4 or 1/8 scale if that suffices
      image.load()
      x = _to_array(image, channels)
    except DataError:
      raise
    except Exception as e:  # truncated data, a bad chunk, a decompression bomb ...
      raise DataError(f'{where}: cannot read it as an image: a damaged {image.format} file '
                      f'({type(e).__name__})') from None
  return resize(x, tuple(size)) if size else x


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
  """uint8 (H, W, c) -> uint8 (H, W, channels), by `preprocess.channel_rule`: grey copied to every
  channel, RGB made grey by `preprocess.GREY_WEIGHTS` (rounded to uint8)."""
  rule = preprocess.channel_rule(x.shape[-1], channels)
  if rule is None:
    raise DataError(f'cannot give a {x.shape[-1]}-channel image to a run on '
                    f'{channels}-channel images')
  if rule == 'tile':
    return np.repeat(x, channels, axis=-1)
  if rule == 'grey':
    grey = np.round(x.astype(np.float32) @ preprocess.GREY_WEIGHTS)
    return np.clip(grey, 0, 255).astype(np.uint8)[..., None]
  return x


def as_example(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
  """A decoded uint8 (h, w, c) image as an example of a dataset of (H, W, C) images: resized as
  the folder reader resizes (`resize`), then given the dataset's channels (`to_channels`), in the
  folder reader's order. A file so treated is the array a folder dataset of that shape holds."""
  height, width, channels = shape
  return to_channels(resize(image, (width, height)), channels)
