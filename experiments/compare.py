"""Compares the runs under a directory: comparison.md, comparison.csv and PNG plots, written there.

  python -m experiments.compare --workdir=runs/digits_zoo

Reads only what runs wrote (results.json, config.json, metrics.jsonl): works on a partial sweep.
"""

from absl import app, flags

from cnn_zoo import cli, report

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory holding one run per sub-directory.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  print(cli.run(report.write, _WORKDIR.value))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
