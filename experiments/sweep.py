"""Runs every point of a sweep, each in its own process and sub-directory, then compares them.

  python -m experiments.sweep --config=configs/sweeps/digits_zoo.py --workdir=runs/digits_zoo
  python -m experiments.sweep --config=configs/sweeps/digits_zoo.py --workdir=/tmp/zoo --dry_run

Rerunning the command skips finished points and resumes interrupted ones from their checkpoints.
The exit status is 1 if any point failed.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from cnn_zoo import cli, report, sweep

# accept_new_attributes: `--config.overrides.FIELD=VALUE` adds to a sweep's overrides whatever the
# sweep file left to its base config (expand() checks each name against the config's fields).
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Sweep file (configs/sweeps/NAME.py).',
                                          lock_config=False, accept_new_attributes=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory that gets one sub-directory per point.')
_WORKERS = flags.DEFINE_integer('workers', 1, 'Points trained at once, each in its own process.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'List the points and their commands; run nothing.')
flags.mark_flags_as_required(['config', 'workdir'])

# Every point trains through this launcher, from the repository root (where config paths start).
TRAINER = sweep.Trainer(command=(sys.executable, '-m', 'experiments.train'),
                        root=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _sweep(spec, workdir, workers, dry_run) -> int:
  points = sweep.expand(spec, TRAINER.root)
  if dry_run:
    print(sweep.describe(points, workdir, TRAINER))
    return 0
  outcomes = sweep.run(points, workdir, TRAINER, workers=workers,
                       echo=lambda line: print(line, flush=True))
  print(report.write(workdir))
  print(sweep.summary(outcomes, workdir))
  return 1 if any(o.status == sweep.FAILED for o in outcomes) else 0


def main(argv):
  del argv
  sys.exit(cli.run(_sweep, _CONFIG.value, _WORKDIR.value, _WORKERS.value, _DRY_RUN.value))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
