"""Benchmarks the shared train and eval steps of models, or the input pipeline and loop.

  python -m experiments.benchmark --models=lenet5,resnet20 --json=bench.json
  python -m experiments.benchmark --models=resnet20 --dtype=bfloat16
  python -m experiments.benchmark --models=densenet_bc_100 --remat=blocks
  python -m experiments.benchmark --models=resnet20 --replicas=4   # 4 seeds in one step
  python -m experiments.benchmark --input_pipeline --dataset=npz:../shared/data/cifar10.npz \
      --models=resnet20

Each model runs in a Python process of its own, so its `peak_mem_bytes` in the JSON is its own
peak resident memory (that process's VmHWM); a model that fails or is killed is
reported in one line and the others go on (--noisolate: all in this process, as before).

The largest batch whose train step fits a host-memory budget (XLA's buffer assignment of the
compiled step; --measure_peak also runs one real step at the answer in a child process and
reports its peak resident memory):

  python -m experiments.benchmark --max_batch_memory_gb=16 --models=densenet121 --remat=blocks \
      --measure_peak --json=max_batch.json

The CPU table beside PyTorch (both sides one process per model): experiments/cpu_table.sh;
the GPU one: experiments/gpu_table.sh; either is printed by --side_by_side=FOLDER.
"""

import json
import sys

from absl import app, flags

from cnn_zoo import benchmark, cli, errors, output_paths, run_files
from cnn_zoo.models import conv, remat

_MODELS = flags.DEFINE_list('models', ['lenet5', 'resnet20'], 'Registered model names.')
_BATCH = flags.DEFINE_integer('batch_size', None, 'Batch size (default: 128 for 32x32 models, '
                              '16 for 224x224 ones).')
_INFER_BATCH = flags.DEFINE_integer('infer_batch_size', None, 'Batch size of the eval step '
                                    '(default: --batch_size).')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Activation dtype.')
_CONV = flags.DEFINE_enum('conv_impl', 'auto', list(conv.CONV_IMPLS), 'Convolution '
                          'implementation (auto: the faster on this CPU for each step, measured '
                          'once and cached; XLA\'s on GPU and TPU).')
_REMAT = flags.DEFINE_enum('remat', 'none', list(remat.REMAT_POLICIES), 'What blocks keep for '
                           'the backward pass (config.remat; ResNet, Inception, DenseNet only).')
_REPLICAS = flags.DEFINE_integer('replicas', 1, 'Train this many replicas of each model in one '
                                 'step (config.seeds): images/s per replica and in all.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps at least (after warm-up).')
_JSON = flags.DEFINE_string('json', None, 'Write the results to this JSON file.')
_PEAK = flags.DEFINE_bool('peak', True, 'Also measure the float32 matmul rate.')
_PIPELINE = flags.DEFINE_bool('input_pipeline', False, 'Measure the input pipeline and the '
                              'training loop against the bare step instead.')
_DATASET = flags.DEFINE_string('dataset', 'digits', 'Dataset for --input_pipeline.')
_SIDE_BY_SIDE = flags.DEFINE_string('side_by_side', None, 'Only print the tables of the JSON '
                                    'files that experiments/gpu_table.sh or cpu_table.sh wrote '
                                    'into this folder.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data_dir for --input_pipeline.')
_ISOLATE = flags.DEFINE_bool('isolate', True, 'Benchmark each model in a process of its own, '
                             'so that its peak memory is its own.')
_MAX_BATCH_GB = flags.DEFINE_float('max_batch_memory_gb', None, 'Instead of timing: the largest '
                                   'train batch whose step fits this many GiB (XLA estimate).')
_MEASURE = flags.DEFINE_bool('measure_peak', False, 'With --max_batch_memory_gb: run the found '
                             'batch in a child process and measure its peak memory.')


def _run():
  if _SIDE_BY_SIDE.value:
    print(benchmark.side_by_side(_SIDE_BY_SIDE.value))
    return
  if _MAX_BATCH_GB.value is not None and not _MAX_BATCH_GB.value > 0:
    raise errors.ConfigError(f'--max_batch_memory_gb={_MAX_BATCH_GB.value}: must be a positive '
                             'number of GiB')
  if _JSON.value:
    output_paths.writable_file(_JSON.value, '--json')  # before minutes of benchmarking, not after
  # Children benchmark the models: this process then leaves JAX's backend, and the accelerator,
  # to them (a TPU opens in one process only; on a GPU JAX takes 75% of its memory at start-up).
  children = _ISOLATE.value and _MAX_BATCH_GB.value is None and not _PIPELINE.value
  for name in _MODELS.value:  # every model and choice checked before anything compiles
    benchmark.step_config(name, _BATCH.value, _DTYPE.value, _CONV.value, _REMAT.value,
                          _INFER_BATCH.value, devices=not children)
  benchmark.check_replicas(_REPLICAS.value)
  peak = _PEAK.value and _MAX_BATCH_GB.value is None
  if children:
    machine = benchmark.in_child('machine_and_peak', peak=peak)
    machine.pop('peak_mem_bytes')
  else:
    machine = benchmark.machine_and_peak(peak)
  results = {'_machine': machine}
  failed = []
  for name in _MODELS.value:
    if _MAX_BATCH_GB.value is not None:
      r = benchmark.max_batch(name, _MAX_BATCH_GB.value, _DTYPE.value, _CONV.value, _REMAT.value,
                              measure=_MEASURE.value)
      peak = r.get('measured_peak_bytes')
      print(f'{name} (remat={_REMAT.value}): largest batch in {_MAX_BATCH_GB.value:g} GiB: '
            f'{r["batch_size"]} (XLA step memory '
            f'{(r["xla_step_bytes"] or 0) / 2 ** 20:,.0f} MiB'
            + (f', measured peak {peak / 2 ** 20:,.0f} MiB' if peak else '')
            + (f'; batch {r["next_batch_size"]} does not fit' if r['next_batch_size'] else '')
            + ')', flush=True)
    elif _PIPELINE.value:
      r = benchmark.input_pipeline(_DATASET.value, name, _BATCH.value, max(_STEPS.value, 100),
                                   data_dir=_DATA_DIR.value)
      for path in ('device', 'tfdata'):
        print(f'{name} on {r["dataset"]}, {path} input: batches alone '
              f'{r[f"{path}_pipeline_img_s"]:.0f} img/s, loop {r[f"{path}_loop_img_s"]:.1f} img/s '
              f'= {100 * r[f"{path}_loop_vs_step"]:.1f}% of the bare step\'s '
              f'{r["step_img_s"]:.1f} img/s', flush=True)
    else:
      kwargs = dict(name=name, batch_size=_BATCH.value, dtype=_DTYPE.value,
                    conv_impl=_CONV.value, steps=_STEPS.value,
                    infer_batch_size=_INFER_BATCH.value, remat=_REMAT.value,
                    replicas=_REPLICAS.value)
      if children:
        r = benchmark.in_child('benchmark_model', **kwargs)
      else:
        r = benchmark.benchmark_model(**kwargs)
        r['peak_mem_bytes'] = int(r['peak_rss_mb'] * 2 ** 20)  # the process's, not the model's
      if 'error' in r:
        failed.append(name)
        print(f'{name}: failed: {r["error"]} (peak memory '
              f'{r["peak_mem_bytes"] / 2 ** 20:,.0f} MiB)', file=sys.stderr, flush=True)
      else:
        print(f'{name}: {r["params"]:,} params, batch {r["batch_size"]}, compile '
              f'{r["compile_s"]:.1f}s, train {r["train_img_s"]:.1f} img/s '
              + (f'in all, {r["train_img_s_per_replica"]:.1f} per replica of {r["replicas"]} '
                 f'(step {1e3 * r["train_step_s"]:.0f} ms) ' if r['replicas'] > 1 else '')
              + f'({r["conv_impl_train"]}), infer {r["infer_img_s"]:.1f} img/s '
              f'({r["conv_impl_eval"]}), {r["gflop_s"]:.1f} GFLOP/s, train step memory '
              f'{r["train_step_memory_mb"]:.0f} MiB, peak memory '
              f'{r["peak_mem_bytes"] / 2 ** 20:,.0f} MiB', flush=True)
    results[name] = r
    if _JSON.value:  # after every model, so that a run cut short keeps what it measured
      run_files.write_text(_JSON.value, json.dumps(results, indent=2), '--json')
  benchmark.exit_if_failed(failed, len(_MODELS.value))


def main(argv):
  del argv
  cli.run(_run)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
