"""LeNet-5 on the embedded `digits` at two learning rates, three seeds each, trained as replicas.

  python -m experiments.sweep --config=configs/sweeps/digits_seeds.py --workdir=runs/digits_seeds
  python -m experiments.sweep --config=configs/sweeps/digits_seeds.py:separate \
      --workdir=runs/digits_seeds_separate   # the same points, one process per seed

By default (`replicas=True`) each rate's three seeds train as one run of replicas
(config.seeds=(0,1,2): one program, the step vmapped over the seeds); `separate` trains them one
process each. The comparison reads both as three seeds per rate: the same table. The recipe is
configs/sweeps/digits_zoo.py's for LeNet-5 (SGD, Nesterov, a quarter-epoch warm-up, cosine, weight
decay 5e-4, batch 32, 10 epochs) at rates 0.05 and 0.01.
"""

import ml_collections

from cnn_zoo.train import config as config_lib

SEEDS = (0, 1, 2)


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, separate=False)
  c = ml_collections.ConfigDict()
  c.base = 'configs/default.py'
  c.overrides = ml_collections.ConfigDict()
  c.overrides.batch_size = 32
  c.overrides.eval_batch_size = 360
  c.overrides.nesterov = True
  c.overrides.warmup_epochs = 0.25
  c.overrides.weight_decay = 5e-4
  c.overrides.eval_every_epochs = 1.0
  c.overrides.log_every_steps = 22
  c.overrides.model = 'lenet5'
  c.overrides.num_epochs = 10.0
  c.axes = [{'product': {'learning_rate': [0.05, 0.01], 'seed': list(SEEDS)}}]
  c.replicas = not a.separate
  return c
