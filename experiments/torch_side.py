"""The PyTorch reference benchmark (torch_ref.py) run one model per process, with each model's
peak resident memory (its process's own VmHWM, reported at exit) added to its JSON as
`peak_mem_bytes`.

  python -m experiments.torch_side --torch_python=../torchenv/bin/python \
      --torch_ref=../shared/bench/torch_ref.py --models=lenet5,resnet20 --json=torch_cpu.json
  python -m experiments.torch_side ... --torch_args='--batch 128 --min-time 2'

The JSON is torch_ref.py's own (model name -> its fields) plus `peak_mem_bytes`; a model whose
run fails gets `error` and the others go on. experiments/cpu_table.sh runs this beside
experiments.benchmark and prints the table.
"""


from absl import app, flags

from cnn_zoo import benchmark, cli, output_paths

_PYTHON = flags.DEFINE_string('torch_python', 'python3', 'The Python that has torch.')
_REF = flags.DEFINE_string('torch_ref', None, 'Path of the reference script torch_ref.py.',
                           required=True)
_MODELS = flags.DEFINE_list('models', ['lenet5', 'resnet20'], 'Model names (torch_ref.py\'s).')
_JSON = flags.DEFINE_string('json', None, 'Write the results to this JSON file.')
_ARGS = flags.DEFINE_string('torch_args', '', 'More arguments for torch_ref.py, e.g. '
                            '"--batch 128 --min-time 2".')


def _run():
  if _JSON.value:
    output_paths.writable_file(_JSON.value, '--json')
  results = benchmark.torch_reference(_PYTHON.value, _REF.value, _MODELS.value, _JSON.value,
                                      _ARGS.value)
  benchmark.exit_if_failed([name for name, r in results.items() if 'error' in r], len(results))


def main(argv):
  del argv
  cli.run(_run)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
