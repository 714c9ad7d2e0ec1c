"""Runs every point of a sweep, each in its own process and sub-directory, then compares them.

  python -m experiments.sweep --config=configs/sweeps/digits_zoo.py --workdir=runs/digits_zoo
  python -m experiments.sweep --config=configs/sweeps/digits_zoo.py --workdir=/tmp/zoo --dry_run
  python -m experiments.sweep --config=configs/sweeps/digits_zoo.py --workdir=/shared/zoo \
      --launcher=slurm --slurm_partition=gpu --slurm_gpus_per_node=1 --slurm_time=4:00:00

Rerunning the command skips finished points and resumes interrupted ones from their checkpoints.
The exit status is 1 if any point failed.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from cnn_zoo import cli, report, slurm, sweep

# accept_new_attributes: `--config.overrides.FIELD=VALUE` adds to a sweep's overrides whatever the
# sweep file left to its base config (expand() checks each name against the config's fields).
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Sweep file (configs/sweeps/NAME.py).',
                                          lock_config=False, accept_new_attributes=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory that gets one sub-directory per point.')
_WORKERS = flags.DEFINE_integer('workers', 1, 'Points trained at once, each in its own process '
                                '(--launcher=slurm: jobs queued at once; default all).')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'List the points and their commands; run nothing.')
_LAUNCHER = flags.DEFINE_enum('launcher', 'local', ['local', 'slurm'], 'Where points train: '
                              'here, one process each, or each as a SLURM batch job (--slurm_*).')
# Each point's job under --launcher=slurm (cnn_zoo.slurm.Resources); empty or 0: cluster default.
_SLURM = {
    'partition': flags.DEFINE_string('slurm_partition', '', 'Partition of every job.'),
    'nodes': flags.DEFINE_integer('slurm_nodes', 1, 'Nodes per job; several make a multi-host '
                                  'point (jax.distributed from SLURM).'),
    'tasks_per_node': flags.DEFINE_integer('slurm_tasks_per_node', 1, 'Training processes per '
                                           'node: one per node, or one per GPU.'),
    'gpus_per_node': flags.DEFINE_integer('slurm_gpus_per_node', 0, 'GPUs per node.'),
    'cpus_per_task': flags.DEFINE_integer('slurm_cpus_per_task', 0, 'CPUs per task.'),
    'mem': flags.DEFINE_string('slurm_mem', '', 'Memory per node, e.g. 32G.'),
    'time': flags.DEFINE_string('slurm_time', '', 'Time limit per job, e.g. 4:00:00.'),
    'signal_s': flags.DEFINE_integer('slurm_signal_s', 120, 'SIGTERM this many seconds before the '
                                     'time limit: the point saves, its job requeues itself.'),
    'requeue': flags.DEFINE_bool('slurm_requeue', True, 'Let SLURM requeue a preempted job.'),
    'sbatch_args': flags.DEFINE_list('slurm_sbatch_args', [], 'Further sbatch options, '
                                     'comma-separated: --account=X,--qos=Y.'),
}
_SLURM_POLL_S = flags.DEFINE_float('slurm_poll_s', 10.0, 'Seconds between two squeue calls.')
flags.mark_flags_as_required(['config', 'workdir'])

# Every point trains through this launcher, from the repository root (where config paths start).
TRAINER = sweep.Trainer(command=(sys.executable, '-m', 'experiments.train'),
                        root=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _sweep(spec, workdir, workers, dry_run, launcher='local') -> int:
  points = sweep.expand(spec, TRAINER.root)
  echo = lambda line: print(line, flush=True)
  launch = None
  if launcher == 'slurm':
    resources = slurm.Resources(**{k: tuple(f.value) if k == 'sbatch_args' else f.value
                                   for k, f in _SLURM.items()})
    resources.check()
    if dry_run:
      print(slurm.describe(points, workdir, TRAINER, resources))
      return 0
    launch = slurm.Launcher(resources, TRAINER, poll_s=_SLURM_POLL_S.value, echo=echo)
    launch.test_submission(points[0], workdir)
    # Every point is queued at once unless --workers says otherwise: SLURM does the scheduling.
    workers = workers if flags.FLAGS['workers'].present else len(points)
  if dry_run:
    print(sweep.describe(points, workdir, TRAINER))
    return 0
  outcomes = sweep.run(points, workdir, TRAINER, workers=workers, launch=launch, echo=echo)
  print(report.write(workdir))
  print(sweep.summary(outcomes, workdir))
  return 1 if any(o.status == sweep.FAILED for o in outcomes) else 0


def main(argv):
  del argv
  sys.exit(cli.run(_sweep, _CONFIG.value, _WORKDIR.value, _WORKERS.value, _DRY_RUN.value,
                   _LAUNCHER.value))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
