"""State dicts on disk: `.safetensors` and `.npz` read and written with numpy alone, `.pth` through
PyTorch when it is installed (an optional dependency: `pip install torch==2.13.0`).

A `.safetensors` file is an 8-byte little-endian header length, a JSON header mapping each name to
its dtype, shape and byte range, then the raw little-endian bytes (the format of huggingface's
safetensors package), so it needs no library to read or write.
"""

import json
import math
import os
import struct
from typing import Mapping

import numpy as np

from cnn_zoo import errors, run_files

FORMATS = ('.pth', '.pt', '.safetensors', '.npz')
TORCH_INSTALL = 'pip install torch==2.13.0'

_SAFETENSORS_DTYPES = {'F64': '<f8', 'F32': '<f4', 'F16': '<f2', 'BF16': 'bfloat16',
                       'I64': '<i8', 'I32': '<i4', 'I16': '<i2', 'I8': 'i1', 'U8': 'u1',
                       'BOOL': '?'}
_MAX_HEADER = 100 * 2**20


def _format(path: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  if ext not in FORMATS:
    raise errors.ConfigError(f'{path}: unknown state dict format {ext or "(no extension)"!r}; '
                             f'valid choices: {", ".join(FORMATS)}')
  return ext


def read(path: str) -> dict[str, np.ndarray]:
  """The tensors of a state dict file as numpy arrays (bfloat16 and float16 as float32)."""
  ext = _format(path)
  if not os.path.isfile(path):
    raise errors.NotFoundError(f'state dict file not found: {path}')
  if ext == '.npz':
    state = _read_npz(path)
  elif ext == '.safetensors':
    state = _read_safetensors(path)
  else:
    state = _read_torch(path)
  if not state:
    raise errors.DataError(f'{path}: holds no tensors')
  _check_values(path, state)
  return state


def _check_values(path: str, state: Mapping[str, np.ndarray]) -> None:
  """Refuses tensors that are not real numbers, and NaN or Inf weights, naming the key: a model
  converted from them would predict nothing, silently."""
  for key, value in state.items():
    if value.dtype.kind not in 'biuf':
      raise errors.DataError(f'{path}: tensor {key!r} holds {value.dtype} values, not numbers')
    if value.dtype.kind == 'f' and not np.isfinite(value).all():
      bad = int(value.size - np.isfinite(value).sum())
      raise errors.DataError(f'{path}: tensor {key!r} holds {bad:,} NaN or infinite value(s) of '
                             f'{value.size:,}')


def write(state: Mapping[str, np.ndarray], path: str) -> None:
  """Writes a state dict of numpy arrays as .npz, .safetensors or (with PyTorch) .pth/.pt."""
  ext = _format(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if ext == '.npz':
    fill = lambda f: np.savez(f, **state)
  elif ext == '.safetensors':
    fill = lambda f: _write_safetensors(state, f)
  else:
    torch = _torch(path)
    fill = lambda f: torch.save({k: torch.from_numpy(np.ascontiguousarray(v))
                                 for k, v in state.items()}, f)
  run_files.write_file(path, fill)


def _read_npz(path: str) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: _float32(f[k]) for k in f.files}
  except Exception as e:  # a truncated or corrupt zip, or not an npz at all
    raise errors.DataError(f'{path}: cannot read it as an npz state dict '
                           f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})') \
        from None


def _float32(a: np.ndarray) -> np.ndarray:
  return a.astype(np.float32) if a.dtype.kind == 'f' and a.dtype != np.float32 else a


def _itemsize(dtype: str) -> int:
  return 2 if dtype == 'BF16' else np.dtype(_SAFETENSORS_DTYPES[dtype]).itemsize


def _unique_keys(pairs):
  keys = [k for k, _ in pairs]
  if len(set(keys)) < len(keys):
    raise ValueError(f'the name {next(k for k in keys if keys.count(k) > 1)!r} appears twice')
  return dict(pairs)


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  def bad(reason):
    return errors.DataError(f'{path}: not a readable .safetensors file ({reason})')

  with open(path, 'rb') as f:
    raw = f.read(8)
    if len(raw) < 8:
      raise bad('shorter than its 8-byte header length')
    (size,) = struct.unpack('<Q', raw)
    if size > _MAX_HEADER:
      raise bad(f'a header of {size:,} bytes')
    try:
      header = json.loads(f.read(size), object_pairs_hook=_unique_keys)
    except ValueError as e:
      raise bad(f'header: {e}') from None
    data = memoryview(f.read())  # slices without copies
  if not isinstance(header, dict):
    raise bad('its header is not a JSON object')
  spans, state = [], {}
  for name, info in header.items():
    if name == '__metadata__':
      continue
    if not isinstance(info, dict) or not {'dtype', 'shape', 'data_offsets'} <= set(info):
      raise bad(f'tensor {name!r} has no dtype, shape and data_offsets')
    dtype, shape, offsets = info['dtype'], info['shape'], info['data_offsets']
    if not isinstance(dtype, str) or dtype not in _SAFETENSORS_DTYPES:
      raise bad(f'tensor {name!r} has dtype {dtype!r}; readable: {", ".join(_SAFETENSORS_DTYPES)}')
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
      raise bad(f'tensor {name!r} has shape {shape!r}; a shape is a list of integers >= 0')
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
      raise bad(f'tensor {name!r} has data_offsets {offsets!r}; they are [start, end] in bytes')
    start, end = offsets
    if not 0 <= start <= end <= len(data):
      raise bad(f'tensor {name!r} lies beyond the end of the file (truncated?)')
    want = math.prod(shape) * _itemsize(dtype)
    if end - start != want:
      raise bad(f'tensor {name!r} has {end - start:,} bytes for shape {tuple(shape)} of {dtype} '
                f'({want:,} bytes)')
    spans.append((start, end, name))
  spans.sort()
  for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
    if start < end:
      raise bad(f'tensors {first!r} and {second!r} overlap in the file')
  for start, end, name in spans:
    dtype, shape = header[name]['dtype'], tuple(header[name]['shape'])
    chunk = data[start:end]
    if dtype == 'BF16':  # bfloat16 is the top half of a float32
      array = (np.frombuffer(chunk, '<u2').astype(np.uint32) << 16).view(np.float32)
    else:
      array = np.frombuffer(chunk, _SAFETENSORS_DTYPES[dtype])
    state[name] = _float32(array.reshape(shape).astype(array.dtype.newbyteorder('=')))
  return {name: state[name] for name in header if name in state}  # the file's order


def _write_safetensors(state: Mapping[str, np.ndarray], f) -> None:
  names = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items() if v != 'bfloat16'}
  header, offset, arrays = {}, 0, []
  for key, value in state.items():
    value = np.ascontiguousarray(value)
    little = value.astype(value.dtype.newbyteorder('<'))
    dtype = names.get(little.dtype) or names.get(value.dtype)
    if dtype is None:
      raise errors.DataError(f'{key}: cannot write dtype {value.dtype} to .safetensors')
    header[key] = {'dtype': dtype, 'shape': list(value.shape),
                   'data_offsets': [offset, offset + little.nbytes]}
    offset += little.nbytes
    arrays.append(little)
  text = json.dumps(header, separators=(',', ':')).encode()
  text += b' ' * (-len(text) % 8)  # the data starts 8-byte aligned
  f.write(struct.pack('<Q', len(text)))
  f.write(text)
  for a in arrays:
    f.write(a.tobytes())


def _torch(path: str):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.ConfigError(f'{path}: reading and writing .pth files needs PyTorch, not '
                             f'installed here: `{TORCH_INSTALL}` (or give a .safetensors or .npz '
                             f'state dict, which need no PyTorch)') from None
  return torch


def _read_torch(path: str) -> dict[str, np.ndarray]:
  torch = _torch(path)
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  (truncated, corrupt, or not torch's)
    first = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise errors.DataError(f'{path}: cannot read it as a PyTorch state dict '
                           f'({type(e).__name__}: {first[:200]})') from None
  # A training checkpoint often wraps the state dict.
  for wrapper in ('state_dict', 'model', 'model_state_dict'):
    if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
      loaded = loaded[wrapper]
      break
  if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
    raise errors.DataError(f'{path}: holds a {type(loaded).__name__}, not a state dict (a dict of '
                           f'tensors, as model.state_dict() returns)')
  out = {}
  for key, tensor in loaded.items():
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype != torch.float64:
      tensor = tensor.float()
    out[key] = _float32(tensor.numpy())
  return out
