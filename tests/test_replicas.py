"""Replicas of a run (config.seeds): one vmapped step, each replica equal to the run of its seed."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cnn_zoo import errors, report, sweep
from cnn_zoo.data import inputs as inputs_lib, sources
from cnn_zoo.train import build as build_lib, config as config_lib, trained_run, loop, replicas

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = (3, 1)
STEPS = 3


def _trained(config, dataset, steps=STEPS):
  """The state after `steps` train steps and its test sums, of a run or of its replicas."""
  config = config.copy_and_resolve_references()
  config.input_pipeline = 'device'
  plan = build_lib.make_plan(config, dataset)
  built = build_lib.build(config, plan)
  if config.seeds:
    built = replicas.build(built)
  state = built.init()
  train_fn, eval_fn = built.compile_train(state), built.compile_eval(state)
  inputs = inputs_lib.make(config, dataset, plan, built.mesh)
  metrics = []
  for batch in inputs.train(0, steps):
    sharding = batch['image'].sharding
    state, m = train_fn(state, batch)
    metrics.append(m)
  _trained.batch_sharding = sharding  # the last batch's, for the test on 8 devices
  return state, loop.evaluate(eval_fn, state, inputs.eval()), jax.device_get(metrics)


def _family_config(smoke_config, model, **kwargs):
  config = smoke_config.copy_and_resolve_references()
  config.model = model
  # A gentle step: a chaotic one (batch 8, learning rate 0.05 on a 4-channel ResNet) turns the
  # float-level differences of batched convolutions into visible ones within three steps.
  config.batch_size = 16
  config.learning_rate = 0.01
  config.eval_batch_size = 360
  config.augment = 'crop_flip'
  config.conv_impl = 'xla'
  for key, value in kwargs.items():
    config.model_kwargs[key] = value
  return config


@pytest.mark.parametrize('model,kwargs', [
    ('lenet5', {}),  # neither BatchNorm nor dropout
    # Slow only for compiling three steps on a loaded 2-core machine (about 40 s each).
    pytest.param('resnet20', {'stage_sizes': (1, 1, 1), 'widths': (4, 8, 8)},  # BatchNorm
                 marks=pytest.mark.slow),
    pytest.param('alexnet_cifar', {'hidden': (32, 32),  # dropout (0.5 in both hidden layers)
                                   'convs': ((8, 11, 4, 5, (2, 2, 0)), (8, 3, 1, 1, None))},
                 marks=pytest.mark.slow),
])
def test_each_replica_equals_the_single_run_of_its_seed(smoke_config, model, kwargs):
  config = _family_config(smoke_config, model, **kwargs)
  dataset = sources.load(config.dataset, config.data_dir, image_size=32)
  config.seeds = SEEDS
  stacked, tests, metrics = _trained(config, dataset)
  assert int(stacked.step) == STEPS
  config.seeds = ()
  for i, seed in enumerate(SEEDS):
    config.seed = seed
    single, test, single_metrics = _trained(config, dataset)
    mine = replicas.replica(stacked, i)
    for ours, theirs in zip(jax.tree.leaves(mine), jax.tree.leaves(single)):
      # Float tolerance on the leaf's scale: vmap batches the convolutions, which sums in
      # another order; a wrong seed or a shared statistic is off by the whole scale.
      theirs = np.asarray(theirs, np.float64)
      scale = max(np.abs(theirs).max(), 1e-6)
      assert np.abs(np.asarray(ours) - theirs).max() <= 1e-4 * scale
    for key in ('loss', 'accuracy', 'top5'):
      assert tests[key][i] == pytest.approx(test[key], rel=1e-4, abs=1e-6)
    assert [float(m['loss'][i]) for m in metrics] == pytest.approx(
        [float(m['loss']) for m in single_metrics], rel=1e-4)
  # The replicas are not one run three times: their seeds give them other weights.
  first = jax.tree.leaves(replicas.replica(stacked, 0).params)[0]
  second = jax.tree.leaves(replicas.replica(stacked, 1).params)[0]
  assert not np.allclose(first, second)
  if kwargs.get('stage_sizes'):  # BatchNorm statistics are each replica's own
    stats = [np.asarray(jax.tree.leaves(replicas.replica(stacked, i).batch_stats)[0])
             for i in range(len(SEEDS))]
    assert not np.allclose(stats[0], stats[1])


@pytest.mark.parametrize('seeds,message', [
    ((0, 0), 'distinct'), ((0, -1), 'an integer'), ((0, 'a'), 'an integer'),
    ((0, True), 'an integer'), ((0, 1.5), 'an integer')])
def test_bad_seeds_are_one_line_naming_the_value(seeds, message):
  config = config_lib.defaults()
  config.seeds = seeds
  with pytest.raises(errors.ConfigError, match=message):
    config_lib.validate(config)


@pytest.mark.parametrize('field,value', [('input_pipeline', 'tfdata'), ('init_from', '/x'),
                                         ('shard_params', True), ('seed', 4)])
def test_what_replicas_cannot_do_is_refused_before_compiling(field, value):
  config = config_lib.defaults()
  config.seeds = (0, 1)
  config[field] = value
  with pytest.raises(errors.ConfigError, match=f'config.{field}='):
    config_lib.validate(config)


def _replica_config(smoke_config, seeds=(0, 1), steps=6):
  config = smoke_config
  config.seeds = seeds
  config.num_train_steps = steps
  config.checkpoint_every_steps = 3
  config.keep_checkpoints = 10
  config.augment = 'crop'
  config.conv_impl = 'xla'
  return config


def _lines(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def test_a_run_of_replicas_writes_each_seeds_results_and_resumes_bit_identically(
    smoke_config, tmp_path):
  import shutil
  config = _replica_config(smoke_config)
  full = loop.train_and_evaluate(config, str(tmp_path / 'full'))
  assert json.load(open(tmp_path / 'full' / 'results.json')) == json.loads(json.dumps(full))
  assert full['seeds'] == [0, 1] and [r['seed'] for r in full['replicas']] == [0, 1]
  shas = [r['weights_sha256'] for r in full['replicas']]
  assert len(set(shas)) == 2 and all(len(s) == 64 for s in shas) and full['weights_sha256'] == shas
  accuracies = [r['test_accuracy'] for r in full['replicas']]
  assert full['test_accuracy'] == pytest.approx(np.mean(accuracies))
  assert full['test_accuracy_std'] == pytest.approx(np.std(accuracies, ddof=1))
  assert full['skipped_steps'] == [0, 0] and full['replicas'][1]['skipped_steps'] == 0
  train = [r for r in _lines(tmp_path / 'full' / 'metrics.jsonl') if r['split'] == 'train']
  assert [r['step'] for r in train] == [3, 6] and len(train[0]['loss']) == 2
  assert train[0]['loss'][0] != train[0]['loss'][1]
  # The report reads the run as the runs of its two seeds: one row, their mean ± std.
  runs = report.collect(str(tmp_path))
  assert [(r.name, r.results['seed']) for r in runs] == [('full[seed=0]', 0), ('full[seed=1]', 1)]
  assert [r.metrics[-1]['accuracy'] for r in runs] == accuracies
  rows = report.group(runs)
  assert len(rows) == 1 and rows[0].seeds == [0, 1]
  # A reader (predict, the feature maps) loads one replica of the stacked checkpoint.
  import types
  run = trained_run.load(str(tmp_path / 'full'), replica=1)
  weights = types.SimpleNamespace(params=run.variables['params'], batch_stats={})
  assert loop.weights_sha256(weights) == shas[1]
  with pytest.raises(errors.ConfigError, match='replica=2 is out of range'):
    trained_run.load(str(tmp_path / 'full'), replica=2)
  # Cut at step 3 (later checkpoints and results gone): resumes to the same weights, bit for bit.
  shutil.copytree(tmp_path / 'full', tmp_path / 'cut')
  shutil.rmtree(tmp_path / 'cut' / 'checkpoints' / '6')
  os.remove(tmp_path / 'cut' / 'results.json')
  resumed = loop.train_and_evaluate(config, str(tmp_path / 'cut'))
  assert resumed['resumed_from_step'] == 3
  assert resumed['weights_sha256'] == shas
  assert resumed['test_loss'] == full['test_loss']


def _poisoned(monkeypatch, replica, step):
  """The device input path with a NaN pixel in `replica`'s batch of `step` (counted from 1)."""
  import dataclasses
  real = inputs_lib.make

  def make(*args, **kwargs):
    inputs = real(*args, **kwargs)

    def train(start_step, num_steps):
      for s, batch in enumerate(inputs.train(start_step, num_steps), start_step + 1):
        if s == step:
          batch = {**batch, 'image': batch['image'].at[replica, 0, 0, 0, 0].set(np.nan)}
        yield batch

    return dataclasses.replace(inputs, train=train)

  monkeypatch.setattr(inputs_lib, 'make', make)


@pytest.mark.slow  # the default suite's budget: skip's test covers the mask
def test_a_nan_in_one_replica_stops_the_run_naming_that_replica(smoke_config, tmp_path,
                                                                  monkeypatch):
  config = _replica_config(smoke_config, seeds=(0, 5))
  _poisoned(monkeypatch, replica=1, step=5)
  with pytest.raises(loop.NonFiniteError,
                     match=r'^non-finite loss or gradient at step 5 of replica 1 \(seed 5\) '):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))


def test_skip_skips_only_the_replica_whose_step_was_not_finite(smoke_config, tmp_path,
                                                                monkeypatch):
  config = _replica_config(smoke_config, seeds=(0, 5))
  config.nonfinite = 'skip'
  _poisoned(monkeypatch, replica=1, step=5)
  results = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['skipped_steps'] == [0, 1]
  assert [r['skipped_steps'] for r in results['replicas']] == [0, 1]
  assert all(np.isfinite(r['test_loss']) for r in results['replicas'])
  train = [r for r in _lines(tmp_path / 'run' / 'metrics.jsonl') if r['split'] == 'train']
  assert [r['skipped_steps'] for r in train] == [[0, 0], [0, 1]]


_EIGHT_DEVICES = r'''
import json, sys
import jax, ml_collections, numpy as np
from cnn_zoo.data import sources
from tests.test_replicas import _trained
config = ml_collections.ConfigDict(json.loads(sys.argv[1]))
config.seeds = tuple(config.seeds)
dataset = sources.load(config.dataset, config.data_dir, image_size=32)
state, test, _ = _trained(config, dataset)
np.savez(sys.argv[2], **{jax.tree_util.keystr(p): np.asarray(x)
                          for p, x in jax.tree_util.tree_flatten_with_path(state)[0]})
print(json.dumps({'devices': jax.device_count(), 'test_loss': test['loss'],
                  'batch_spec': list(_trained.batch_sharding.spec),
                  'state_devices': len(state.params['Conv_0']['kernel'].sharding.device_set)}))
'''


@pytest.mark.slow
def test_replicas_with_each_batch_split_over_eight_devices_match_one_device(smoke_config,
                                                                             tmp_path):
  """Replicas vmapped, each replica's batch sharded on 'data': BatchNorm sees the replica's
  whole batch, so 8 devices train what one does."""
  config = _family_config(smoke_config, 'resnet20', stage_sizes=(1, 1, 1), widths=(4, 8, 8))
  config.seeds = (2, 7)
  out = str(tmp_path / 'eight.npz')
  proc = subprocess.run([sys.executable, '-c', _EIGHT_DEVICES, config.to_json(), out], cwd=ROOT,
                        capture_output=True, text=True, timeout=600,
                        env={**os.environ,
                             'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  found = json.loads(proc.stdout.strip().splitlines()[-1])
  assert found['devices'] == found['state_devices'] == 8
  assert found['batch_spec'] == [None, 'data']
  eight = np.load(out)
  dataset = sources.load(config.dataset, config.data_dir, image_size=32)
  one, test, _ = _trained(config, dataset)
  for path, leaf in jax.tree_util.tree_flatten_with_path(one)[0]:
    leaf = np.asarray(leaf, np.float64)
    scale = max(np.abs(leaf).max(), 1e-6)
    assert np.abs(eight[jax.tree_util.keystr(path)] - leaf).max() <= 1e-4 * scale, path
  assert found['test_loss'] == pytest.approx(test['loss'], rel=1e-4)


def _seed_sweep(replicas_option=None, seeds=(0, 1, 2)):
  spec = {'base': 'configs/default.py:smoke',
          'overrides': {'num_train_steps': 4, 'batch_size': 32, 'log_every_steps': 2},
          'axes': [{'product': {'learning_rate': [0.05, 0.1], 'seed': list(seeds)}}]}
  if replicas_option is not None:
    spec['replicas'] = replicas_option
  return spec


def test_a_sweeps_seed_axis_can_train_as_replicas_of_one_point(tmp_path):
  separate = sweep.expand(_seed_sweep(), ROOT)
  assert len(separate) == 6 and 'seeds' not in separate[0].overrides
  points = sweep.expand(_seed_sweep(True), ROOT)
  assert [p.name for p in points] == ['learning_rate=0.05,seeds=0-1-2',
                                      'learning_rate=0.1,seeds=0-1-2']
  command = points[1].command(str(tmp_path), sweep.Trainer(('train',), ROOT))
  assert '--config.seeds=(0,1,2)' in command and '--config.learning_rate=0.1' in command
  assert not any(arg.startswith('--config.seed=') for arg in command)
  with pytest.raises(errors.ConfigError, match='must be true or false'):
    sweep.expand(_seed_sweep('yes'), ROOT)
  spec = _seed_sweep(True)
  spec['axes'] = [{'product': {'learning_rate': [0.05, 0.1]}}]
  with pytest.raises(errors.ConfigError, match='no axis sets seed'):
    sweep.expand(spec, ROOT)


@pytest.mark.slow
def test_a_sweep_over_seeds_as_replicas_gives_the_table_of_separate_processes(digits_dir,
                                                                              tmp_path):
  tables = {}
  for option in (False, True):
    spec = _seed_sweep(option, seeds=(0, 1))
    spec['overrides']['data_dir'] = digits_dir
    spec['axes'] = [{'product': {'seed': [0, 1]}}]
    workdir = str(tmp_path / f'replicas={option}')
    trainer = sweep.Trainer((sys.executable, '-m', 'experiments.train'), ROOT)
    outcomes = sweep.run(sweep.expand(spec, ROOT), workdir, trainer, echo=lambda line: None)
    assert all(o.status == sweep.SUCCEEDED for o in outcomes), outcomes
    assert len(outcomes) == (1 if option else 2)
    tables[option] = report.csv_rows(report.group(report.collect(workdir)))
  separate, replicated = tables[False], tables[True]
  assert len(separate) == len(replicated) == 1
  for key, value in separate[0].items():
    if key in ('runs', 'train_time_s_mean', 'train_time_s_std', 'images_per_s_mean',
               'seconds_to_target_mean') or 'time' in key or 'per_s' in key:
      continue  # what names the runs, and what the clock measures
    if isinstance(value, float):
      assert replicated[0][key] == pytest.approx(value, rel=1e-3, abs=1e-6), key
    else:
      assert replicated[0][key] == value, key


@pytest.mark.slow
def test_kill_9_of_a_run_of_replicas_resumes_every_replica_bit_identically(smoke_config,
                                                                          tmp_path):
  from tests import test_saved_work_is_kept as saved_work
  config = saved_work._resumable(smoke_config, steps=60)
  config.seeds = (0, 1)
  reference = loop.train_and_evaluate(config, str(tmp_path / 'reference'))
  workdir = str(tmp_path / 'killed')
  proc = subprocess.Popen([*saved_work._train_command(config, workdir), '--config.seeds=(0,1)'],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if any(s >= 8 for s in saved_work._checkpoint_steps(workdir)):
      break
    time.sleep(0.05)
  assert proc.poll() is None, 'the run finished (or failed) before it could be killed'
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  resumed = loop.train_and_evaluate(config, workdir)
  assert resumed['resumed_from_step'] >= 8
  assert resumed['weights_sha256'] == reference['weights_sha256']
  assert [r['weights_sha256'] for r in resumed['replicas']] == reference['weights_sha256']


@pytest.mark.slow  # the default suite's budget
def test_the_benchmark_times_replicas_per_replica_and_in_all_with_their_memory():
  from cnn_zoo import benchmark
  kwargs = dict(batch_size=8, steps=1, warmup=1, min_seconds=0.0, conv_impl='xla')
  one = benchmark.benchmark_model('lenet5', **kwargs)
  three = benchmark.benchmark_model('lenet5', replicas=3, **kwargs)
  assert one['replicas'] == 1 and three['replicas'] == 3
  assert three['train_img_s'] == pytest.approx(3 * three['train_img_s_per_replica'])
  assert one['train_img_s'] == one['train_img_s_per_replica']
  # Three states (LeNet-5's are most of its step at batch 8) and three batches' activations.
  assert 2.5 < three['train_step_memory_mb'] / one['train_step_memory_mb'] < 3.5
  with pytest.raises(errors.ConfigError, match=r'--replicas=0 must be an integer'):
    benchmark.check_replicas(0)
