"""A run's workdir: one live writer at a time, and one config per workdir."""

import fcntl
import json
import os
import shutil
import tempfile

from cnn_zoo import errors, output_paths, run_files
from cnn_zoo.train import config as config_lib

# Fields that change how a run is watched, not what it computes: a resume may change them.
OPERATIONAL_FIELDS = ('data_dir', 'log_every_steps', 'keep_checkpoints', 'eval_batch_size',
                      'time_budget_s', 'trackers', 'tracker_project', 'mlflow_uri')
RUN_FILES = run_files.RUN_FILES  # what a run writes; --overwrite removes exactly these
OWN_FILES = run_files.OWN_FILES  # written by name: a symbolic link there is refused

WorkdirError = errors.WorkdirError  # the workdir is busy, holds a different run, or is unreadable


def refuse_links(workdir: str) -> None:
  """A run file that is a symbolic link would be written through (a planted `.lock` or `*.tmp`
  truncates whatever it points at): refused in one line, before anything is opened."""
  for name in OWN_FILES + tuple(n + run_files.TMP for n in OWN_FILES[1:]):
    path = os.path.join(workdir, name)
    if os.path.islink(path):
      raise WorkdirError(f'{path} is a symbolic link (to {os.readlink(path)}); a run writes its '
                         f'files only as themselves, never through a link: remove the link, or '
                         f'choose another --workdir')


def prepare(workdir: str) -> None:
  """Creates the workdir and checks that it can be written, naming the path when it cannot."""
  try:
    os.makedirs(workdir, exist_ok=True)
  except (FileExistsError, NotADirectoryError):
    raise WorkdirError(f'workdir {workdir}: {output_paths.blocking_file(workdir)} is a file, not a '
                       f'directory; choose another --workdir') from None
  except OSError as e:
    raise errors.StorageError(f'cannot create workdir {workdir}: {e.strerror}') from None
  try:
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise errors.StorageError(f'workdir {workdir} cannot be written: {e.strerror}') from None
  refuse_links(workdir)


class Lock:
  """An exclusive lock on WORKDIR/.lock, released by the OS when the process dies (even by kill -9)."""

  def __init__(self, workdir: str):
    # O_NOFOLLOW: a link planted after refuse_links is refused too, never truncated through.
    fd = os.open(run_files.path(workdir, run_files.LOCK),
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    self._file = os.fdopen(fd, 'r+', encoding='utf-8')
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._file.seek(0)
      owner = self._file.read().strip() or 'another process'
      self._file.close()
      raise WorkdirError(f'workdir {workdir} is being written by a live run ({owner}); '
                         f'wait for it or choose another --workdir') from None
    self._file.seek(0)
    self._file.truncate()
    self._file.write(f'pid {os.getpid()} on {os.uname().nodename}')
    self._file.flush()

  def release(self):
    fcntl.flock(self._file, fcntl.LOCK_UN)
    self._file.close()


def differing_fields(saved: dict, config: dict, defaults: dict | None = None) -> list[str]:
  """Fields whose values differ; a field the saved run predates counts at the value it had in
  effect then (config.LEGACY: e.g. weight_init='flax'), else at its default."""
  defaults = {**(defaults or {}), **config_lib.LEGACY}
  keys = (set(saved) | set(config)) - set(OPERATIONAL_FIELDS)
  return sorted(k for k in keys if saved.get(k, defaults.get(k)) != config.get(k))


def _is_run_config(saved: dict, defaults: dict) -> bool:
  """Whether `saved` (a config.json's object) is a cnn_zoo config: it names a model and a dataset
  and most of its fields are fields of today's config (older runs lack some, never most)."""
  known = set(defaults) | set(config_lib.LEGACY)
  return (isinstance(saved.get('model'), str) and isinstance(saved.get('dataset'), str) and
          2 * len(set(saved) & known) >= len(saved))


def saved_config(workdir: str) -> dict | None:
  """The workdir's config.json (None without one); one that is unreadable or not a cnn_zoo
  config is refused (WorkdirError), whatever the caller means to do with the directory."""
  try:
    saved = run_files.read_object(run_files.path(workdir, run_files.CONFIG))
  except run_files.Unreadable as e:
    # config.json is written whole and renamed, so this is damage from outside (or another tool's
    # file): refused even with --overwrite, and never suggesting it, which would delete the
    # checkpoints with it.
    raise WorkdirError(f'{e}; it identifies the run in {workdir}, whose checkpoints are kept: '
                       f'restore it from a copy, or train into another --workdir') from None
  if saved is None:
    return None
  if not _is_run_config(saved, json.loads(config_lib.defaults().to_json())):
    # Another tool's directory: --overwrite would delete its checkpoints/ and config.json.
    shown = ', '.join(sorted(saved)[:4]) + (', ...' if len(saved) > 4 else '')
    raise WorkdirError(f'workdir {workdir} is not a cnn_zoo run: its config.json is not a cnn_zoo '
                       f'config (fields: {shown or "none"}); nothing in it is replaced or '
                       f'deleted: choose another --workdir')
  return saved


def check_same_run(workdir: str, config_json: str, overwrite: bool) -> None:
  """Refuses a workdir holding a run of another config, unless `overwrite` (which clears it); a
  config.json that is unreadable or not a cnn_zoo config is refused even with `overwrite`."""
  saved = saved_config(workdir)
  if saved is None:
    return
  defaults = json.loads(config_lib.defaults().to_json())
  fields = differing_fields(saved, json.loads(config_json), defaults)
  if not fields:
    return
  if not overwrite:
    # A field the saved run predates is shown at the value it ran with, as it was compared.
    ran_with = {**defaults, **config_lib.LEGACY, **saved}
    shown = ', '.join(f'{k}={ran_with.get(k)!r} -> {json.loads(config_json).get(k)!r}'
                      for k in fields[:3])
    raise WorkdirError(f'workdir {workdir} holds a run of a different config ({shown}'
                       f'{", ..." if len(fields) > 3 else ""}); choose another --workdir or pass '
                       f'--overwrite to replace it')
  for name in RUN_FILES:
    target = os.path.join(workdir, name)
    if os.path.islink(target) and os.path.isdir(target):  # checkpoints/ kept on another disk
      for entry in os.listdir(target):
        inner = os.path.join(target, entry)
        if os.path.isdir(inner) and not os.path.islink(inner):
          shutil.rmtree(inner)
        else:
          os.remove(inner)
    elif os.path.isdir(target):
      shutil.rmtree(target)
    elif os.path.exists(target):
      os.remove(target)
