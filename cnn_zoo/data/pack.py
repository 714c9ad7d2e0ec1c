"""A dataset as one compact file of JPEGs, to carry where 171 MB of raw CIFAR-10 cannot go.

`pack` encodes every image of an npz dataset as a JPEG (Pillow) and stores the encoded bytes, their
offsets and the labels in one uncompressed .npz; `unpack` decodes it back to the four arrays an
`npz:` dataset holds, with numpy and Pillow only. JPEG is lossy: `pack` reports the mean absolute
pixel difference it introduced, and a round trip is only as exact as that.

Both directions refuse to write over their input, and over any existing file unless `overwrite`;
they write whole (a temporary file renamed). Packed images are decoded by `images.decode` (PNG and
JPEG only, bounded in size), as training's folder reader decodes.
"""

import io
import os
import zipfile

import numpy as np
from PIL import Image

from cnn_zoo import errors, output_paths, run_files
from cnn_zoo.data import images
from cnn_zoo.errors import DataError

SPLITS = ('train', 'test')


def _encode(image: np.ndarray, quality: int) -> bytes:
  buffer = io.BytesIO()
  mode = 'L' if image.shape[-1] == 1 else 'RGB'
  Image.fromarray(image[..., 0] if mode == 'L' else image, mode).save(
      buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def _decode(data: bytes, channels: int, where: str) -> np.ndarray:
  return images.decode(io.BytesIO(data), where, images.DATASET_FORMATS, channels=channels)


def _check_output(in_path: str, out_path: str, what: str, overwrite: bool) -> None:
  """Refuses an output that is the input (under any name) or, without `overwrite`, any existing
  file, before the work that would fill it."""
  if os.path.exists(out_path) and os.path.exists(in_path) and os.path.samefile(in_path, out_path):
    raise errors.ConfigError(f'{what}={out_path} is the input file itself; write elsewhere')
  if os.path.lexists(out_path) and not overwrite:
    raise errors.ConfigError(f'{what}={out_path} exists; give --overwrite to replace it')
  output_paths.writable_file(out_path, what)


def pack(npz_path: str, out_path: str, quality: int = 75, overwrite: bool = False) -> dict:
  """Writes `out_path` (.npz) from the npz dataset at `npz_path`; returns its size and error."""
  if not 1 <= quality <= 95:
    raise DataError(f'quality={quality} is out of range; it must be in 1..95 (Pillow JPEG)')
  _check_output(npz_path, out_path, '--packed', overwrite)
  try:
    with np.load(npz_path) as arrays:
      data = {k: arrays[k] for k in arrays.files}
    missing = [k for k in ('x_train', 'y_train', 'x_test', 'y_test') if k not in data]
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise DataError(f'{npz_path}: cannot read it as an npz file ({type(e).__name__})') from None
  if missing:
    raise DataError(f'{npz_path}: missing array(s) {", ".join(missing)}')
  out, stats = {}, {'images': 0, 'abs_error_sum': 0.0, 'pixels': 0}
  for split in SPLITS:
    pictures, labels = data[f'x_{split}'], data[f'y_{split}']
    encoded = [_encode(image, quality) for image in pictures]
    out[f'{split}_bytes'] = np.frombuffer(b''.join(encoded), np.uint8)
    out[f'{split}_offsets'] = np.cumsum([0] + [len(e) for e in encoded]).astype(np.int64)
    out[f'{split}_labels'] = labels
    decoded = np.stack([_decode(e, x.shape[-1], f'{out_path}: x_{split}[{i}]')
                        for i, (e, x) in enumerate(zip(encoded, pictures))])
    stats['abs_error_sum'] += float(np.abs(decoded.astype(np.int16) - pictures).sum())
    stats['pixels'] += pictures.size
    stats['images'] += len(pictures)
  out['shape'] = np.asarray(data['x_train'].shape[1:], np.int64)
  run_files.write_file(out_path, lambda f: np.savez(f, **out), '--packed')  # JPEGs compress no more
  size = sum(out[f'{split}_bytes'].nbytes for split in SPLITS)
  return {'images': stats['images'], 'jpeg_bytes': size,
          'bytes_per_image': size / stats['images'],
          'mean_abs_pixel_error': stats['abs_error_sum'] / stats['pixels'], 'quality': quality}


def unpack(packed_path: str) -> dict[str, np.ndarray]:
  """The x_train, y_train, x_test, y_test arrays of a packed file (uint8 NHWC images)."""
  try:
    with np.load(packed_path) as packed:
      arrays = {k: packed[k] for k in packed.files}
    channels = int(arrays['shape'][-1])
    out = {}
    for split in SPLITS:
      data, offsets = arrays[f'{split}_bytes'].tobytes(), arrays[f'{split}_offsets']
      out[f'x_{split}'] = np.stack([_decode(data[a:b], channels, f'{packed_path}: {split} #{i}')
                                    for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:]))])
      out[f'y_{split}'] = arrays[f'{split}_labels']
  except DataError:
    raise
  except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
    raise DataError(f'{packed_path}: not a packed dataset ({type(e).__name__}: {e})') from None
  return out


def unpack_to_npz(packed_path: str, npz_path: str, overwrite: bool = False) -> None:
  """Decodes a packed file into an npz that `--config.dataset=npz:PATH` reads."""
  _check_output(packed_path, npz_path, '--npz', overwrite)
  arrays = unpack(packed_path)
  run_files.write_file(npz_path, lambda f: np.savez(f, **arrays), '--npz')  # a cut unpack: no npz
