"""Sweeps: a base config and axes of `config.*` overrides, expanded into points, one process each.

A sweep file (configs/sweeps/NAME.py) returns from `get_config(arg)` a ConfigDict with
  base       the training config file, relative to the repository root, optionally with ':arg';
  overrides  config overrides given to every point (the budget, the data set ...); nested
             ConfigDicts stand for dotted fields;
  axes       a list of {'product': {field: [values]}} and {'zip': {field: [values], field2: [...]}}.
  replicas   (optional, default False) True: the points that differ only in `seed` train as one
             run of replicas (config.seeds, cnn_zoo.train.replicas), named `...,seeds=0-1-2`;
             the comparison reads it as those seeds' runs, the same table as separate processes.
The points are the cartesian product of the axes; a zip axis contributes its fields' values
together, position by position (e.g. a learning rate per model). A point is named after its axis
overrides (`model=resnet20,seed=0`) and trains into WORKDIR/NAME with the command its launcher
gives (a `Trainer`: experiments.sweep gives experiments.train's), one process per point.
"""

import concurrent.futures
import dataclasses
import datetime
import functools
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from typing import Any, Callable

from cnn_zoo import errors, run_files
from cnn_zoo.train import config as config_lib

SPEC_FIELDS = ('base', 'overrides', 'axes', 'replicas')
AXIS_KINDS = ('product', 'zip')
LOG_NAME = 'log.txt'
# The variable that asks a point's launcher to stop with the sweep (cli.stop_with_parent).
STOP_WITH = 'CNN_ZOO_STOP_WITH_PID'  # cli.STOP_WITH (sweep does not import the launchers' cli)
# Signals passed on to the running points: a scheduler, Ctrl-C, a closed terminal or SSH session.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SUCCEEDED, SKIPPED, FAILED = 'succeeded', 'skipped', 'failed'


@dataclasses.dataclass(frozen=True)
class Trainer:
  """How a point is trained: a command line that takes `--config=FILE --config.FIELD=VALUE
  --workdir=DIR`, run from `root`, the folder that config files and relative workdirs are
  relative to."""
  command: tuple[str, ...]
  root: str

  def relative(self, path: str) -> str:
    """`path` as seen from `root`: relative inside it, else absolute."""
    path = os.path.abspath(path)
    rel = os.path.relpath(path, self.root)
    return path if rel == '..' or rel.startswith('..' + os.sep) else rel


@dataclasses.dataclass(frozen=True)
class Point:
  """One training run of a sweep."""
  name: str
  base: str  # config file relative to the repository root, with an optional ':arg'
  overrides: dict[str, Any]  # this point's axis values, in axis order: they name it
  fixed: dict[str, Any]  # the sweep's overrides, the same for every point

  def all_overrides(self) -> dict[str, Any]:
    return {**self.fixed, **self.overrides}

  def command(self, workdir: str, trainer: Trainer) -> list[str]:
    """The command line that trains this point, to be run from trainer.root."""
    return [*trainer.command, f'--config={self.base}',
            *(f'--config.{k}={format_value(v)}' for k, v in self.all_overrides().items()),
            f'--workdir={os.path.join(trainer.relative(workdir), self.name)}']


def format_value(value) -> str:
  """A value as a `--config.FIELD=` override spells it."""
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, (tuple, list)):
    return '(' + ','.join(format_value(v) for v in value) + (',)' if len(value) == 1 else ')')
  if isinstance(value, float):
    return repr(value)
  return str(value)


def name_value(value) -> str:
  """A short, file-name-safe spelling of a value: `npz:../shared/data/cifar10.npz` -> `cifar10`."""
  if isinstance(value, (tuple, list)):
    return '-'.join(name_value(v) for v in value)
  text = format_value(value)
  if isinstance(value, str) and ('/' in text or ':' in text):
    text = text.split(':', 1)[-1].rstrip('/')
    text = os.path.splitext(os.path.basename(text))[0] or text
  return re.sub(r'[^A-Za-z0-9._+-]', '_', text)


def _plain(tree):
  """ConfigDicts (and their FieldReferences) to plain dicts and values."""
  if hasattr(tree, 'to_dict'):
    tree = tree.to_dict()
  if isinstance(tree, dict):
    return {k: _plain(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return type(tree)(_plain(v) for v in tree)
  return tree


def _check_field(field: str, where: str) -> None:
  valid = config_lib.defaults().keys()
  if not isinstance(field, str) or field.split('.')[0] not in valid:
    raise errors.ConfigError(f'sweep {where}: {field!r} is not a config field; valid fields: '
                     f'{", ".join(sorted(valid))}')


def _axis_points(i: int, axis) -> list[dict[str, Any]]:
  """The override dicts one axis contributes."""
  if not isinstance(axis, dict) or len(axis) != 1 or next(iter(axis)) not in AXIS_KINDS:
    raise errors.ConfigError(f'sweep axes[{i}] must be {{"product": {{field: [values]}}}} or '
                     f'{{"zip": {{field: [values], ...}}}}, got {axis!r}')
  kind, fields = next(iter(axis.items()))
  if not isinstance(fields, dict) or not fields:
    raise errors.ConfigError(f'sweep axes[{i}].{kind} must map config fields to lists of values, '
                     f'got {fields!r}')
  for field, values in fields.items():
    _check_field(field, f'axes[{i}].{kind}')
    if not isinstance(values, (list, tuple)) or not values:
      raise errors.ConfigError(f'sweep axes[{i}].{kind}.{field} must be a non-empty list of values, '
                       f'got {values!r}')
  if kind == 'zip':
    lengths = {field: len(values) for field, values in fields.items()}
    if len(set(lengths.values())) > 1:
      raise errors.ConfigError(f'sweep axes[{i}].zip lists differ in length: '
                       + ', '.join(f'{f} has {n}' for f, n in lengths.items()))
    return [dict(zip(fields, values)) for values in zip(*fields.values())]
  return [dict(zip(fields, values)) for values in itertools.product(*fields.values())]


def expand(spec, root: str) -> list[Point]:
  """The points of a sweep spec (a ConfigDict or dict), in order; refuses a malformed spec.
  `root`: the folder its base config file is relative to."""
  spec = _plain(spec)
  unknown = sorted(set(spec) - set(SPEC_FIELDS))
  if unknown:
    raise errors.ConfigError(f'unknown sweep field(s) {", ".join(unknown)}; valid fields: '
                     f'{", ".join(SPEC_FIELDS)}')
  base = spec.get('base')
  if not isinstance(base, str) or not base:
    raise errors.ConfigError(f'sweep base={base!r} must name a config file, e.g. configs/default.py')
  if not os.path.isfile(os.path.join(root, base.split(':', 1)[0])):
    raise errors.ConfigError(f'sweep base={base!r}: no such config file under {root}')
  fixed = config_lib.flatten(spec.get('overrides') or {})
  for field in fixed:
    _check_field(field, 'overrides')
  axes = spec.get('axes') or []
  if not isinstance(axes, (list, tuple)):
    raise errors.ConfigError(f'sweep axes must be a list of product and zip axes, got {axes!r}')
  per_axis = [_axis_points(i, axis) for i, axis in enumerate(axes)]
  seen = set(fixed)
  for i, choices in enumerate(per_axis):
    twice = sorted(seen & set(choices[0]))
    if twice:
      raise errors.ConfigError(f'sweep axes[{i}] sets {", ".join(twice)}, already set by '
                       f'overrides or an earlier axis')
    seen |= set(choices[0])
  replicas = spec.get('replicas', False)
  if not isinstance(replicas, bool):
    raise errors.ConfigError(f'sweep replicas={replicas!r} must be true or false')
  if replicas and not any('seed' in choices[0] for choices in per_axis):
    raise errors.ConfigError('sweep replicas=True trains the seed axis as replicas of one run, '
                             'but no axis sets seed')
  combos = [{k: v for part in combo for k, v in part.items()}
            for combo in itertools.product(*per_axis)]
  if replicas:  # one run per setting, its seeds as replicas
    grouped: dict[str, dict] = {}
    for overrides in combos:
      rest = {k: v for k, v in overrides.items() if k != 'seed'}
      point = grouped.setdefault(json.dumps(rest, sort_keys=True), {**rest, 'seeds': ()})
      point['seeds'] = (*point['seeds'], overrides['seed'])
    combos = list(grouped.values())
  points = []
  for overrides in combos:
    name = ','.join(f'{k}={name_value(v)}' for k, v in overrides.items()) or 'run'
    points.append(Point(name, base, overrides, fixed))
  names = [p.name for p in points]
  clashes = sorted({n for n in names if names.count(n) > 1})
  if clashes:
    raise errors.ConfigError(f'sweep points share a name: {", ".join(clashes)}; their values differ only '
                     f'in characters a directory name drops')
  return points


def describe(points: list[Point], workdir: str, trainer: Trainer) -> str:
  """The dry-run listing: every point with the full command that trains it."""
  lines = [f'{len(points)} point(s), each run from {trainer.root} as:']
  for i, point in enumerate(points, 1):
    lines.append(f'[{i}/{len(points)}] {point.name}')
    lines.append('  ' + shlex.join(point.command(workdir, trainer)))
  return '\n'.join(lines)


@dataclasses.dataclass(frozen=True)
class Outcome:
  point: Point
  status: str  # SUCCEEDED, SKIPPED or FAILED
  seconds: float = 0.0
  message: str = ''  # why it failed, or the test accuracy it reached


def _recorded_mismatch(point: Point, run_dir: str) -> str:
  """Why the run already in `run_dir` is not this point ('' when its config.json agrees)."""
  try:
    saved = run_files.read_object(run_files.path(run_dir, run_files.CONFIG))
  except run_files.Unreadable as e:
    return (f'{e}; it identifies the run in {run_dir}: restore it from a copy, or give another '
            f'--workdir')
  if saved is None:
    return ''
  recorded = config_lib.flatten(saved)
  for field, wanted in point.all_overrides().items():
    has = recorded.get(field, '<absent>')
    if json.loads(json.dumps(has)) != json.loads(json.dumps(wanted)):
      return (f'{run_dir} holds a run with config.{field}={has!r}, not {wanted!r}; '
              f'remove it or give another --workdir')
  return ''


def _last_error(log_path: str, returncode: int) -> str:
  """The last attempt's `error:` line (the launchers' one-line errors), else its last line."""
  try:
    with open(log_path, 'rb') as f:
      f.seek(max(0, os.path.getsize(log_path) - 65536))
      lines = [line.strip() for line in f.read().decode('utf-8', 'replace').splitlines()]
  except OSError:
    lines = []
  headers = [i for i, line in enumerate(lines) if line.startswith('# ')]
  lines = [line for line in lines[headers[-1] + 1 if headers else 0:] if line]
  errors = [line for line in lines if line.startswith('error:')]
  last = errors[-1] if errors else (lines[-1] if lines else '')
  return f'exit status {returncode}' + (f': {last}' if last else '')


class _Children:
  """The running points' processes, so that a signal to the sweep reaches them (and only once: they
  run in their own sessions, out of reach of the terminal's Ctrl-C)."""

  def __init__(self):
    self._lock = threading.Lock()
    self._procs = set()
    self.signum = None  # set once the sweep is asked to stop: no further point starts

  def start(self, args, **kwargs) -> subprocess.Popen:
    with self._lock:
      if self.signum is not None:
        return None
      # STOP_WITH: the point stops (saving a checkpoint) if the sweep dies, even by SIGKILL.
      env = {**(kwargs.pop('env', None) or os.environ), STOP_WITH: str(os.getpid())}
      proc = subprocess.Popen(args, start_new_session=True, env=env, **kwargs)
      self._procs.add(proc)
      return proc

  def finished(self, proc):
    with self._lock:
      self._procs.discard(proc)

  def forward(self, signum, frame=None):
    del frame
    with self._lock:
      self.signum = self.signum or signum
      procs = list(self._procs)
    for proc in procs:
      try:
        proc.send_signal(signum)
      except ProcessLookupError:
        pass


_CHILDREN = _Children()


def stop_signal() -> int | None:
  """The signal the running sweep was asked to stop by, if any: a launcher that waits on
  something other than a local process (cnn_zoo.slurm) polls it."""
  return _CHILDREN.signum


def launch_subprocess(point: Point, workdir: str, log, trainer: Trainer) -> int:
  """Runs the point's training command from trainer.root, output into `log`."""
  proc = _CHILDREN.start(point.command(workdir, trainer), cwd=trainer.root, stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
  if proc is None:
    log.write(f'# not started: the sweep was stopped by {signal.Signals(_CHILDREN.signum).name}\n')
    return 128 + _CHILDREN.signum
  try:
    return proc.wait()
  finally:
    _CHILDREN.finished(proc)


def run_point(point: Point, workdir: str, trainer: Trainer,
              launch: Callable[[Point, str, Any], int] | None = None) -> Outcome:
  """Trains one point unless it has finished; an interrupted one resumes from its checkpoint.
  `launch(point, workdir, log)` runs it (default: trainer's command in a subprocess)."""
  launch = launch or functools.partial(launch_subprocess, trainer=trainer)
  run_dir = os.path.join(workdir, point.name)
  mismatch = _recorded_mismatch(point, run_dir)
  if mismatch:
    return Outcome(point, FAILED, 0.0, mismatch)
  results_path = run_files.path(run_dir, run_files.RESULTS)
  if os.path.exists(results_path):
    results, problem = read_results(results_path)
    if problem:
      return Outcome(point, FAILED, 0.0, problem)
    if results.get('complete', True):
      return Outcome(point, SKIPPED, 0.0, 'already finished')
    # Stopped by its time budget: the rerun goes on from its checkpoint.
  os.makedirs(run_dir, exist_ok=True)
  log_path = os.path.join(run_dir, LOG_NAME)
  start = time.perf_counter()
  with open(log_path, 'a', encoding='utf-8') as log:
    log.write(f'# {datetime.datetime.now().isoformat(timespec="seconds")} '
              f'{shlex.join(point.command(workdir, trainer))}\n')
    log.flush()
    returncode = launch(point, workdir, log)
  seconds = time.perf_counter() - start
  if returncode != 0 or not os.path.exists(results_path):
    return Outcome(point, FAILED, seconds, _last_error(log_path, returncode))
  results, problem = read_results(results_path)
  if problem:
    return Outcome(point, FAILED, seconds, problem)
  reached = f'test top-1 {100 * results["test_accuracy"]:.2f}%'
  if results.get('complete') is False:
    reached += f' at step {results.get("steps")} (time budget used up: rerun to go on)'
  return Outcome(point, SUCCEEDED, seconds, reached)


def read_results(path: str) -> tuple[dict, str]:
  """(results.json of a run, '') or ({}, why it cannot be used) for one unreadable or not a run's."""
  try:
    results = run_files.read_object(path)
    if results is None:
      raise run_files.Unreadable(path, 'FileNotFoundError', 'no such file')
    if not isinstance(results.get('test_accuracy'), (int, float)):
      raise run_files.Unreadable(path, 'ValueError', 'no test_accuracy')
  except run_files.Unreadable as e:
    return {}, f'{e}; remove it to evaluate the point again from its checkpoint'
  return results, ''


def run(points: list[Point], workdir: str, trainer: Trainer, *, workers: int = 1,
        launch: Callable[[Point, str, Any], int] | None = None,
        echo: Callable[[str], None] = print) -> list[Outcome]:
  """Runs every point, up to `workers` at once; one failing point does not stop the others.

  SIGTERM, SIGINT or SIGHUP to the sweep is passed to its running points, which save a checkpoint
  and stop; no further point starts, and errors.Stopped is raised once they have exited. A sweep
  killed outright (SIGKILL, the OOM killer) stops them too: each gets SIGTERM (STOP_WITH).
  """
  if workers < 1:
    raise errors.ConfigError(f'--workers={workers} must be >= 1')
  os.makedirs(workdir, exist_ok=True)
  lock, done, total = threading.Lock(), [0], len(points)

  def one(point):
    if _CHILDREN.signum is not None:
      return Outcome(point, FAILED, 0.0, 'not started: the sweep was stopped')
    outcome = run_point(point, workdir, trainer, launch)
    with lock:
      done[0] += 1
      took = f' in {outcome.seconds:.0f}s' if outcome.status != SKIPPED else ''
      echo(f'[{done[0]}/{total}] {outcome.status}{took}: {point.name}: {outcome.message}')
    return outcome

  _CHILDREN.signum = None
  previous = {}
  if threading.current_thread() is threading.main_thread():
    for signum in STOP_SIGNALS:
      previous[signum] = signal.signal(signum, _CHILDREN.forward)
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
  try:
    outcomes = list(pool.map(one, points))
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  if _CHILDREN.signum is not None:
    stopped = sum(o.message.startswith(f'exit status {128 + _CHILDREN.signum}') for o in outcomes)
    raise errors.Stopped(f'sweep stopped by {signal.Signals(_CHILDREN.signum).name}: passed to its '
                         f'{stopped} running point(s), which saved their checkpoints; rerun the same '
                         f'command to resume', _CHILDREN.signum)
  return outcomes


def summary(outcomes: list[Outcome], workdir: str) -> str:
  """What succeeded, was skipped and failed, with each failure's last error line."""
  count = {s: sum(o.status == s for o in outcomes) for s in (SUCCEEDED, SKIPPED, FAILED)}
  lines = [f'sweep of {len(outcomes)} point(s) in {workdir}: {count[SUCCEEDED]} succeeded, '
           f'{count[SKIPPED]} skipped (already finished), {count[FAILED]} failed']
  for o in outcomes:
    if o.status == FAILED:
      log = os.path.join(workdir, o.point.name, LOG_NAME)
      where = f' (log: {log})' if os.path.exists(log) else ''
      lines.append(f'  FAILED {o.point.name}: {o.message}{where}')
  return '\n'.join(lines)
