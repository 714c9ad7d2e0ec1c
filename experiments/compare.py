"""Compares the runs under a directory: comparison.md, comparison.csv and PNG plots, written there
or into --out_dir.

  python -m experiments.compare --workdir=runs/digits_zoo
  python -m experiments.compare --workdir=docs/results --out_dir=runs/committed_results
  python -m experiments.compare --workdir=OUT/runs --torch_results=OUT/torch/r20_s0.json,...

With --torch_results (the JSONs of the PyTorch reference, torch_train.py), also the reproduction
table: each side's test error over its seeds beside the paper's (reproduction.md).

Reads only what runs wrote (results.json, config.json, metrics.jsonl): works on a partial sweep.
"""

import os

from absl import app, flags

from cnn_zoo import cli, report, reproduction

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory holding one run per sub-directory.')
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Where to write them (default: --workdir), e.g. '
                                'to rebuild the report of committed results elsewhere.')
_TORCH = flags.DEFINE_list('torch_results', [], 'JSON files of the PyTorch reference '
                           '(torch_train.py --json): adds the reproduction table.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  print(cli.run(report.write, _WORKDIR.value, _OUT_DIR.value))
  if _TORCH.value:
    out = os.path.join(_OUT_DIR.value or _WORKDIR.value, reproduction.MARKDOWN)
    print(cli.run(reproduction.write, _WORKDIR.value, _TORCH.value, out))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
