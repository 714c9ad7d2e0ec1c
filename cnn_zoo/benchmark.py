"""Speed of the shared train and eval steps per model, and of the input pipeline and loop.

Every number comes from timing the compiled step on random data of the model's input shape on
whatever devices JAX sees; nothing is estimated except GFLOP/s, which counts training as three
forward passes (forward, input gradient, weight gradient), as is usual.

Host memory per model: `in_child` runs one model in a fresh Python process, which reports the
peak resident memory of its own address space (VmHWM), so no model inherits another's
high-water mark (nor the parent's: the kernel's rusage of a child, `os.wait4`, starts from the
parent's resident memory at the fork); `torch_reference` does the same for the PyTorch
reference script, one process per model; `max_batch` finds the largest batch whose train step
fits a memory budget.
"""

import dataclasses
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import site
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnn_zoo import errors, models, parallel, run_files
from cnn_zoo.models import conv
from cnn_zoo.train import autoconv, build as build_lib
from cnn_zoo.train import config as config_lib
from cnn_zoo.train import replicas as replicas_lib


def default_batch_size(name: str) -> int:
  """128 for the small-image models, 16 for the ImageNet-size ones."""
  return 128 if models.input_shape(name)[0] <= 64 else 16


def _timed(fn, steps: int, min_seconds: float) -> list[float]:
  times = []
  while len(times) < steps or sum(times) < min_seconds:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
    if len(times) >= 10 * steps:
      break
  return times


def peak_rss_mb() -> float:
  """This process's peak resident memory in MiB: its own address space's (VmHWM) where /proc
  has it; getrusage's ru_maxrss otherwise, which also counts the parent's memory at the fork."""
  own = own_peak_bytes()
  if own is not None:
    return own / 2 ** 20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def step_memory_mb(compiled) -> float:
  """Device memory one call of a compiled step needs, by XLA's buffer assignment: arguments
  (state and batch), outputs not written over donated arguments, and temporaries (activations
  kept for the backward pass). The comparable figure to PyTorch's peak allocated memory."""
  m = compiled.memory_analysis()
  total = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
           + m.temp_size_in_bytes)
  return total / 2 ** 20


def device_peak_mb() -> float | None:
  """The allocator's peak so far in this process (GPU, TPU), or None where it keeps none (CPU)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return None if peak is None else peak / 2 ** 20


def matmul_peak_gflop_s(n: int = 2048, steps: int = 10) -> float:
  """The machine's float32 matrix-multiply rate through XLA: a ceiling for the convolutions."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  jax.block_until_ready(matmul(a))
  return 2 * n ** 3 / statistics.median(_timed(lambda: matmul(a), steps, 1.0)) / 1e9


def step_config(name: str, batch_size: int | None = None, dtype: str = 'float32',
                conv_impl: str = 'auto', remat: str = 'none',
                infer_batch_size: int | None = None, devices: bool = True):
  """The config whose step the benchmark times, validated: a wrong model, dtype, conv_impl or
  remat is a one-line ConfigError before anything compiles. `devices=False` leaves out the check
  that the batches divide over the devices, which starts JAX's backend: a parent whose children
  benchmark must leave the accelerator to them (a TPU opens in one process only; on a GPU JAX
  takes 75% of its memory at start-up)."""
  batch_size = batch_size or default_batch_size(name)
  if devices:
    parallel.check_batch_size(batch_size)
    parallel.check_batch_size(infer_batch_size or batch_size, 'infer_batch_size')
  # The step that trains: built as a run builds it, with SGD, momentum 0.9 and weight decay 5e-4
  # at a constant 0.01, as the PyTorch reference.
  config = config_lib.defaults()
  config.model, config.dtype, config.conv_impl, config.remat = name, dtype, conv_impl, remat
  config.batch_size, config.eval_batch_size = batch_size, infer_batch_size or batch_size
  config.schedule, config.learning_rate, config.weight_decay = 'constant', 0.01, 5e-4
  config_lib.validate(config)
  return config


def _random_batch(built, batch_size: int, with_mask: bool, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  batch = {'image': rng.standard_normal((batch_size, *built.plan.input_shape), np.float32),
           'label': rng.integers(0, built.plan.num_classes, batch_size).astype(np.int32)}
  if with_mask:
    batch['mask'] = np.ones(batch_size, np.float32)
  return jax.device_put(batch, built.batch_sharding)


def _build(config, measure_conv: bool = False):
  """The run's build of `config`; with `measure_conv`, 'auto' convolutions resolved as a run
  resolves them (measured on this machine once, then read from the cache)."""
  plan = build_lib.fixed_plan(config, models.spec(config.model).num_classes)
  choice = autoconv.choose(config, plan) if measure_conv else None
  return build_lib.build(config, plan, conv_impls=choice and choice.impls)


def benchmark_model(name: str, batch_size: int | None = None, dtype: str = 'float32',
                    conv_impl: str = 'auto', steps: int = 10, warmup: int = 3,
                    min_seconds: float = 3.0, infer_batch_size: int | None = None,
                    remat: str = 'none', replicas: int = 1) -> dict:
  """Compile time, train and eval images/s (medians over >= `steps` timed steps) of one model;
  with `replicas` > 1, of that many replicas in one step (cnn_zoo.train.replicas): images/s in
  all (`train_img_s`) and per replica (`train_img_s_per_replica`)."""
  config = step_config(name, batch_size, dtype, conv_impl, remat, infer_batch_size)
  check_replicas(replicas)
  batch_size, infer_batch_size = config.batch_size, config.eval_batch_size
  built = _build(config, measure_conv=True)
  counts = built.summary
  if replicas > 1:
    config.seeds = tuple(range(replicas))
    built = replicas_lib.build(dataclasses.replace(built, config=config))
  state = built.init()
  train_batch = _random_batch(built.built if replicas > 1 else built, batch_size, False)
  if replicas > 1:  # every replica its own batch
    train_batch = jax.device_put(
        {k: np.stack([np.asarray(v)] * replicas) for k, v in train_batch.items()},
        built.batch_sharding)
  eval_batch = _random_batch(built.built if replicas > 1 else built, infer_batch_size, True)

  start = time.perf_counter()
  train_step = built.compile_train(state)
  compile_s = time.perf_counter() - start
  eval_step = built.compile_eval(state)

  holder = [state]

  def one_train_step():
    holder[0], metrics = train_step(holder[0], train_batch)
    return metrics['loss']

  for _ in range(warmup):
    one_train_step()
  train_times = _timed(one_train_step, steps, min_seconds)
  for _ in range(warmup):
    jax.block_until_ready(eval_step(holder[0], eval_batch))
  eval_times = _timed(lambda: eval_step(holder[0], eval_batch), steps, min_seconds)

  train_s, eval_s = statistics.median(train_times), statistics.median(eval_times)
  return {
      'params': counts.params, 'fwd_macs': counts.macs, 'batch_size': batch_size,
      'dtype': dtype, 'conv_impl': conv_impl, 'conv_impl_train': built.conv_impls[0],
      'conv_impl_eval': built.conv_impls[1], 'remat': remat, 'replicas': replicas,
      'compile_s': compile_s, 'train_step_s': train_s,
      'train_img_s': replicas * batch_size / train_s,
      'train_img_s_per_replica': batch_size / train_s,
      'train_steps_timed': len(train_times), 'infer_batch_size': infer_batch_size,
      'infer_img_s': replicas * infer_batch_size / eval_s,
      'gflop_s': 3 * 2 * counts.macs * replicas * batch_size / train_s / 1e9,
      # This process's high-water mark, whatever ran in it before: per model only in a child of
      # its own (in_child's peak_mem_bytes).
      'peak_rss_mb': peak_rss_mb(), 'train_step_memory_mb': step_memory_mb(train_step),
      'device_peak_mb': device_peak_mb(),  # cumulative over the process's models
  }


def check_replicas(replicas) -> None:
  if isinstance(replicas, bool) or not isinstance(replicas, int) or \
      not 1 <= replicas <= config_lib.MAX_REPLICAS:
    raise errors.ConfigError(f'--replicas={replicas!r} must be an integer in [1, '
                             f'{config_lib.MAX_REPLICAS}]')


def train_step_peak(name: str, batch_size: int, dtype: str = 'float32', conv_impl: str = 'auto',
                    remat: str = 'none', steps: int = 2) -> dict:
  """Runs `steps` real train steps of one model at `batch_size` (run it `in_child` to read the
  peak memory that took): the second step is the first whose state buffers were donated."""
  built = _build(step_config(name, batch_size, dtype, conv_impl, remat))
  state = built.init()
  train_step = built.compile_train(state)
  batch = _random_batch(built, batch_size, False)
  for _ in range(steps):
    state, metrics = train_step(state, batch)
  jax.block_until_ready(metrics['loss'])
  return {'batch_size': batch_size, 'steps': steps, 'remat': remat,
          'train_step_memory_mb': step_memory_mb(train_step)}


# ---- One model per process: peak memory of its own ----------------------------------------------

def machine_and_peak(peak: bool = True) -> dict:
  """machine(), with the float32 matmul rate as `matmul_peak_gflop_s` if `peak`."""
  out = machine()
  if peak:
    out['matmul_peak_gflop_s'] = matmul_peak_gflop_s()
  return out


_CHILD_FUNCTIONS = {'benchmark_model': benchmark_model, 'train_step_peak': train_step_peak,
                    'machine_and_peak': machine_and_peak}
_CHILD = 'import sys; from cnn_zoo import benchmark; benchmark._child_main(*sys.argv[1:])'


def own_peak_bytes(pid: int | str = 'self') -> int | None:
  """The peak resident memory of a process's own address space since it started (VmHWM), in
  bytes; None where /proc does not say (not Linux, or the process has gone)."""
  try:
    with open(f'/proc/{pid}/status', encoding='utf-8') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) * 1024  # kB
  except (OSError, ValueError):
    pass
  return None


def wait_with_peak(proc: subprocess.Popen, poll_s: float = 0.05) -> tuple[int, int]:
  """Waits for a child started with subprocess.Popen: its exit code (negative: the signal that
  killed it) and the highest of its own peak resident memory sampled while it ran, a lower bound
  that can miss growth in its last `poll_s` (the child's own report at exit is exact). Not
  os.wait4's ru_maxrss: that counts the parent's resident memory at the fork."""
  peak = 0
  while True:
    pid, status = os.waitpid(proc.pid, os.WNOHANG)
    if pid:
      break
    peak = max(peak, own_peak_bytes(proc.pid) or 0)
    time.sleep(poll_s)
  proc.returncode = os.waitstatus_to_exitcode(status)
  return proc.returncode, peak


# Runs a Python script as __main__ and writes its own peak resident memory (VmHWM, bytes) to a
# file at exit: argv = [peak_file, script, *script_args].
_REPORT_PEAK = """import atexit, os, runpy, sys
peak_file, script = sys.argv[1], sys.argv[2]
def report():
  with open('/proc/self/status') as f:
    kib = next(int(l.split()[1]) for l in f if l.startswith('VmHWM:'))
  with open(peak_file, 'w') as f:
    f.write(str(kib * 1024))
atexit.register(report)
sys.argv = sys.argv[2:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
runpy.run_path(script, run_name='__main__')
"""


def exit_if_failed(failed: list[str], total: int) -> None:
  """After every model has had its turn: one line naming those that failed, and exit status 1."""
  if failed:
    print(f'error: {len(failed)} of {total} models failed: {", ".join(failed)}', file=sys.stderr)
    sys.exit(1)


def exit_reason(code: int) -> str:
  """A child's exit code in words."""
  if code < 0:
    name = signal.Signals(-code).name
    oom = ' (as the out-of-memory killer does)' if -code == signal.SIGKILL else ''
    return f'killed by {name}{oom}'
  return f'exited with status {code}'


def child_env() -> dict:
  """The environment for a child Python that imports cnn_zoo: from a checkout, the checkout's
  root goes first on PYTHONPATH (the child may start in another directory); installed, nothing
  is added (site-packages on PYTHONPATH would go before the standard library)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  installed = {os.path.abspath(p) for p in site.getsitepackages() + [site.getusersitepackages()]}
  if root in installed:
    return dict(os.environ)
  return dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (root, os.environ.get('PYTHONPATH')) if p))


def in_child(fn: str, **kwargs) -> dict:
  """`fn(**kwargs)` (benchmark_model, train_step_peak, machine_and_peak) in a fresh Python
  process, with that
  process's own peak resident memory added as `peak_mem_bytes`: the model's, not the high-water
  mark of whatever ran before. A child that fails or is killed gives {'error': one line,
  'peak_mem_bytes': how far it got (sampled, for a killed one)}; the caller goes on."""
  if fn not in _CHILD_FUNCTIONS:
    raise ValueError(f'in_child runs {", ".join(_CHILD_FUNCTIONS)}, not {fn!r}')
  env = child_env()
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'result.json')
    proc = subprocess.Popen([sys.executable, '-c', _CHILD, fn, json.dumps(kwargs), out], env=env)
    code, sampled = wait_with_peak(proc)
    result = {}
    if os.path.exists(out):
      with open(out, encoding='utf-8') as f:
        result = json.load(f)
  if code != 0 and 'error' not in result:
    result = {'error': exit_reason(code)}
  return {**result, 'peak_mem_bytes': max(sampled, result.get('peak_mem_bytes') or 0)}


def _child_main(fn: str, kwargs: str, out: str) -> None:
  try:
    result = _CHILD_FUNCTIONS[fn](**json.loads(kwargs))
    code = 0
  except Exception as e:  # pylint: disable=broad-except  # reported to the parent in one line
    text = str(e).strip().splitlines()
    result, code = {'error': f'{type(e).__name__}: {text[0] if text else ""}'.rstrip(': ')}, 1
  result['peak_mem_bytes'] = own_peak_bytes()
  with open(out, 'w', encoding='utf-8') as f:
    json.dump(result, f)
  sys.exit(code)


# ---- The largest batch in a memory budget --------------------------------------------------------

def max_batch(name: str, memory_gb: float, dtype: str = 'float32', conv_impl: str = 'auto',
              remat: str = 'none', measure: bool = False, max_compiles: int = 16,
              log=print) -> dict:
  """The largest train batch whose step fits `memory_gb` GiB by XLA's buffer assignment
  (`step_memory_mb`, compiled, never run): two compiles fit a line, then compiles around its
  answer until batch b fits and b + 1 does not. With `measure`, b runs one real step in a
  child process; if its peak resident memory (which adds the process's own: Python, JAX, the
  compiled code) exceeds the budget, the search is redone with the budget less that overhead."""
  if not memory_gb > 0:
    raise errors.ConfigError(f'memory budget {memory_gb} GB: must be a positive number')
  budget = int(memory_gb * 2 ** 30)
  config = step_config(name, 8, dtype, conv_impl, remat)  # a bad name or choice: before compiling
  built = _build(config)
  points = {}  # batch -> XLA bytes

  def xla_bytes(b):
    if b not in points:
      start = time.perf_counter()
      points[b] = int(step_memory_mb(built.compile_train(built.abstract_state, b)) * 2 ** 20)
      log(f'{name}: batch {b}: XLA step memory {points[b] / 2 ** 20:,.0f} MiB '
          f'(compiled in {time.perf_counter() - start:.0f}s)')
    return points[b]

  def search(limit):
    for b in (8, 16):  # a line through two batches: memory = fixed + per-image * batch
      xla_bytes(b)
    # The largest batch known to fit, and the smallest larger one known not to.
    lo = max((b for b, m in points.items() if m <= limit), default=0)
    hi = min((b for b, m in points.items() if m > limit and b > lo), default=None)
    tries = 0
    while hi is None or hi - lo > 1:
      if len(points) >= max_compiles:
        break
      tries += 1
      near = sorted(points.items(), key=lambda p: abs(p[1] - limit))[:2]
      (b1, m1), (b2, m2) = near
      slope = (m2 - m1) / (b2 - b1) if b2 != b1 else 0
      if tries <= 4 and slope > 0:
        guess = int(b1 + (limit - m1) / slope)
      else:  # not linear enough to converge by the line: halve the bracket
        guess = 2 * lo if hi is None else (lo + hi) // 2
      b = max(lo + 1, guess if hi is None else min(guess, hi - 1))
      if xla_bytes(b) <= limit:
        lo = b
      else:
        hi = b
    return lo, hi

  lo, hi = search(budget)
  result = {'model': name, 'memory_gb': memory_gb, 'budget_bytes': budget,
            'search_budget_bytes': budget, 'dtype': dtype, 'conv_impl': conv.resolve(conv_impl),
            'remat': remat, 'batch_size': lo,
            'xla_step_bytes': points.get(lo), 'next_batch_size': hi,
            'next_xla_step_bytes': points.get(hi), 'measured': []}
  for _ in range(3 if measure and lo else 0):
    run = in_child('train_step_peak', name=name, batch_size=lo, dtype=dtype,
                   conv_impl=conv_impl, remat=remat, steps=1)
    run = {'batch_size': lo, 'xla_step_bytes': points[lo], 'peak_mem_bytes': run['peak_mem_bytes'],
           **({'error': run['error']} if 'error' in run else {})}
    result['measured'].append(run)
    log(f'{name}: batch {lo}: measured peak {run["peak_mem_bytes"] / 2 ** 20:,.0f} MiB'
        + (f' ({run["error"]})' if 'error' in run else ''))
    if 'error' not in run and run['peak_mem_bytes'] <= budget:
      break
    # What the process needs besides the step's buffers, taken off the budget for another search.
    overhead = max(run['peak_mem_bytes'] - points[lo], budget // 100)
    lo, hi = search(budget - overhead)
    result.update(search_budget_bytes=budget - overhead, batch_size=lo,
                  xla_step_bytes=points.get(lo), next_batch_size=hi,
                  next_xla_step_bytes=points.get(hi))
    if not lo:
      break
  if measure and result['measured'] and result['measured'][-1]['batch_size'] == lo:
    result['measured_peak_bytes'] = result['measured'][-1]['peak_mem_bytes']
  result['xla_points'] = {str(b): m for b, m in sorted(points.items())}
  return result


# ---- The PyTorch reference, one process per model ------------------------------------------------

def torch_reference(torch_python: str, torch_ref: str, model_names, json_path: str | None = None,
                    extra_args: str = '', log=print) -> dict:
  """Runs the PyTorch reference script (torch_ref.py) once per model, each in its own process,
  and returns its JSON results with each process's own peak resident memory (VmHWM, reported at
  its exit) as `peak_mem_bytes`; a
  model whose run fails gets {'error': ...} and the rest go on. Written to `json_path` after
  every model. The interpreter, the script and the model names are checked first (`--list`)."""
  for path, what in ((shutil.which(torch_python) or torch_python, '--torch_python'),
                     (torch_ref, '--torch_ref')):
    if not os.path.isfile(path):
      raise errors.NotFoundError(f'{what}={path}: no such file')
  args = shlex.split(extra_args)
  check = subprocess.run([torch_python, torch_ref, '--list', '--models', ','.join(model_names)],
                         capture_output=True, text=True, check=False)
  if check.returncode != 0:
    lines = (check.stderr or check.stdout).strip().splitlines() or [exit_reason(check.returncode)]
    raise errors.ConfigError(f'{torch_ref} --models {",".join(model_names)}: {lines[-1]}')
  results = {}
  for name in model_names:
    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, 'torch.json')
      peak_file = os.path.join(tmp, 'peak')
      proc = subprocess.Popen([torch_python, '-c', _REPORT_PEAK, peak_file, torch_ref,
                               '--models', name, '--json', out, *args])
      code, peak = wait_with_peak(proc)
      measured = {}
      if code == 0 and os.path.exists(out):
        with open(out, encoding='utf-8') as f:
          measured = json.load(f).get(name, {})
      if os.path.exists(peak_file):  # exact, where the child got to report it
        with open(peak_file, encoding='utf-8') as f:
          peak = max(peak, int(f.read()))
    results[name] = {**measured, 'peak_mem_bytes': peak}
    if code != 0:
      results[name]['error'] = exit_reason(code)
      log(f'{name}: PyTorch reference failed: {exit_reason(code)}')
    else:
      log(f'{name}: PyTorch peak memory {peak / 2 ** 20:,.0f} MiB')
    if json_path:
      run_files.write_text(json_path, json.dumps(results, indent=2), '--json')
  return results


def input_pipeline(dataset: str, model: str, batch_size: int | None = None, steps: int = 100,
                   data_dir: str | None = None, paths=('device', 'tfdata')) -> dict:
  """For each input path: images/s of its batches alone (crop and flip, waited for) and of the
  whole training loop over `steps` steps, beside the bare step for the same model and batch, so
  that each path's cost shows (`{path}_loop_vs_step`: the loop's share of the step's speed)."""
  # Here only: the step benchmark needs JAX and the step, not the loop's writers and checkpoints.
  from cnn_zoo.data import inputs as inputs_lib, sources  # pylint: disable=g-import-not-at-top
  from cnn_zoo.train import loop  # pylint: disable=g-import-not-at-top
  batch_size = batch_size or default_batch_size(model)
  shape = models.input_shape(model)
  data = sources.load(dataset, data_dir, image_size=shape[0])
  out = {'dataset': dataset, 'model': model, 'batch_size': batch_size, 'steps': steps,
         'step_img_s': benchmark_model(model, batch_size)['train_img_s']}
  for path in paths:
    config = config_lib.defaults()
    config.model, config.dataset, config.data_dir = model, dataset, data_dir or ''
    config.batch_size, config.num_train_steps = batch_size, steps
    config.augment, config.log_every_steps, config.eval_every_epochs = 'crop_flip', steps, 0.0
    config.eval_batch_size, config.input_pipeline = batch_size, path
    inputs = inputs_lib.make(config, data, build_lib.make_plan(config, data), parallel.mesh())
    batches = inputs.train(0, steps + 5)
    for _ in range(5):
      jax.block_until_ready(next(batches))
    start = time.perf_counter()
    for _ in range(steps):
      jax.block_until_ready(next(batches))
    out[f'{path}_pipeline_img_s'] = steps * batch_size / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as workdir:
      results = loop.train_and_evaluate(config, workdir)
    out[f'{path}_loop_img_s'] = results['train_images_per_s']
    out[f'{path}_loop_vs_step'] = results['train_images_per_s'] / out['step_img_s']
  return out


def machine() -> dict:
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return {'platform': jax.default_backend(), 'devices': jax.device_count(),
          'device_kind': jax.devices()[0].device_kind, 'cpu': cpu, 'cpus': os.cpu_count(),
          'jax_version': jax.__version__, 'date': time.strftime('%Y-%m-%d')}


DTYPES = ('float32', 'bfloat16')


def _read_results(directory: str, name: str) -> dict:
  path = os.path.join(directory, name)
  if not os.path.exists(path):
    return {}
  with open(path, encoding='utf-8') as f:
    return {k: v for k, v in json.load(f).items() if not k.startswith('_')}


def _cell(value, fmt='{:,.0f}'):
  return '-' if value is None else fmt.format(value)


def _ratio(a, b):
  return '-' if a is None or b is None else f'{a / b:.2f}x'


def _mib(n):
  return None if n is None else n / 2 ** 20


def _rate(value):
  """Images/s: whole numbers from 100 up, one decimal below (DenseNet trains at 6 img/s)."""
  return _cell(value, '{:,.0f}' if value is None or value >= 100 else '{:.1f}')


def cpu_side_by_side(directory: str) -> str:
  """Markdown table of cnn_zoo's CPU step beside the PyTorch reference, with each side's
  per-model peak memory, from the jax_cpu.json and torch_cpu.json that experiments/cpu_table.sh
  writes; '' when neither is there. Notes below it: models that failed, and inference batches
  that differ between the sides."""
  ours = _read_results(directory, 'jax_cpu.json')
  theirs = _read_results(directory, 'torch_cpu.json')
  if not ours and not theirs:
    return ''
  lines = ['| model | batch | JAX train img/s | PyTorch train img/s | JAX / PyTorch | '
           'JAX infer img/s | PyTorch infer img/s | JAX peak MiB | PyTorch peak MiB | '
           'JAX train step MiB (XLA) | JAX compile s |', '|---|---:|' + '---:|' * 9]
  notes = []
  for model in list(ours) + [m for m in theirs if m not in ours]:
    j, t = ours.get(model, {}), theirs.get(model, {})
    for side, r in (('JAX', j), ('PyTorch', t)):
      if 'error' in r:
        notes.append(f'{model}: {side} failed: {r["error"]}')
    batches = [b for b in (j.get('batch_size'), t.get('train_batch')) if b is not None]
    batch = ' / '.join(str(b) for b in dict.fromkeys(batches)) or '-'
    infer = (j.get('infer_batch_size'), t.get('infer_batch'))
    if None not in infer and infer[0] != infer[1]:
      notes.append(f'{model}: inference batch JAX {infer[0]}, PyTorch {infer[1]}')
    lines.append(
        f'| {model} | {batch} | {_rate(j.get("train_img_s"))} | {_rate(t.get("train_img_s"))} | '
        f'{_ratio(j.get("train_img_s"), t.get("train_img_s"))} | '
        f'{_rate(j.get("infer_img_s"))} | {_rate(t.get("infer_img_s"))} | '
        f'{_cell(_mib(j.get("peak_mem_bytes")))} | {_cell(_mib(t.get("peak_mem_bytes")))} | '
        f'{_cell(j.get("train_step_memory_mb"))} | {_cell(j.get("compile_s"), "{:.1f}")} |')
  return '\n'.join(lines + ([''] + notes if notes else []))


def side_by_side(directory: str) -> str:
  """Markdown tables of cnn_zoo's step beside the PyTorch reference: the GPU one from the
  jax_DTYPE.json and torch_DTYPE.json files that experiments/gpu_table.sh writes, the CPU one
  (cpu_side_by_side) from experiments/cpu_table.sh's; a model measured on one side only shows
  '-' on the other."""
  lines = ['| model | dtype | JAX train img/s | PyTorch train img/s | JAX / PyTorch | '
           'JAX infer img/s | PyTorch infer img/s | JAX / PyTorch | JAX train step MiB | '
           'PyTorch peak MiB | JAX compile s |', '|---|---|' + '---:|' * 9]
  found = False
  for dtype in DTYPES:
    ours = _read_results(directory, f'jax_{dtype}.json')
    theirs = _read_results(directory, f'torch_{dtype}.json')
    for model in list(ours) + [m for m in theirs if m not in ours]:
      found = True
      j, t = ours.get(model, {}), theirs.get(model, {})
      lines.append(
          f'| {model} | {dtype} | {_cell(j.get("train_img_s"))} | '
          f'{_cell(t.get("train_img_s"))} | {_ratio(j.get("train_img_s"), t.get("train_img_s"))} | '
          f'{_cell(j.get("infer_img_s"))} | {_cell(t.get("infer_img_s"))} | '
          f'{_ratio(j.get("infer_img_s"), t.get("infer_img_s"))} | '
          f'{_cell(j.get("train_step_memory_mb"))} | '
          f'{_cell(_mib(t.get("peak_gpu_mem_bytes")))} | '
          f'{_cell(j.get("compile_s"), "{:.1f}")} |')
  cpu = cpu_side_by_side(directory)
  if not found and not cpu:
    raise errors.NotFoundError(f'no jax_DTYPE.json or torch_DTYPE.json (DTYPE one of '
                            f'{", ".join(DTYPES)}), nor jax_cpu.json or torch_cpu.json, in '
                            f'{directory}')
  return '\n\n'.join(t for t in ('\n'.join(lines) if found else '', cpu) if t)
