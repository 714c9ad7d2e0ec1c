"""Benchmarks the shared train and eval steps of models, or the input pipeline and loop.

  python -m experiments.benchmark --models=lenet5,resnet20 --json=bench.json
  python -m experiments.benchmark --models=resnet20 --dtype=bfloat16
  python -m experiments.benchmark --input_pipeline --dataset=npz:../shared/data/cifar10.npz \
      --models=resnet20
"""

import json

from absl import app, flags

from cnn_zoo import benchmark, cli, outputs
from cnn_zoo.models import conv

_MODELS = flags.DEFINE_list('models', ['lenet5', 'resnet20'], 'Registered model names.')
_BATCH = flags.DEFINE_integer('batch_size', None, 'Batch size (default: 128 for 32x32 models, '
                              '16 for 224x224 ones).')
_INFER_BATCH = flags.DEFINE_integer('infer_batch_size', None, 'Batch size of the eval step '
                                    '(default: --batch_size).')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Activation dtype.')
_CONV = flags.DEFINE_enum('conv_impl', 'auto', list(conv.CONV_IMPLS), 'Convolution '
                          'implementation (auto: the faster on this CPU for each step, measured '
                          'once and cached; XLA\'s on GPU and TPU).')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps at least (after warm-up).')
_JSON = flags.DEFINE_string('json', None, 'Write the results to this JSON file.')
_PEAK = flags.DEFINE_bool('peak', True, 'Also measure the float32 matmul rate.')
_PIPELINE = flags.DEFINE_bool('input_pipeline', False, 'Measure the input pipeline and the '
                              'training loop against the bare step instead.')
_DATASET = flags.DEFINE_string('dataset', 'digits', 'Dataset for --input_pipeline.')
_SIDE_BY_SIDE = flags.DEFINE_string('side_by_side', None, 'Only print the table of the JSON '
                                    'files that experiments/gpu_table.sh wrote into this folder.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data_dir for --input_pipeline.')


def _run():
  if _SIDE_BY_SIDE.value:
    print(benchmark.side_by_side(_SIDE_BY_SIDE.value))
    return
  if _JSON.value:
    outputs.writable_file(_JSON.value, '--json')  # before minutes of benchmarking, not after
  results = {'_machine': benchmark.machine()}
  if _PEAK.value:
    results['_machine']['matmul_peak_gflop_s'] = benchmark.matmul_peak_gflop_s()
  for name in _MODELS.value:
    if _PIPELINE.value:
      r = benchmark.input_pipeline(_DATASET.value, name, _BATCH.value, max(_STEPS.value, 100),
                                   data_dir=_DATA_DIR.value)
      for path in ('device', 'tfdata'):
        print(f'{name} on {r["dataset"]}, {path} input: batches alone '
              f'{r[f"{path}_pipeline_img_s"]:.0f} img/s, loop {r[f"{path}_loop_img_s"]:.1f} img/s '
              f'= {100 * r[f"{path}_loop_vs_step"]:.1f}% of the bare step\'s '
              f'{r["step_img_s"]:.1f} img/s', flush=True)
    else:
      r = benchmark.benchmark_model(name, _BATCH.value, _DTYPE.value, _CONV.value, _STEPS.value,
                                    infer_batch_size=_INFER_BATCH.value)
      print(f'{name}: {r["params"]:,} params, batch {r["batch_size"]}, compile '
            f'{r["compile_s"]:.1f}s, train {r["train_img_s"]:.1f} img/s ({r["conv_impl_train"]}), '
            f'infer {r["infer_img_s"]:.1f} img/s ({r["conv_impl_eval"]}), '
            f'{r["gflop_s"]:.1f} GFLOP/s, train step memory '
            f'{r["train_step_memory_mb"]:.0f} MiB, peak RSS '
            f'{r["peak_rss_mb"]:.0f} MB', flush=True)
    results[name] = r
    if _JSON.value:  # after every model, so that a run cut short keeps what it measured
      outputs.write_text(_JSON.value, json.dumps(results, indent=2), '--json')


def main(argv):
  del argv
  cli.run(_run)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
