"""Times one convolution's weight gradient (NHWC, HWIO, float32) several ways, in alternating rounds.

  python -m experiments.wgrad_bench                       # 16 channels, 32x32, batch 128, 3x3
  python -m experiments.wgrad_bench --channels=32 --size=16 --impls=ffi,xla
  python -m experiments.wgrad_bench --model=resnet20 --step_impls=xla,ffi_wgrad   # train steps

  ffi        cnn_zoo's kernel (cnn_zoo/models/conv_wgrad.py), built into $CNN_ZOO_CACHE_DIR
  xla        jax.vjp of lax.conv_general_dilated with respect to the kernel (what XLA:CPU runs)
  xla_eigen  the same compiled with xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce
             (YNNPACK keeps dots and reductions, so convolutions go to Eigen)
  tf         TensorFlow's tf.raw_ops.Conv2DBackpropFilter (its oneDNN kernel)
  torch      PyTorch's torch.nn.grad.conv2d_weight (oneDNN's backward weights), NCHW

Each round runs every implementation once; the table gives the minimum and the median over the
rounds (ms), GFLOP/s of the minimum, and the least process CPU time one call took (all threads:
on a loaded machine it says what the work costs when wall times do not; spin-waiting thread pools
count in it too). The minimum is the figure to compare on a shared machine.

With --model, the model's whole train step instead (as experiments.benchmark builds it: SGD with
momentum, weight decay, random data at the default batch), compiled once per --step_impls
conv_impl in this one process and run in alternating rounds, so that the machine's load falls on
each alike: images/s of the fastest and the median step, and the least CPU time of a step.
"""

import time

from absl import app, flags
import numpy as np

_IMPLS = flags.DEFINE_list('impls', ['ffi', 'xla', 'xla_eigen', 'tf', 'torch'],
                           'Implementations to time (ffi, xla, xla_eigen, tf, torch).')
_BATCH = flags.DEFINE_integer('batch', 128, 'Batch size.')
_SIZE = flags.DEFINE_integer('size', 32, 'Input height and width.')
_CHANNELS = flags.DEFINE_integer('channels', 16, 'Input channels.')
_OUT = flags.DEFINE_integer('out_channels', None, 'Output channels (default: --channels).')
_KERNEL = flags.DEFINE_integer('kernel', 3, 'Kernel height and width.')
_STRIDE = flags.DEFINE_integer('stride', 1, 'Stride.')
_ROUNDS = flags.DEFINE_integer('rounds', 20, 'Timed rounds.')
_THREADS = flags.DEFINE_integer('threads', 2, 'Threads for TensorFlow and PyTorch.')
_MODEL = flags.DEFINE_string('model', None, 'Time this model\'s train step instead.')
_STEP_IMPLS = flags.DEFINE_list('step_impls', ['xla', 'ffi_wgrad'], 'With --model: the '
                                'conv_impl values to compile the step with.')

KNOWN = ('ffi', 'xla', 'xla_eigen', 'tf', 'torch')
# The per-compile option takes the proto's enum names (XLA_FLAGS takes individual_dot,reduce).
EIGEN = {'xla_cpu_experimental_ynn_fusion_type':
         'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}


def _jax_fns(x, dy, kernel_shape, stride, pad, impls):
  import jax
  from cnn_zoo.models import conv_wgrad
  strides, padding = (stride, stride), ((pad, pad), (pad, pad))
  xs, dys = jax.device_put(x), jax.device_put(dy)
  fns, results = {}, {}
  ref = jax.jit(lambda x, dy: conv_wgrad.reference_weight_grad(x, dy, kernel_shape, strides,
                                                               padding))
  for impl in impls:
    if impl == 'ffi':
      if not conv_wgrad.available():
        raise SystemExit(f'ffi: {conv_wgrad.unavailable_reason()}')
      fn = jax.jit(lambda x, dy: conv_wgrad.weight_grad(x, dy, kernel_shape, strides, padding))
    elif impl in ('xla', 'xla_eigen'):
      options = EIGEN if impl == 'xla_eigen' else {}
      fn = ref.lower(xs, dys).compile(compiler_options=options)
    else:
      continue
    fns[impl] = lambda fn=fn: jax.block_until_ready(fn(xs, dys))
    results[impl] = np.asarray(fns[impl]())
  return fns, results


def _tf_fn(x, dy, kernel_shape, stride, pad, threads):
  import tensorflow as tf
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  xp = tf.constant(np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))))  # explicit padding
  dyt = tf.constant(dy)
  sizes = tf.constant(kernel_shape, tf.int32)

  @tf.function(jit_compile=False)
  def f():
    return tf.raw_ops.Conv2DBackpropFilter(input=xp, filter_sizes=sizes, out_backprop=dyt,
                                           strides=[1, stride, stride, 1], padding='VALID')
  return lambda: f().numpy()


def _torch_fn(x, dy, kernel_shape, stride, pad, threads):
  import torch
  torch.set_num_threads(threads)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  dyt = torch.from_numpy(dy.transpose(0, 3, 1, 2).copy())
  kh, kw, cin, cout = kernel_shape

  def f():
    with torch.no_grad():
      w = torch.nn.grad.conv2d_weight(xt, (cout, cin, kh, kw), dyt, stride=stride, padding=pad)
    return w.numpy().transpose(2, 3, 1, 0)  # OIHW -> HWIO
  return f


def train_steps(name, impls, rounds):
  """{impl: (wall seconds, CPU seconds) of each round} of `name`'s train step."""
  import jax
  from cnn_zoo import benchmark, models
  from cnn_zoo.train import build as build_lib
  steps = {}
  for impl in impls:
    config = benchmark.step_config(name, conv_impl=impl)
    built = build_lib.build(config, build_lib.fixed_plan(config, models.spec(name).num_classes))
    rng = np.random.default_rng(0)
    batch = jax.device_put(
        {'image': rng.standard_normal((config.batch_size, *built.plan.input_shape), np.float32),
         'label': rng.integers(0, built.plan.num_classes, config.batch_size).astype(np.int32)},
        built.batch_sharding)
    holder = [built.init()]
    fn = built.compile_train(holder[0])

    def step(fn=fn, holder=holder, batch=batch):
      holder[0], metrics = fn(holder[0], batch)  # the state is donated
      jax.block_until_ready(metrics)
    for _ in range(3):
      step()
    steps[impl] = step
  times = {impl: [] for impl in impls}
  for _ in range(rounds):
    for impl, step in steps.items():
      start, start_cpu = time.perf_counter(), time.process_time()
      step()
      times[impl].append((time.perf_counter() - start, time.process_time() - start_cpu))
  return config.batch_size, times


def main(argv):
  del argv
  if _MODEL.value:
    batch, times = train_steps(_MODEL.value, _STEP_IMPLS.value, _ROUNDS.value)
    print(f'{_MODEL.value} train step, batch {batch}, {_ROUNDS.value} alternating rounds')
    print('| conv_impl | img/s (fastest step) | img/s (median) | CPU s (min) |\n|---|---:|---:|---:|')
    for impl, t in times.items():
      wall = np.array([w for w, _ in t])
      print(f'| {impl} | {batch / wall.min():.1f} | {batch / np.median(wall):.1f} | '
            f'{min(c for _, c in t):.3f} |')
    return
  impls = _IMPLS.value
  bad = [i for i in impls if i not in KNOWN]
  if bad:
    raise app.UsageError(f'--impls: {", ".join(bad)} not known; valid choices: {", ".join(KNOWN)}')
  n, s, c, k, st = _BATCH.value, _SIZE.value, _CHANNELS.value, _KERNEL.value, _STRIDE.value
  co = _OUT.value or c
  pad = k // 2
  oh = (s + 2 * pad - k) // st + 1
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, s, s, c), np.float32)
  dy = rng.standard_normal((n, oh, oh, co), np.float32)
  kernel_shape = (k, k, c, co)
  fns, results = _jax_fns(x, dy, kernel_shape, st, pad, impls)
  if 'tf' in impls:
    fns['tf'] = _tf_fn(x, dy, kernel_shape, st, pad, _THREADS.value)
    results['tf'] = fns['tf']()
  if 'torch' in impls:
    fns['torch'] = _torch_fn(x, dy, kernel_shape, st, pad, _THREADS.value)
    results['torch'] = fns['torch']()
  want = results.get('xla', next(iter(results.values())))
  for impl in impls:  # every implementation computes the same gradient
    err = np.max(np.abs(results[impl] - want)) / np.max(np.abs(want))
    if err > 1e-4:
      raise SystemExit(f'{impl} differs from the others: relative error {err:.2e}')
  for fn in fns.values():  # warm-up
    fn()
  times = {impl: [] for impl in impls}
  cpu = {impl: [] for impl in impls}
  for _ in range(_ROUNDS.value):
    for impl in impls:
      start, start_cpu = time.perf_counter(), time.process_time()
      fns[impl]()
      times[impl].append(time.perf_counter() - start)
      cpu[impl].append(time.process_time() - start_cpu)
  flop = 2 * n * oh * oh * k * k * c * co
  print(f'weight gradient, batch {n}, {s}x{s}, {c} -> {co} channels, {k}x{k} stride {st}, '
        f'{flop / 1e9:.2f} GFLOP, {_ROUNDS.value} rounds')
  print('| impl | min ms | median ms | GFLOP/s (min) | CPU ms (min) |\n|---|---:|---:|---:|---:|')
  for impl in impls:
    t = np.array(times[impl]) * 1e3
    print(f'| {impl} | {t.min():.2f} | {np.median(t):.2f} | {flop / t.min() / 1e6:.0f} | '
          f'{1e3 * min(cpu[impl]):.2f} |')


if __name__ == '__main__':
  app.run(main)
