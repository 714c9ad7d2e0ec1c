"""config.conv_impl='auto' on the machine at hand: the faster of XLA's convolution, im2col and (for
the train step, where its kernel is available and there is one device) ffi_wgrad, for the train step
and, separately, the eval step, measured once and cached (as cuDNN's benchmark mode does). The eval
step has no weight gradient, and ffi_wgrad's forward pass is XLA's: it is not measured there.

Which wins depends on the model and the CPU (one 2-core machine: ResNet-20 trains faster with XLA's
convolution, VGG-11-BN five times faster with im2col), so a fixed rule loses somewhere. GPUs and
TPUs keep XLA's convolution without measuring; explicit choices are never measured, and
'im2col_bf16', which changes results, is only ever an explicit choice. CNN_ZOO_CONV_AUTO=fixed
keeps the fixed rule instead (`mode`).

Only runs (`loop`) and the step benchmark call `choose`; a model built elsewhere with 'auto'
computes with `conv.resolve('auto')`. The cache is one JSON file,
$CNN_ZOO_CACHE_DIR/conv_impl.json (default ~/.cache/cnn_zoo/), keyed by the machine (CPU model,
the instruction sets that matter, core count), the JAX version, the code of the implementations
(`code_digest`: a choice measured before a change to them is measured again), the model and its
shapes, dtype, remat and the step; a damaged file is ignored with a warning and rewritten. A run
records its choice in WORKDIR/conv_impl.json and a resumed run holds to it, so that it computes as
it began.
"""

import dataclasses
import hashlib
import inspect
import json
import os
import platform
import time

from absl import logging
import jax
import jaxlib
import numpy as np

from cnn_zoo import errors, run_files
from cnn_zoo.models import conv
from cnn_zoo.models import conv_wgrad
from cnn_zoo.train import build as build_lib

CANDIDATES = ('xla', 'im2col')  # every step's; `candidates` adds ffi_wgrad to the train step's
MODES = ('measure', 'fixed')
KINDS = ('train', 'eval')
WARMUP, ROUNDS = 2, 3  # steps per candidate before timing; timed steps, alternating candidates
CACHE_FILE = run_files.CONV_IMPL  # the cache has the name of the run's record
WORKDIR_FILE = run_files.CONV_IMPL
# CPU flags that change which implementation wins (vector width, bfloat16 and matrix units).
_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile', 'asimd', 'sve')


@dataclasses.dataclass(frozen=True)
class Choice:
  """The concrete implementations of a run's train and eval steps, and where they came from:
  'config' (explicit), 'platform' (GPU/TPU, several processes), 'cache', 'measured', 'workdir'."""
  train: str
  eval: str
  source: str

  @property
  def impls(self) -> tuple[str, str]:
    return self.train, self.eval


def machine() -> str:
  """The CPU model, the flags in _FLAGS it has, and its core count."""
  name, flags = '', set()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name' and not name:
          name = value.strip()
        elif key.strip() in ('flags', 'Features') and not flags:
          flags = set(value.split())
  except OSError:
    name = platform.processor() or platform.machine()
  return f'{name} [{" ".join(f for f in _FLAGS if f in flags)}] x{os.cpu_count()}'


def mode() -> str:
  """$CNN_ZOO_CONV_AUTO: 'measure' (the default) or 'fixed' ('auto' keeps `conv.resolve`'s rule
  without measuring: the test suite, or results that must not depend on the machine's timing)."""
  value = os.environ.get('CNN_ZOO_CONV_AUTO') or 'measure'
  if value not in MODES:
    raise errors.ConfigError(f'CNN_ZOO_CONV_AUTO={value!r} is not valid; valid choices: '
                             f'{", ".join(MODES)}')
  return value


def cache_path() -> str:
  directory = os.environ.get('CNN_ZOO_CACHE_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'cnn_zoo')
  return os.path.join(directory, CACHE_FILE)


def code_digest() -> str:
  """A digest of the convolution implementations' source (cnn_zoo/models/conv.py, conv_wgrad.py
  and the weight-gradient kernel's C++)."""
  text = inspect.getsource(conv) + inspect.getsource(conv_wgrad) + conv_wgrad.source_text()
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def candidates(kind: str) -> tuple[str, ...]:
  """What `measure` times for a step of `kind`: ffi_wgrad only for the train step, on one device
  (over a mesh its call is gathered onto every device: right, but no faster; conv_wgrad's
  docstring), and only where its kernel builds and passes its check here."""
  if kind == 'train' and jax.device_count() == 1 and conv_wgrad.available():
    return CANDIDATES + ('ffi_wgrad',)
  return CANDIDATES


def step_key(config, plan: build_lib.Plan, kind: str) -> str:
  """What the measurement of one step depends on, as a string."""
  batch = plan.batch_size if kind == 'train' else plan.eval_batch_size
  return json.dumps({
      'machine': machine(), 'jax': jax.__version__, 'jaxlib': jaxlib.__version__,
      'conv_code': code_digest(), 'devices': jax.device_count(), 'model': config.model,
      'model_kwargs': config.model_kwargs.to_dict(), 'input_shape': list(plan.input_shape),
      'num_classes': plan.num_classes, 'batch_size': batch, 'dtype': config.dtype,
      'remat': config.remat, 'step': kind}, sort_keys=True)


def _read_json(path: str) -> dict:
  """The JSON object in `path`; {} if there is none, with a warning if it is damaged."""
  try:
    return run_files.read_object(path) or {}
  except run_files.Unreadable as e:
    logging.warning('ignoring %s (%s); measuring again and rewriting it', path, e.reason)
    return {}


def _write_json(path: str, data: dict) -> None:
  """Written whole and renamed, so that a reader never sees half a file (the cache: by any number
  of processes at once)."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  run_files.write_json(path, data, shared=True, sort_keys=True)


def measure(config, plan: build_lib.Plan, kinds) -> dict:
  """{kind: {impl: seconds}}: the fastest of ROUNDS timed steps of each candidate on random data,
  after WARMUP steps, the candidates alternating so that a change in the machine's load falls on
  both."""
  rng = np.random.default_rng(0)
  steps = {}
  impls = {kind: candidates(kind) for kind in kinds}
  for impl in dict.fromkeys(i for kind in kinds for i in impls[kind]):
    built = build_lib.build(config, plan, conv_impls=(impl, impl))
    holder = [built.init()]
    for kind in (kind for kind in kinds if impl in impls[kind]):
      batch_size = plan.batch_size if kind == 'train' else plan.eval_batch_size
      batch = {'image': rng.standard_normal((batch_size, *plan.input_shape), np.float32),
               'label': rng.integers(0, plan.num_classes, batch_size).astype(np.int32)}
      if kind == 'train':
        fn = built.compile_train(holder[0])

        def step(fn=fn, batch=jax.device_put(batch, built.batch_sharding), holder=holder):
          holder[0], metrics = fn(holder[0], batch)  # the state is donated
          return metrics
      else:
        fn = built.compile_eval(holder[0])
        batch = jax.device_put({**batch, 'mask': np.ones(batch_size, np.float32)},
                               built.batch_sharding)
        step = lambda fn=fn, batch=batch, holder=holder: fn(holder[0], batch)
      for _ in range(WARMUP):
        jax.block_until_ready(step())
      steps[kind, impl] = step
  times = {key: [] for key in steps}
  for _ in range(ROUNDS):
    for key, step in steps.items():
      start = time.perf_counter()
      jax.block_until_ready(step())
      times[key].append(time.perf_counter() - start)
  return {kind: {impl: min(times[kind, impl]) for impl in impls[kind]} for kind in kinds}


def choose(config, plan: build_lib.Plan, measure_fn=None) -> Choice:
  """The implementations for config's train and eval steps under `plan`: config.conv_impl if
  explicit, XLA's on GPU and TPU (the fixed rule with CNN_ZOO_CONV_AUTO=fixed), else the cached or
  (once) measured faster one on this CPU.
  `measure_fn` replaces `measure` (tests)."""
  impl = config.conv_impl
  if impl != 'auto':
    conv.resolve(impl)  # a ValueError naming the valid choices
    return Choice(impl, impl, 'config')
  if mode() == 'fixed' or jax.default_backend() != 'cpu' or jax.process_count() > 1:
    # Several processes would each measure and might disagree: they keep the fixed rule.
    static = conv.resolve('auto')
    return Choice(static, static, 'platform')
  path = cache_path()
  cache = _read_json(path)
  keys = {kind: step_key(config, plan, kind) for kind in KINDS}
  valid = lambda entry: isinstance(entry, dict) and entry.get('choice') in conv.CONCRETE_IMPLS
  missing = [kind for kind in KINDS if not valid(cache.get(keys[kind]))]
  if missing:
    started = time.perf_counter()
    times = (measure_fn or measure)(config, plan, missing)
    took = time.perf_counter() - started  # compiling the candidates, mostly
    cache = _read_json(path)  # another process may have added entries meanwhile
    for kind in missing:
      seconds = times[kind]
      cache[keys[kind]] = {'choice': min(seconds, key=seconds.get), 'seconds': seconds,
                           'measured_in_s': took, 'date': time.strftime('%Y-%m-%d')}
    try:
      _write_json(path, cache)
    except OSError as e:  # a read-only home: the choice stands, measured again next time
      logging.warning('cannot write %s (%s); the measured choice is used but not kept', path,
                      e.strerror)
    logging.info('conv_impl=auto: measured %s in %.1fs: %s', ', '.join(missing), took,
                 '; '.join(f'{kind} ' + ', '.join(f'{i} {1e3 * s:.1f} ms'
                                                  for i, s in times[kind].items())
                           for kind in missing))
  return Choice(cache[keys['train']]['choice'], cache[keys['eval']]['choice'],
                'measured' if missing else 'cache')


def for_run(config, plan: build_lib.Plan, workdir: str, write: bool, resuming: bool) -> Choice:
  """The run's choice: the one WORKDIR/conv_impl.json recorded when the run began, else `choose`'s,
  recorded there (by the lead process: `write`). A run resumed from a version that kept no record
  computed with the fixed rule, and holds to it."""
  path = run_files.path(workdir, WORKDIR_FILE)
  if config.conv_impl == 'auto':
    saved = _read_json(path)
    if saved.get('conv_impl') == 'auto' and all(
        saved.get(f'conv_impl_{kind}') in conv.CONCRETE_IMPLS for kind in KINDS):
      return Choice(saved['conv_impl_train'], saved['conv_impl_eval'], 'workdir')
  if config.conv_impl == 'auto' and resuming and not os.path.exists(path):
    static = conv.resolve('auto')
    choice = Choice(static, static, 'workdir')
  else:
    choice = choose(config, plan)
  if write:
    _write_json(path, {'conv_impl': config.conv_impl, 'conv_impl_train': choice.train,
                       'conv_impl_eval': choice.eval, 'source': choice.source,
                       'machine': machine()})
  return choice


def recorded_eval(workdir: str, conv_impl: str) -> str:
  """The eval implementation a run in `workdir` chose (a reader reloads with it); `conv_impl`
  if the run chose nothing, or chose it explicitly."""
  path = run_files.path(workdir, WORKDIR_FILE)
  if conv_impl != 'auto' or not os.path.exists(path):
    return conv_impl
  saved = _read_json(path)
  impl = saved.get('conv_impl_eval')
  return impl if impl in conv.CONCRETE_IMPLS else conv_impl
