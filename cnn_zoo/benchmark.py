"""Speed of the shared train and eval steps per model, and of the input pipeline and loop.

Every number comes from timing the compiled step on random data of the model's input shape on
whatever devices JAX sees; nothing is estimated except GFLOP/s, which counts training as three
forward passes (forward, input gradient, weight gradient), as is usual.
"""

import json
import os
import platform
import resource
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnn_zoo import models, parallel
from cnn_zoo.train import autoconv, build as build_lib
from cnn_zoo.train import config as config_lib


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


def benchmark_model(name: str, batch_size: int | None = None, dtype: str = 'float32',
                    conv_impl: str = 'auto', steps: int = 10, warmup: int = 3,
                    min_seconds: float = 3.0, infer_batch_size: int | None = None) -> dict:
  """Compile time, train and eval images/s (medians over >= `steps` timed steps) of one model."""
  batch_size = batch_size or default_batch_size(name)
  infer_batch_size = infer_batch_size or batch_size
  parallel.check_batch_size(batch_size)
  parallel.check_batch_size(infer_batch_size, 'infer_batch_size')
  # The step that trains: built as a run builds it, with SGD, momentum 0.9 and weight decay 5e-4
  # at a constant 0.01, as the PyTorch reference.
  config = config_lib.defaults()
  config.model, config.dtype, config.conv_impl = name, dtype, conv_impl
  config.batch_size, config.eval_batch_size = batch_size, infer_batch_size
  config.schedule, config.learning_rate, config.weight_decay = 'constant', 0.01, 5e-4
  plan = build_lib.fixed_plan(config, models.spec(name).num_classes)
  # 'auto' as a run resolves it: measured on this machine once, then read from the cache.
  choice = autoconv.choose(config, plan)
  built = build_lib.build(config, plan, conv_impls=choice.impls)
  shape, counts, sharded = built.plan.input_shape, built.summary, built.batch_sharding
  state = built.init()
  rng = np.random.default_rng(0)
  spec = models.spec(name)
  train_batch = jax.device_put({
      'image': rng.standard_normal((batch_size, *shape), np.float32),
      'label': rng.integers(0, spec.num_classes, batch_size).astype(np.int32)}, sharded)
  eval_batch = jax.device_put({
      'image': rng.standard_normal((infer_batch_size, *shape), np.float32),
      'label': rng.integers(0, spec.num_classes, infer_batch_size).astype(np.int32),
      'mask': np.ones(infer_batch_size, np.float32)}, sharded)

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
      'conv_impl_eval': built.conv_impls[1],
      'compile_s': compile_s, 'train_step_s': train_s, 'train_img_s': batch_size / train_s,
      'train_steps_timed': len(train_times), 'infer_batch_size': infer_batch_size,
      'infer_img_s': infer_batch_size / eval_s,
      'gflop_s': 3 * 2 * counts.macs * batch_size / train_s / 1e9,
      'peak_rss_mb': peak_rss_mb(), 'train_step_memory_mb': step_memory_mb(train_step),
      'device_peak_mb': device_peak_mb(),  # cumulative over the process's models
  }


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


def side_by_side(directory: str) -> str:
  """Markdown table of cnn_zoo's step beside the PyTorch reference, from the jax_DTYPE.json and
  torch_DTYPE.json files that experiments/gpu_table.sh writes; a model measured on one side only
  shows '-' on the other."""

  def read(name):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
      return {}
    with open(path, encoding='utf-8') as f:
      return {k: v for k, v in json.load(f).items() if not k.startswith('_')}

  def cell(value, fmt='{:,.0f}'):
    return '-' if value is None else fmt.format(value)

  def ratio(a, b):
    return '-' if a is None or b is None else f'{a / b:.2f}x'

  lines = ['| model | dtype | JAX train img/s | PyTorch train img/s | JAX / PyTorch | '
           'JAX infer img/s | PyTorch infer img/s | JAX / PyTorch | JAX train step MiB | '
           'PyTorch peak MiB | JAX compile s |', '|---|---|' + '---:|' * 9]
  found = False
  for dtype in DTYPES:
    ours, theirs = read(f'jax_{dtype}.json'), read(f'torch_{dtype}.json')
    for model in list(ours) + [m for m in theirs if m not in ours]:
      found = True
      j, t = ours.get(model, {}), theirs.get(model, {})
      peak = t.get('peak_gpu_mem_bytes')
      lines.append(
          f'| {model} | {dtype} | {cell(j.get("train_img_s"))} | {cell(t.get("train_img_s"))} | '
          f'{ratio(j.get("train_img_s"), t.get("train_img_s"))} | '
          f'{cell(j.get("infer_img_s"))} | {cell(t.get("infer_img_s"))} | '
          f'{ratio(j.get("infer_img_s"), t.get("infer_img_s"))} | '
          f'{cell(j.get("train_step_memory_mb"))} | '
          f'{cell(None if peak is None else peak / 2 ** 20)} | '
          f'{cell(j.get("compile_s"), "{:.1f}")} |')
  if not found:
    raise FileNotFoundError(f'no jax_DTYPE.json or torch_DTYPE.json in {directory}; '
                            f'DTYPE one of {", ".join(DTYPES)}')
  return '\n'.join(lines)
