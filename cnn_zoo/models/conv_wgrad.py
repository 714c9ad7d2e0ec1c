"""conv_impl='ffi_wgrad': XLA's convolution and input gradient, with the weight gradient computed by
a CPU kernel of the project's own (kernels/conv_wgrad.cc) called through jax.ffi.

XLA:CPU lowers a weight gradient as a convolution whose window is the whole output image, which
runs at a fraction of the forward pass's speed (docs/performance.md, "The weight gradients on
CPU"). The kernel instead accumulates, for each kernel tap, x_shifted^T . dy over the batch and
output positions in registers (no patches), on XLA's own intra-op thread pool.

Built at first use with the machine's C++ compiler ($CXX, else g++) into $CNN_ZOO_CACHE_DIR/kernels
(default ~/.cache/cnn_zoo), named by a digest of the source, the compiler and its flags
(-march=native), the CPU's feature flags and the JAX version; loaded with ctypes, registered with
`jax.ffi.register_ffi_target`, then checked against XLA's weight gradient on small cases.
`available()` is False, with one warning line saying why, where any of that fails (no compiler, a
CPU other than x86-64 with AVX2 and FMA, a build error, a failed check) or where JAX's default
backend is not the CPU; the convolution is then XLA's (`conv.conv_module`).

Several devices: an `ffi_call` has no sharding rule, so under jit over a mesh XLA's partitioner
gathers its operands onto each device and each computes the whole (right) gradient, without the
mesh's speed-up; `conv_impl='auto'` therefore never chooses it where there are several devices
(`cnn_zoo.train.autoconv`), and tests/test_conv_wgrad.py checks the gradient over two devices.
"""

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

from absl import logging
import jax
from jax import lax
import jax.numpy as jnp
import jaxlib
import numpy as np

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'kernels', 'conv_wgrad.cc')
TARGET = 'cnn_zoo_conv_wgrad'
SYMBOL = 'CnnZooConvWgrad'
FLAGS = ('-O3', '-march=native', '-std=c++17', '-shared', '-fPIC', '-w')
# flax's dimension numbers for 2-D convolutions (NHWC input, HWIO kernel, NHWC output).
NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


class Unavailable(RuntimeError):
  """Why the kernel cannot be used here (one line)."""


def source_text() -> str:
  with open(SOURCE, encoding='utf-8') as f:
    return f.read()


def _cpu_flags() -> set:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() in ('flags', 'Features'):
          return set(value.split())
  except OSError:
    pass
  return set()


def compiler() -> str | None:
  return shutil.which(os.environ.get('CXX') or 'g++')


def cache_dir() -> str:
  return os.path.join(os.environ.get('CNN_ZOO_CACHE_DIR') or
                      os.path.join(os.path.expanduser('~'), '.cache', 'cnn_zoo'), 'kernels')


def build_key(cxx: str) -> str:
  """The digest naming a build: source, compiler and flags, CPU features, JAX version."""
  try:
    version = subprocess.run([cxx, '--version'], capture_output=True, text=True, timeout=60,
                             check=False).stdout.splitlines()[:1]
  except (OSError, subprocess.SubprocessError):
    version = []
  parts = [source_text(), cxx, *version, *FLAGS, ' '.join(sorted(_cpu_flags())),
           platform.machine(), jax.__version__, jaxlib.__version__]
  return hashlib.sha256('\0'.join(parts).encode()).hexdigest()[:20]


def build() -> str:
  """The path of the built library, compiling it if this key has none yet; `Unavailable` if it
  cannot be built here."""
  if platform.machine().lower() not in ('x86_64', 'amd64'):
    raise Unavailable(f'the kernel is for x86-64 CPUs, this is {platform.machine()}')
  missing = {'avx2', 'fma'} - _cpu_flags()
  if missing:
    raise Unavailable(f'the CPU lacks {", ".join(sorted(missing))}')
  cxx = compiler()
  if cxx is None:
    raise Unavailable(f'no C++ compiler ({os.environ.get("CXX") or "g++"}) on PATH')
  out_dir = cache_dir()
  path = os.path.join(out_dir, f'conv_wgrad-{build_key(cxx)}.so')
  if os.path.exists(path):
    return path
  try:
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=out_dir)
    os.close(fd)
  except OSError as e:
    raise Unavailable(f'cannot write to {out_dir} ({e.strerror})') from e
  command = [cxx, *FLAGS, '-I', jax.ffi.include_dir(), SOURCE, '-o', tmp]
  try:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
  except (OSError, subprocess.SubprocessError) as e:
    os.unlink(tmp)
    raise Unavailable(f'{cxx} failed to run ({e})') from e
  if result.returncode != 0:
    os.unlink(tmp)
    first = next((line for line in result.stderr.splitlines() if 'error' in line), '')
    raise Unavailable(f'{cxx} exited {result.returncode}: {first.strip()[:200]}')
  os.replace(tmp, path)  # another process building the same key writes the same file
  logging.info('conv_impl=ffi_wgrad: built %s', path)
  return path


def _pads(padding, lhs_shape, rhs_shape, strides):
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs_shape[1:3], rhs_shape[:2], strides, padding)
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def weight_grad(x, dy, kernel_shape, strides, padding, groups=1):
  """dW (HWIO, `kernel_shape`) of conv(x, W) for the output gradient dy: the kernel's FFI call.
  `padding` is explicit ((top, bottom), (left, right))."""
  (sh, sw), ((pt, _), (pl, _)) = strides, padding
  call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(tuple(kernel_shape), jnp.float32),
                          vmap_method='sequential')
  return call(x, dy, sh=np.int64(sh), sw=np.int64(sw), pt=np.int64(pt), pl=np.int64(pl),
              groups=np.int64(groups))


def _xla_conv(lhs, rhs, strides, padding, groups, precision):
  return lax.conv_general_dilated(lhs, rhs, strides, padding, dimension_numbers=NHWC,
                                  feature_group_count=groups, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(lhs, rhs, strides, padding, groups, precision):
  return _xla_conv(lhs, rhs, strides, padding, groups, precision)


def _conv_fwd(lhs, rhs, strides, padding, groups, precision):
  return _xla_conv(lhs, rhs, strides, padding, groups, precision), (lhs, rhs)


def _conv_bwd(strides, padding, groups, precision, res, g):
  lhs, rhs = res
  _, input_vjp = jax.vjp(lambda l: _xla_conv(l, rhs, strides, padding, groups, precision), lhs)
  (dx,) = input_vjp(g)
  return dx, weight_grad(lhs, g, rhs.shape, strides, padding, groups)


_conv.defvjp(_conv_fwd, _conv_bwd)


def supports(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers, batch_group_count,
             preferred_element_type) -> bool:
  """Whether the kernel computes this convolution's weight gradient: 2-D, NHWC/HWIO, float32, no
  dilation, no batch groups, no negative padding."""
  if lhs.ndim != 4 or rhs.ndim != 4 or lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
    return False
  if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
    return False
  if batch_group_count != 1 or preferred_element_type not in (None, jnp.float32):
    return False
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  if dn != NHWC:
    return False
  return isinstance(padding, str) or all(lo >= 0 and hi >= 0 for lo, hi in padding)


def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
         preferred_element_type=None):
  """`lax.conv_general_dilated` (for a case `supports` accepts) whose weight gradient is the
  kernel's; forward and input gradient are XLA's."""
  strides = tuple(int(s) for s in window_strides)
  pads = _pads(padding, lhs.shape, rhs.shape, strides)
  return _conv(lhs, rhs, strides, pads, int(feature_group_count), precision)


# Small cases the loaded kernel must reproduce XLA's weight gradient on: both vector paths (one
# and two vectors of output channels, a partial vector), channel tiles with a remainder, strides,
# uneven padding, groups, a kernel larger than the stride, a 1x1 strided shortcut.
CHECK_CASES = (
    # (N, H, W, Cin, Cout, kh, kw, strides, padding, groups)
    (3, 9, 7, 5, 20, 3, 3, (2, 1), ((1, 2), (0, 1)), 1),
    (2, 8, 8, 26, 40, 3, 3, (1, 1), ((1, 1), (1, 1)), 1),
    (2, 11, 11, 3, 7, 5, 5, (2, 2), ((2, 2), (2, 2)), 1),
    (2, 6, 6, 8, 12, 3, 3, (1, 1), ((1, 1), (1, 1)), 4),
    (2, 6, 6, 16, 32, 1, 1, (2, 2), ((0, 0), (0, 0)), 1),
)


def reference_weight_grad(x, dy, kernel_shape, strides, padding, groups=1):
  """XLA's weight gradient of the same convolution (what the kernel must equal)."""
  w = jnp.zeros(kernel_shape, x.dtype)
  _, vjp = jax.vjp(lambda w: _xla_conv(x, w, strides, padding, groups, lax.Precision.HIGHEST), w)
  return vjp(dy)[0]


def self_check() -> None:
  """Raises `Unavailable` unless the registered kernel equals XLA's weight gradient on CHECK_CASES."""
  rng = np.random.default_rng(0)
  with jax.ensure_compile_time_eval():
    for n, h, w, cin, cout, kh, kw, strides, padding, groups in CHECK_CASES:
      x = rng.standard_normal((n, h, w, cin), np.float32)
      kernel_shape = (kh, kw, cin // groups, cout)
      y = jax.eval_shape(lambda x, k, s=strides, p=padding, g=groups: _xla_conv(x, k, s, p, g, None),
                         x, jax.ShapeDtypeStruct(kernel_shape, jnp.float32))
      dy = rng.standard_normal(y.shape, np.float32)
      got = np.asarray(weight_grad(x, dy, kernel_shape, strides, padding, groups))
      want = np.asarray(reference_weight_grad(x, dy, kernel_shape, strides, padding, groups))
      err = float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-30))
      if not err <= 1e-5:
        raise Unavailable(f'the self-check failed on {kernel_shape} stride {strides} padding '
                          f'{padding} groups {groups}: relative error {err:.2e}')


_REGISTERED = {}  # the library registered as TARGET in this process: {'path': ..., 'library': ...}


def _register(path: str) -> None:
  """Loads the library and registers its handler as TARGET, once per process (XLA keeps the
  first registration of a name)."""
  if _REGISTERED and os.path.basename(_REGISTERED['path']) == os.path.basename(path):
    return  # the same build key (source, flags, machine, versions), built in another cache folder
  if _REGISTERED:
    raise Unavailable(f'{TARGET} is already registered from {_REGISTERED["path"]}')
  try:
    library = ctypes.CDLL(path)
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(getattr(library, SYMBOL)),
                                platform='cpu')
  except (OSError, AttributeError) as e:
    raise Unavailable(f'cannot load {path} ({e})') from e
  _REGISTERED.update(path=path, library=library)  # the library stays loaded while registered


@functools.cache
def _load() -> str | None:
  """Builds, loads, registers and checks the kernel once per process: None if it can be used, else
  why not (logged once)."""
  try:
    if jax.default_backend() != 'cpu':
      raise Unavailable(f"JAX's default backend is {jax.default_backend()}, the kernel is for CPU")
    _register(build())
    self_check()
    return None
  except Unavailable as e:
    logging.warning("conv_impl=ffi_wgrad: %s; XLA's weight gradient is used instead", e)
    return str(e)


def available() -> bool:
  """Whether the kernel is built, registered and checked here (at most one build per process)."""
  return _load() is None


def unavailable_reason() -> str | None:
  return _load()
