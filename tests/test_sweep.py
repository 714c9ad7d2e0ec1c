"""Sweeps: expansion into named points, skip / resume / failure isolation, the launcher."""

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys

import ml_collections
import pytest

from cnn_zoo.train import config as config_lib
from cnn_zoo import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINER = sweep.Trainer((sys.executable, '-m', 'experiments.train'), ROOT)


def _spec(axes, overrides=None, base='configs/default.py:smoke'):
  c = ml_collections.ConfigDict()
  c.base = base
  c.overrides = ml_collections.ConfigDict(overrides or {})
  c.axes = axes
  return c


def test_product_axes_multiply_and_name_points_in_axis_order():
  points = sweep.expand(_spec([{'product': {'model': ['lenet5', 'lenet5_fc100'],
                                            'learning_rate': [0.1, 1e-05]}},
                               {'product': {'seed': [0, 1]}}]), ROOT)
  assert [p.name for p in points] == [
      'model=lenet5,learning_rate=0.1,seed=0', 'model=lenet5,learning_rate=0.1,seed=1',
      'model=lenet5,learning_rate=1e-05,seed=0', 'model=lenet5,learning_rate=1e-05,seed=1',
      'model=lenet5_fc100,learning_rate=0.1,seed=0', 'model=lenet5_fc100,learning_rate=0.1,seed=1',
      'model=lenet5_fc100,learning_rate=1e-05,seed=0',
      'model=lenet5_fc100,learning_rate=1e-05,seed=1']
  assert points[2].overrides == {'model': 'lenet5', 'learning_rate': 1e-05, 'seed': 0}


def test_zip_axes_pair_values_and_fixed_overrides_reach_every_command():
  spec = _spec([{'zip': {'model': ['lenet5', 'lenet5_fc100'], 'learning_rate': [0.05, 0.01]}},
                {'product': {'seed': [3]}}],
               overrides={'num_epochs': 2.0, 'lr_boundaries': (0.5, 0.75),
                          'dataset': 'npz:../shared/data/mnist.npz', 'nesterov': True})
  points = sweep.expand(spec, ROOT)
  assert [p.name for p in points] == ['model=lenet5,learning_rate=0.05,seed=3',
                                      'model=lenet5_fc100,learning_rate=0.01,seed=3']
  assert points[1].command('/abs/sweep', TRAINER) == [
      sys.executable, '-m', 'experiments.train', '--config=configs/default.py:smoke',
      '--config.dataset=npz:../shared/data/mnist.npz', '--config.lr_boundaries=(0.5,0.75)',
      '--config.nesterov=true', '--config.num_epochs=2.0', '--config.model=lenet5_fc100',
      '--config.learning_rate=0.01', '--config.seed=3',
      '--workdir=/abs/sweep/model=lenet5_fc100,learning_rate=0.01,seed=3']
  # A workdir inside the repository is given relative to it, where the points run.
  assert points[0].command(os.path.join(ROOT, 'runs', 'x'), TRAINER)[-1] == \
      '--workdir=runs/x/model=lenet5,learning_rate=0.05,seed=3'


def test_names_are_short_and_safe_for_paths_and_tuples():
  points = sweep.expand(_spec([{'product': {'dataset': ['npz:../shared/data/cifar10.npz',
                                                        'folder:/data/imagenette2/', 'digits'],
                                            'lr_boundaries': [(0.3, 0.6)]}}]), ROOT)
  assert [p.name for p in points] == ['dataset=cifar10,lr_boundaries=0.3-0.6',
                                      'dataset=imagenette2,lr_boundaries=0.3-0.6',
                                      'dataset=digits,lr_boundaries=0.3-0.6']
  assert [p.name for p in sweep.expand(_spec([]), ROOT)] == ['run']


@pytest.mark.parametrize('spec, message', [
    (_spec([{'zip': {'model': ['lenet5', 'lenet5_fc100'], 'seed': [0]}}]),
     'zip lists differ in length: model has 2, seed has 1'),
    (_spec([{'product': {'modle': ['lenet5']}}]), "'modle' is not a config field"),
    (_spec([{'grid': {'model': ['lenet5']}}]), 'axes[0] must be'),
    (_spec([{'product': {'model': []}}]), 'must be a non-empty list'),
    (_spec([{'product': {'seed': [0]}}], overrides={'seed': 1}), 'axes[0] sets seed, already set'),
    (_spec([{'product': {'dataset': ['npz:a/x.npz', 'npz:b/x.npz']}}]),
     'sweep points share a name: dataset=x'),
    (_spec([], base='configs/nope.py'), "base='configs/nope.py': no such config file"),
])
def test_malformed_specs_are_refused_in_one_line(spec, message):
  with pytest.raises(ValueError) as e:
    sweep.expand(spec, ROOT)
  assert message in str(e.value)


def _fake_launch(fail=None, calls=None):
  """A launcher that writes what a run writes, or fails with the last log line fail[model]."""
  fail = fail or {}

  def launch(point, workdir, log):
    if calls is not None:
      calls.append(point.name)
    run_dir = os.path.join(workdir, point.name)
    with open(os.path.join(run_dir, 'config.json'), 'w') as f:
      json.dump({k: v for k, v in point.all_overrides().items()}, f)
    if point.overrides['model'] in fail:
      log.write(f'some progress\n{fail[point.overrides["model"]]}\n')
      return 2
    with open(os.path.join(run_dir, 'results.json'), 'w') as f:
      json.dump({'test_accuracy': 0.5}, f)
    return 0
  return launch


def test_failure_is_isolated_finished_points_are_skipped_and_a_changed_budget_is_refused(tmp_path):
  points = sweep.expand(_spec([{'product': {'model': ['lenet5', 'lenet6', 'lenet5_fc100']}}],
                              overrides={'num_train_steps': 3}), ROOT)
  calls, lines = [], []
  outcomes = sweep.run(points, str(tmp_path), TRAINER, workers=2,
                       launch=_fake_launch({'lenet6': "error: config.model='lenet6' is not valid"},
                                           calls), echo=lines.append)
  assert [o.status for o in outcomes] == ['succeeded', 'failed', 'succeeded']
  assert outcomes[1].message == "exit status 2: error: config.model='lenet6' is not valid"
  assert sorted(calls) == sorted(p.name for p in points) and len(lines) == 3
  log = (tmp_path / 'model=lenet6' / 'log.txt').read_text()
  assert log.startswith('# ') and 'experiments.train' in log.splitlines()[0]
  text = sweep.summary(outcomes, str(tmp_path))
  assert text.splitlines()[0].endswith('2 succeeded, 0 skipped (already finished), 1 failed')
  assert "FAILED model=lenet6: exit status 2: error: config.model='lenet6'" in text

  calls.clear()  # A rerun: the failed point only, its error line from this attempt's log.
  outcomes = sweep.run(points, str(tmp_path), TRAINER, echo=lines.append,
                       launch=_fake_launch({'lenet6': 'RuntimeError: boom'}, calls))
  assert [o.status for o in outcomes] == ['skipped', 'failed', 'skipped']
  assert calls == ['model=lenet6'] and outcomes[1].message == 'exit status 2: RuntimeError: boom'
  outcomes = sweep.run(points, str(tmp_path), TRAINER, launch=_fake_launch(), echo=lines.append)
  assert [o.status for o in outcomes] == ['skipped', 'succeeded', 'skipped']

  # The same workdir with another budget: refused, not silently skipped.
  changed = sweep.expand(_spec([{'product': {'model': ['lenet5']}}],
                               overrides={'num_train_steps': 4}), ROOT)
  [outcome] = sweep.run(changed, str(tmp_path), TRAINER, launch=_fake_launch(), echo=lines.append)
  assert outcome.status == 'failed'
  assert 'holds a run with config.num_train_steps=3, not 4' in outcome.message


def _write_spec(path, digits_dir, models):
  path.write_text(f'''"""A two-point test sweep."""
import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.base = 'configs/default.py:smoke'
  c.overrides = ml_collections.ConfigDict(
      {{'num_train_steps': 3, 'log_every_steps': 3, 'data_dir': {digits_dir!r}}})
  c.axes = [{{'product': {{'model': {models!r}}}}}]
  return c
''')
  return str(path)


def _launcher(*args):
  return subprocess.run([sys.executable, '-m', 'experiments.sweep', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})


def test_dry_run_lists_points_and_commands(tmp_path):
  spec = _write_spec(tmp_path / 'spec.py', '/data', ['lenet5', 'lenet5_fc100'])
  proc = _launcher(f'--config={spec}', f'--workdir={tmp_path}/sweep', '--dry_run')
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[1:] == [
      '[1/2] model=lenet5',
      f'  {sys.executable} -m experiments.train --config=configs/default.py:smoke --config.data_dir=/data '
      '--config.log_every_steps=3 --config.num_train_steps=3 --config.model=lenet5 '
      f'--workdir={tmp_path}/sweep/model=lenet5',
      '[2/2] model=lenet5_fc100',
      f'  {sys.executable} -m experiments.train --config=configs/default.py:smoke --config.data_dir=/data '
      '--config.log_every_steps=3 --config.num_train_steps=3 --config.model=lenet5_fc100 '
      f'--workdir={tmp_path}/sweep/model=lenet5_fc100']
  assert not os.path.exists(tmp_path / 'sweep')


def test_real_sweep_isolates_a_failing_point_reports_and_resumes(tmp_path, digits_dir):
  spec = _write_spec(tmp_path / 'spec.py', digits_dir, ['lenet5', 'lenet6'])
  workdir = tmp_path / 'sweep'
  proc = _launcher(f'--config={spec}', f'--workdir={workdir}', '--workers=2')
  assert proc.returncode == 1, proc.stdout + proc.stderr
  out = proc.stdout
  assert '1 succeeded, 0 skipped (already finished), 1 failed' in out
  assert "FAILED model=lenet6: exit status 2: error: config.model='lenet6' is not valid" in out
  assert '| lenet5 | digits |' in out  # the comparison table, printed
  results = json.loads((workdir / 'model=lenet5' / 'results.json').read_text())
  assert results['steps'] == 3 and results['resumed_from_step'] == 0
  for name in ('comparison.md', 'comparison.csv', 'accuracy_vs_macs.png', 'learning_curves.png'):
    assert (workdir / name).exists(), name

  # Interrupted after its last checkpoint: the rerun resumes there instead of starting over.
  os.remove(workdir / 'model=lenet5' / 'results.json')
  [point] = [p for p in sweep.expand(_load(spec), ROOT) if p.overrides['model'] == 'lenet5']
  [outcome] = sweep.run([point], str(workdir), TRAINER, echo=lambda line: None)
  assert outcome.status == 'succeeded', outcome.message
  resumed = json.loads((workdir / 'model=lenet5' / 'results.json').read_text())
  assert resumed['resumed_from_step'] == 3
  assert resumed['weights_sha256'] == results['weights_sha256']
  assert (workdir / 'model=lenet5' / 'log.txt').read_text().count('\n# ') == 1  # two attempts


def _module(path):
  module_spec = importlib.util.spec_from_file_location('sweep_spec', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def _load(path, arg=None):
  return _module(path).get_config(arg)


SWEEP_FILES = sorted(glob.glob(os.path.join(ROOT, 'configs', 'sweeps', '*.py')))


@pytest.mark.parametrize('path', [p for p in SWEEP_FILES if not p.endswith('__init__.py')],
                         ids=os.path.basename)
def test_every_shipped_sweep_is_documented_and_every_point_is_a_valid_config(path):
  module = _module(path)
  rel = os.path.relpath(path, ROOT)
  assert f'python -m experiments.sweep --config={rel}' in module.__doc__
  variants = [None] + sorted(set(re.findall(re.escape(rel) + r':(\w+)', module.__doc__)))
  for arg in variants:
    points = sweep.expand(module.get_config(arg), ROOT)
    assert points, arg
    for point in points:
      base, _, base_arg = point.base.partition(':')
      config = _module(os.path.join(ROOT, base)).get_config(base_arg or None)
      for field, value in point.all_overrides().items():
        *parents, leaf = field.split('.')
        node = config
        for parent in parents:
          node = node[parent]
        node[leaf] = value
      config_lib.validate(config)
  with pytest.raises(ValueError, match='unknown (sweep variant|config argument)'):
    module.get_config('no_such_variant')


def test_a_shipped_sweep_takes_overrides_its_file_left_to_the_recipe(tmp_path):
  """`--config.overrides.FIELD=` reaches every point, also for a field the sweep file does not
  set itself (the recipe config does); a misspelt field is one line naming the valid ones."""
  proc = _launcher('--config=configs/sweeps/cifar10_resnet.py:reduced',
                   '--config.overrides.num_train_steps=3', f'--workdir={tmp_path}/s', '--dry_run')
  assert proc.returncode == 0, proc.stderr
  commands = [line for line in proc.stdout.splitlines() if 'experiments.train' in line]
  assert len(commands) == 5 and all('--config.num_train_steps=3 ' in c for c in commands)
  bad = _launcher('--config=configs/sweeps/cifar10_resnet.py:reduced',
                  '--config.overrides.num_trian_steps=3', f'--workdir={tmp_path}/s', '--dry_run')
  assert bad.returncode == 2
  assert "'num_trian_steps' is not a config field" in bad.stderr.strip().splitlines()[-1]
