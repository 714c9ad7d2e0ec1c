"""The package (issue 34): `pip install .` into a fresh venv gives a `cnn-zoo` command that trains
from any directory, with the data files and configs the code reads at run time; the command's
subcommands are the launchers; config paths resolve in the installed configs."""

import json
import os
import shutil
import site
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import pytest

from cnn_zoo import cli
from experiments import commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the package is built from; the rest of a checkout (tests, docs, runs) is not in it.
SOURCES = ('pyproject.toml', 'README.md', 'LICENSE', 'cnn_zoo', 'configs', 'experiments')


def _venv_python(venv: str) -> str:
  return os.path.join(venv, 'bin', 'python')


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """A fresh venv with cnn_zoo installed by `pip install --no-deps --no-build-isolation` from a
  copy of the sources: its dependencies are this environment's (a .pth file), nothing is
  downloaded, and the checkout is not on its path."""
  base = tmp_path_factory.mktemp('package')
  src, venv = str(base / 'src'), str(base / 'venv')
  os.makedirs(src)
  for name in SOURCES:
    path = os.path.join(ROOT, name)
    if os.path.isdir(path):
      shutil.copytree(path, os.path.join(src, name),
                      ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    else:
      shutil.copy(path, src)
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', venv], check=True)
  purelib = subprocess.run([_venv_python(venv), '-c', 'import sysconfig; '
                            'print(sysconfig.get_paths()["purelib"])'], check=True,
                           capture_output=True, text=True).stdout.strip()
  with open(os.path.join(purelib, '_this_envs_packages.pth'), 'w', encoding='utf-8') as f:
    f.write('\n'.join(site.getsitepackages()) + '\n')
  proc = subprocess.run([sys.executable, '-m', 'pip', '--python', _venv_python(venv), 'install',
                         '--quiet', '--no-deps', '--no-build-isolation', '--no-index', src],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return {'venv': venv, 'purelib': purelib}


def _env():
  """This environment without PYTHONPATH: only the venv's own copy can be imported."""
  return {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}


def test_the_installed_copy_holds_every_data_file_and_config(installed, tmp_path):
  script = '''
import json, os, sys
import cnn_zoo, configs, experiments
from cnn_zoo.pretrained import imagenet, torch_check
from cnn_zoo.visualize import explorer
from cnn_zoo import benchmark
out = {'cnn_zoo': os.path.dirname(cnn_zoo.__file__), 'configs': os.path.dirname(configs.__file__),
       'experiments': os.path.dirname(experiments.__file__),
       'classes': len(imagenet.class_names()), 'page': len(open(explorer.TEMPLATE).read()),
       'manifests': sorted(os.listdir(torch_check.MANIFESTS)),
       'child': benchmark.in_child('machine_and_peak', peak=False),
       'child_path': benchmark.child_env().get('PYTHONPATH')}
print(json.dumps(out))
'''
  proc = subprocess.run([_venv_python(installed['venv']), '-c', script], cwd=tmp_path,
                        capture_output=True, text=True, timeout=300, env=_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  purelib = installed['purelib']
  for package in ('cnn_zoo', 'configs', 'experiments'):
    assert out[package] == os.path.join(purelib, package)  # the venv's copy, not the checkout
  assert out['classes'] == 1000 and out['page'] > 1000
  assert out['manifests'] == sorted(os.listdir(os.path.join(ROOT, 'cnn_zoo/pretrained/manifests')))
  # The benchmark's children import the installed copy too (no checkout to put on PYTHONPATH).
  assert 'error' not in out['child'] and out['child']['cpus'] >= 1, out['child']
  assert out['child_path'] is None  # not site-packages, which would go before the stdlib
  # Every file of the checkout's packages is installed: code, data files, configs, sweeps.
  for package in ('cnn_zoo', 'configs', 'experiments'):
    for folder, dirs, files in os.walk(os.path.join(ROOT, package)):
      dirs[:] = [d for d in dirs if d != '__pycache__']
      for name in files:
        if name.endswith(('.pyc', '.sh')):
          continue  # the .sh scripts are the checkout's GPU-table tools, run from its root
        relative = os.path.relpath(os.path.join(folder, name), ROOT)
        assert os.path.isfile(os.path.join(purelib, relative)), f'{relative} is not installed'


def test_the_console_command_trains_from_another_directory_into_mlflow(installed, mlflow_store,
                                                                       tmp_path):
  """The issue's "done when": `cnn-zoo train --config=configs/default.py:smoke` from a directory
  with no configs/ in it, and the MLflow tracker's run read back from its local store."""
  store = mlflow_store
  command = [os.path.join(installed['venv'], 'bin', 'cnn-zoo'), 'train',
             '--config=configs/default.py:smoke', '--config.num_train_steps=3',
             '--config.batch_size=16', '--config.eval_batch_size=120', '--config.trackers=mlflow',
             f'--config.mlflow_uri={store}', '--workdir=run']
  proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                        env=_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / 'run' / 'results.json') as f:
    results = json.load(f)
  assert results['steps'] == 3 and results['model'] == 'lenet5'
  with open(tmp_path / 'run' / 'config.json') as f:
    assert json.load(f)['log_every_steps'] == 5  # :smoke's
  from mlflow.tracking import MlflowClient
  client = MlflowClient(tracking_uri=store)
  with open(tmp_path / 'run' / 'trackers.json') as f:
    run = client.get_run(json.load(f)['mlflow'])
  assert run.info.status == 'FINISHED'
  assert run.data.params['model'] == 'lenet5' and run.data.params['num_train_steps'] == '3'
  assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, 'test/accuracy')
          ] == [(3, results['test_accuracy'])]
  assert run.data.metrics['params'] == results['params']
  assert client.download_artifacts(run.info.run_id, 'results.json', str(tmp_path))


def test_from_a_checkout_the_benchmark_children_import_it(monkeypatch):
  from cnn_zoo import benchmark
  monkeypatch.setenv('PYTHONPATH', '/elsewhere')
  assert benchmark.child_env()['PYTHONPATH'] == os.pathsep.join((ROOT, '/elsewhere'))


def test_every_launcher_is_a_subcommand():
  launchers = {f'experiments.{name[:-3]}' for name in os.listdir(os.path.join(ROOT, 'experiments'))
               if name.endswith('.py') and
               'app.run(main, ' in open(os.path.join(ROOT, 'experiments', name)).read()}
  assert set(commands.COMMANDS.values()) == launchers
  text = commands.usage()
  assert all(f'  {name} ' in text for name in commands.COMMANDS)


@pytest.mark.parametrize('argv,status,message', [
    (['cnn-zoo', 'trian'], 2, "error: cnn-zoo: no command 'trian'; did you mean train? commands: "),
    (['cnn-zoo'], 2, ''),
    (['cnn-zoo', 'help'], 0, ''),
])
def test_the_command_names_its_subcommands(argv, status, message, capsys):
  with pytest.raises(SystemExit) as exit_:
    commands.main(argv)
  assert exit_.value.code == status
  out, err = capsys.readouterr()
  if message:
    assert err.startswith(message) and len(err.strip().splitlines()) == 1
  else:
    assert 'commands:' in out and 'check-torchvision' in out


@pytest.mark.parametrize('given,found', [
    ('configs/default.py:smoke', 'default.py:smoke'),
    ('default.py:smoke', 'default.py:smoke'),
    ('default', 'default.py'),
    ('sweeps/digits_zoo.py', 'sweeps/digits_zoo.py'),
    ('configs/sweeps/digits_zoo.py:x', 'sweeps/digits_zoo.py:x'),
])
def test_a_config_path_missing_here_is_found_in_the_installed_configs(given, found, tmp_path,
                                                                      monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert cli.find_config(given) == os.path.join(ROOT, 'configs', found)


def test_a_config_path_that_exists_or_is_nowhere_is_left_as_given(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'default.py').write_text('')  # the user's own file wins over the installed one
  for given in ('default.py:smoke', 'nope.py', '../configs/default.py', '/abs/default.py', ''):
    assert cli.find_config(given) == given


def test_config_file_flags_are_resolved_in_either_spelling(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'a config', flag_values=values)
  flags.DEFINE_string('workdir', None, 'a directory', flag_values=values)
  default = os.path.join(ROOT, 'configs', 'default.py')
  argv = ['prog', '--config=default.py:smoke', '--workdir=default.py', '--config', 'default',
          '--config.model=default.py', 'default.py']
  assert cli.find_config_files(argv, values) == [
      'prog', f'--config={default}:smoke', '--workdir=default.py', '--config', default,
      '--config.model=default.py', 'default.py']
