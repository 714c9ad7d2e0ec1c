"""Trains one model from a config file.

  python -m experiments.train --config=configs/default.py --workdir=/tmp/lenet5_digits
"""

from absl import app, flags
from ml_collections import config_flags

from cnn_zoo import cli, parallel
from cnn_zoo.train import loop

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and results.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace a run of a different config in workdir.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', '', 'Multi-process runs: host:port of '
                                   'process 0 (empty: auto-detect on TPU VMs, SLURM, Open MPI).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Multi-process runs: process count.')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, 'Multi-process runs: this process, from 0.')
_COORDINATOR_TIMEOUT = flags.DEFINE_float('coordinator_timeout_s', 300, 'Multi-process runs: how '
                                          'long to wait for the coordinator and the other '
                                          'processes before giving up, in seconds.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  cli.run(parallel.initialize, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
          _COORDINATOR_TIMEOUT.value)
  cli.run(loop.train_and_evaluate, _CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
