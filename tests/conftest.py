"""Shared fixtures: a prepared `digits` TFDS directory and a seconds-long training config.

The `slow` marker is registered in pytest.ini.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # noqa: E402

from configs import default as default_config  # noqa: E402


@pytest.fixture(scope='session', autouse=True)
def conv_impl_auto_fixed(tmp_path_factory):
  """conv_impl='auto' keeps its fixed rule (im2col on CPU) in the suite: measuring costs four
  extra compilations per model and batch shape, and the suite trains dozens of those
  (tests/test_autoconv.py measures, into caches of its own). The cache points at the session's own
  folder all the same, so that no test reads or writes the user's ~/.cache."""
  saved = {k: os.environ.get(k) for k in ('CNN_ZOO_CONV_AUTO', 'CNN_ZOO_CACHE_DIR')}
  os.environ['CNN_ZOO_CONV_AUTO'] = 'fixed'  # subprocesses (the launchers' tests) inherit it
  os.environ['CNN_ZOO_CACHE_DIR'] = str(tmp_path_factory.mktemp('cnn_zoo_cache'))
  yield
  for key, value in saved.items():
    if value is None:
      os.environ.pop(key, None)
    else:
      os.environ[key] = value


@pytest.fixture(scope='session')
def digits_dir(tmp_path_factory):
  """A TFDS data_dir holding the embedded `digits`, prepared once per test session."""
  import tensorflow_datasets as tfds
  from cnn_zoo.data import digits
  digits.register()
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  tfds.builder('digits', data_dir=data_dir).download_and_prepare()
  return data_dir


@pytest.fixture
def smoke_config(digits_dir):
  """LeNet-5 on digits for a handful of steps."""
  config = default_config.get_config('smoke')
  config.data_dir = digits_dir
  config.num_train_steps = 6
  config.log_every_steps = 3
  config.batch_size = 32
  config.eval_batch_size = 64
  return config


@pytest.fixture(scope='session')
def _mlflow_template(tmp_path_factory):
  """An empty MLflow sqlite store, its schema migrated once per session (seconds each time)."""
  from mlflow.tracking import MlflowClient
  path = tmp_path_factory.mktemp('mlflow') / 'mlflow.db'
  MlflowClient(tracking_uri=f'sqlite:///{path}').search_experiments()
  return path


@pytest.fixture
def mlflow_store(_mlflow_template, tmp_path):
  """A fresh local MLflow store for one test: its tracking URI."""
  import shutil
  shutil.copy(_mlflow_template, tmp_path / 'mlflow.db')
  return f'sqlite:///{tmp_path}/mlflow.db'
