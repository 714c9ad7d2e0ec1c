"""Experiment trackers as run writers: MLflow and Weights & Biases, each imported only when
`config.trackers` names it.

  --config.trackers=mlflow   "--config.trackers=('mlflow','wandb')"

Each receives the run's config (as parameters), every metric record (TRAIN_OR_TEST/NAME at its
step) and results.json (an artifact, and its numbers). MLflow logs to `config.mlflow_uri`, or
where MLFLOW_TRACKING_URI or MLflow's default puts it, in the experiment `config.tracker_project`;
W&B to the project `config.tracker_project` with its files under WORKDIR/wandb (WANDB_MODE=offline
keeps them there, for `wandb sync`). A rerun that resumes the workdir goes on in the same tracker
run: WORKDIR/trackers.json keeps their ids.
"""

import importlib.util
import json
import os
import secrets
import time

from cnn_zoo import errors, run_files

NAMES = ('mlflow', 'wandb')
IDS_FILE = run_files.TRACKERS
INSTALL = "pip install 'cnn_zoo[trackers]'"


def check(names) -> None:
  """ConfigError unless `names` is a tuple of known trackers whose library is installed."""
  if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
    raise errors.ConfigError(f'config.trackers={names!r} must be a tuple of names; valid names: '
                             f'{", ".join(NAMES)}')
  for name in names:
    if name not in NAMES:
      raise errors.ConfigError(f'config.trackers: {name!r} is not a tracker; valid names: '
                               f'{", ".join(NAMES)}')
    if importlib.util.find_spec(name) is None:
      raise errors.ConfigError(f'config.trackers: {name!r} is not installed ({INSTALL})')
  if len(set(names)) != len(names):
    raise errors.ConfigError(f'config.trackers={tuple(names)!r} names a tracker twice')


def make(names, workdir: str, config) -> list:
  """The writers of the trackers `names`, in that order."""
  kinds = {'mlflow': MlflowWriter, 'wandb': WandbWriter}
  return [kinds[name](workdir, config.tracker_project, config) for name in names]


def _ids(workdir: str) -> dict:
  try:
    return run_files.read_object(run_files.path(workdir, IDS_FILE)) or {}
  except run_files.Unreadable:  # a new tracker run is started, and its id kept
    return {}


def _keep_id(workdir: str, name: str, run_id: str) -> None:
  run_files.write_json(run_files.path(workdir, IDS_FILE), {**_ids(workdir), name: run_id})


def _flat(config: dict, prefix: str = '') -> dict:
  """Nested config fields as dotted names (model_kwargs.activation), as --config overrides say."""
  out = {}
  for k, v in config.items():
    if isinstance(v, dict) and v:
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _numbers(record: dict) -> dict:
  return {k: v for k, v in record.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)}


class MlflowWriter:
  """One MLflow run per workdir: the config as params, records as metrics, results.json as an
  artifact and its numbers as metrics; FINISHED at the end, KILLED when stopped before it."""

  def __init__(self, workdir: str, project: str, config):
    from mlflow.tracking import MlflowClient  # pylint: disable=g-import-not-at-top
    self._workdir, self._project = workdir, project
    self._client = MlflowClient(tracking_uri=config.mlflow_uri or None)
    self.run_id = None

  def start(self, config, resume_step):
    from mlflow import entities, exceptions  # pylint: disable=g-import-not-at-top
    run_id = _ids(self._workdir).get('mlflow')
    if run_id:
      try:
        self._client.get_run(run_id)
        self._client.update_run(run_id, status='RUNNING')
        self.run_id = run_id
        return  # its params are logged: a resume may change only operational fields
      except exceptions.MlflowException:
        pass  # not in this store (another tracking URI): a new run
    experiment = self._client.get_experiment_by_name(self._project)
    experiment_id = (experiment.experiment_id if experiment else
                     self._client.create_experiment(self._project))
    run = self._client.create_run(
        experiment_id, run_name=os.path.basename(os.path.abspath(self._workdir)),
        tags={'cnn_zoo.workdir': os.path.abspath(self._workdir)})
    self.run_id = run.info.run_id
    params = [entities.Param(k, json.dumps(v) if not isinstance(v, str) else v)
              for k, v in sorted(_flat(config).items())]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
      self._client.log_batch(self.run_id, params=params[i:i + 100])
    _keep_id(self._workdir, 'mlflow', self.run_id)

  def write(self, step, split, values):
    from mlflow import entities  # pylint: disable=g-import-not-at-top
    now = int(time.time() * 1000)
    metrics = [entities.Metric(f'{split}/{k}', float(v), now, step)
               for k, v in _numbers(values).items()]
    if metrics:
      self._client.log_batch(self.run_id, metrics=metrics)

  def flush(self):
    pass

  def close(self, results=None):
    if results is not None:
      self._client.log_dict(self.run_id, results, run_files.RESULTS)  # the artifact's name
      for k, v in _numbers(results).items():
        self._client.log_metric(self.run_id, k, float(v), step=int(results['steps']))
    self._client.set_terminated(self.run_id, 'FINISHED' if results is not None else 'KILLED')


class WandbWriter:
  """One W&B run per workdir (files under WORKDIR/wandb): the config, records logged at their
  step, results.json saved with the run and its numbers in the run's summary."""

  def __init__(self, workdir: str, project: str, config):
    del config
    import wandb  # pylint: disable=g-import-not-at-top
    self._wandb, self._workdir, self._project = wandb, workdir, project
    self._run = None

  def start(self, config, resume_step):
    run_id = _ids(self._workdir).get('wandb') or secrets.token_hex(4)  # W&B's id form: [0-9a-z]
    self._run = self._wandb.init(
        project=self._project, dir=os.path.abspath(self._workdir), id=run_id, resume='allow',
        name=os.path.basename(os.path.abspath(self._workdir)), config=config,
        reinit='create_new', settings=self._wandb.Settings(console='off', silent=True))
    _keep_id(self._workdir, 'wandb', run_id)

  def write(self, step, split, values):
    metrics = {f'{split}/{k}': v for k, v in _numbers(values).items()}
    if metrics:
      self._run.log(metrics, step=step)

  def flush(self):
    pass

  def close(self, results=None):
    if results is not None:
      self._run.summary.update(_numbers(results))
      self._run.save(run_files.path(os.path.abspath(self._workdir), run_files.RESULTS),
                     base_path=os.path.abspath(self._workdir), policy='now')
    self._run.finish(exit_code=0 if results is not None else 1)
