"""Compares the runs under a directory: comparison.md, comparison.csv and PNG plots, written there
or into --out_dir.

  python -m experiments.compare --workdir=runs/digits_zoo
  python -m experiments.compare --workdir=docs/results --out_dir=runs/committed_results

Reads only what runs wrote (results.json, config.json, metrics.jsonl): works on a partial sweep.
"""

from absl import app, flags

from cnn_zoo import cli, report

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory holding one run per sub-directory.')
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Where to write them (default: --workdir), e.g. '
                                'to rebuild the report of committed results elsewhere.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  print(cli.run(report.write, _WORKDIR.value, _OUT_DIR.value))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
