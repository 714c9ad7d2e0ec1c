"""Orbax checkpoints of the train state: atomic saves, the latest few kept, restore on any mesh."""

import errno
import os
import sys

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from cnn_zoo import errors, run_files
from cnn_zoo.output_paths import storage_reason
from cnn_zoo.train.state import TrainState

# Where step directories that cannot be restored are moved, beside checkpoints/ (orbax ignores it).
DAMAGED = run_files.DAMAGED
# The fallback inside the checkpoint directory when it is a mount point of its own (orbax ignores it).
DAMAGED_INSIDE = 'damaged'
# Orbax writes this file into every step directory it finishes (orbax-checkpoint >= 0.5).
_FINISHED_MARK = '_CHECKPOINT_METADATA'
def _drop_abandoned_reads() -> None:
  """A restore that fails part-way leaves TensorStore reads whose callbacks find orbax's event
  loop closed; Python would print each as a traceback. Those (and only those) are dropped."""
  previous = sys.unraisablehook
  if getattr(previous, 'cnn_zoo', False):
    return

  def hook(unraisable):
    value = unraisable.exc_value
    if not (isinstance(value, RuntimeError) and str(value) == 'Event loop is closed'):
      previous(unraisable)

  hook.cnn_zoo = True
  sys.unraisablehook = hook


def _arrays(state: TrainState) -> dict:
  return {'step': state.step, 'params': state.params, 'batch_stats': state.batch_stats,
          'opt_state': state.opt_state, 'rng': state.rng}


def _shapes(tree, parts) -> dict:
  """{'params/Dense_0/kernel': (84, 10), ...} of the leaves under the top-level keys `parts`."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path({k: tree.get(k) for k in parts})[0]:
    names = [str(getattr(p, 'key', getattr(p, 'name', getattr(p, 'idx', p)))) for p in path]
    out['/'.join(names)] = tuple(int(d) for d in getattr(leaf, 'shape', ()))
  return out


def exists(workdir: str) -> bool:
  """Whether WORKDIR/checkpoints holds a finished step (a run to resume), without opening orbax."""
  directory = run_files.path(workdir, run_files.CHECKPOINTS)
  return os.path.isdir(directory) and any(
      d.isdigit() and os.path.exists(os.path.join(directory, d, _FINISHED_MARK))
      for d in os.listdir(directory))


class Checkpoints:
  """The run's checkpoints in WORKDIR/checkpoints.

  Orbax writes each step into a temporary directory and renames it when complete, so a killed
  save leaves no checkpoint that looks finished; older ones are deleted only after a newer one is.
  A step directory that is empty, half-copied or unreadable is moved to WORKDIR/checkpoints.damaged
  (kept for inspection) and the one before it is used.
  """

  def __init__(self, workdir: str, keep: int = 3, move_damaged: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = run_files.path(self.workdir, run_files.CHECKPOINTS)
    self._keep = keep
    self._move_damaged = move_damaged  # process 0 only: the directory is shared
    # A step directory orbax never finished (empty, or an interrupted copy) would make it misread
    # the others too: set it aside before orbax looks.
    for step in self._step_dirs():
      if not os.path.exists(os.path.join(self.directory, str(step), _FINISHED_MARK)):
        self._set_aside(step, f'no {_FINISHED_MARK}: an interrupted save or copy')
    self._manager = self._open()

  def _open(self):
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                             enable_async_checkpointing=True))

  def _step_dirs(self) -> list[int]:
    if not os.path.isdir(self.directory):
      return []
    return sorted(int(d) for d in os.listdir(self.directory)
                  if d.isdigit() and os.path.isdir(os.path.join(self.directory, d)))

  def damaged_directory(self) -> str:
    """Where unreadable steps go: beside the real checkpoint directory (checkpoints/ may be a link
    to another disk; a rename cannot cross file systems), or inside it if it is a mount point."""
    real = os.path.realpath(self.directory)
    # WORKDIR/checkpoints.damaged unless checkpoints/ is a link
    beside = real + DAMAGED.removeprefix(run_files.CHECKPOINTS)
    try:
      if os.stat(os.path.dirname(real)).st_dev != os.stat(real).st_dev:
        return os.path.join(real, DAMAGED_INSIDE)
    except OSError:
      pass
    return beside

  def _set_aside(self, step: int, reason: str) -> None:
    """Logs one line and moves step's directory out of orbax's sight, keeping it for inspection."""
    source = os.path.join(self.directory, str(step))
    folder = self.damaged_directory()
    target = os.path.join(folder, str(step))
    if self._move_damaged:
      n = 1
      while os.path.exists(target):
        n += 1
        target = os.path.join(folder, f'{step}-{n}')
      try:
        os.makedirs(folder, exist_ok=True)
        os.rename(source, target)
      except OSError as e:
        # Nothing moved (a rename is all or nothing): the run stops rather than misread the rest.
        why = 'another file system' if e.errno == errno.EXDEV else e.strerror
        raise errors.StorageError(f'checkpoint at step {step} is unreadable ({reason}) and cannot '
                                  f'be set aside to {target} ({why}); nothing was moved: move '
                                  f'{source} away yourself and rerun') from None
    kept = f'moved it to {target}' if self._move_damaged else f'left it in {source}'
    logging.warning('checkpoint at step %d is unreadable (%s); %s and trying the previous one',
                    step, reason, kept)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, state: TrainState, force: bool = False) -> None:
    step = int(jax.device_get(state.step))
    try:
      # Also raises the error of the previous asynchronous save, if it failed.
      self._manager.save(step, args=ocp.args.StandardSave(_arrays(state)), force=force)
    except Exception as e:  # pylint: disable=broad-except
      self._raise_storage(e, step)
      raise

  def _check_fits(self, step: int, template: TrainState, num_classes: int | None) -> None:
    """Refuses (moving nothing) a readable checkpoint whose saved parameters differ from the
    model's in names or shapes: a good run of another model, not damage."""
    _drop_abandoned_reads()  # reading a damaged step's metadata abandons reads too
    try:
      # The saved tree's metadata (names, shapes), read without the arrays; 'default' is the
      # directory of a manager's single item.
      handler = ocp.StandardCheckpointHandler()
      try:
        saved = handler.metadata(epath.Path(self.directory) / str(step) / 'default')
      finally:
        handler.close()  # its threads and event loop end here, not at exit
      saved = _shapes(getattr(saved, 'tree', saved) or {}, ('params', 'batch_stats'))
    except Exception:  # pylint: disable=broad-except
      return  # unreadable metadata: the restore itself decides (and sets the step aside)
    if not saved:
      return
    now = _shapes(_arrays(template), ('params', 'batch_stats'))
    if saved == now:
      return
    where = f'the checkpoint at step {step} in {self.directory}'
    fix = ('nothing was moved: train it into another --workdir, or give it back the model and '
           'data it was trained on')
    changed = [k for k in now if k in saved and saved[k] != now[k]]
    if changed:
      key = max(changed, key=lambda k: len(now[k]))  # a kernel says more than its bias
      old, new = saved[key], now[key]
      why = ''
      if (num_classes and len(old) == len(new) and old[:-1] == new[:-1] and new[-1] == num_classes):
        why = f': the class count changed ({old[-1]} saved, {new[-1]} now)'
      raise errors.WorkdirError(f'{where} does not fit the model: {key} {old} saved vs {new} '
                                f'now{why}; {fix}')
    extra, missing = sorted(set(saved) - set(now)), sorted(set(now) - set(saved))
    parts = ([f'it has {", ".join(extra[:3])}{" ..." if len(extra) > 3 else ""} that the model '
              f'lacks'] if extra else []) + (
        [f'it lacks {", ".join(missing[:3])}{" ..." if len(missing) > 3 else ""}'] if missing else [])
    raise errors.WorkdirError(f'{where} does not fit the model: {"; ".join(parts)}; {fix}')

  def check_fits(self, template: TrainState, num_classes: int | None = None) -> None:
    """Refuses (WorkdirError) a newest checkpoint that does not fit `template` (shapes suffice:
    an abstract state, so that this can come before anything is compiled)."""
    steps = self.all_steps()
    if steps:
      self._check_fits(steps[-1], template, num_classes)

  def restore_latest(self, template: TrainState, num_classes: int | None = None) -> TrainState | None:
    """The newest readable checkpoint restored into `template`'s shapes and shardings.

    A checkpoint that fails to restore (empty, truncated, corrupt) is reported in one line, moved
    aside and the one before it is tried; None when there is none. One that reads but holds other
    parameter names or shapes (the model or its class count changed) is refused: WorkdirError.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _arrays(template))
    _drop_abandoned_reads()
    skipped = set()
    while True:
      steps = [s for s in self.all_steps() if s not in skipped]
      if not steps:
        return None
      step = steps[-1]
      self._check_fits(step, template, num_classes)
      try:
        arrays = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # pylint: disable=broad-except
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ''
        self._manager.close()
        self._set_aside(step, f'{type(e).__name__}: {first_line}'[:200])
        skipped.add(step)
        # An empty step directory makes orbax misread the others too: open the manager afresh.
        self._manager = self._open()
        continue
      return template.replace(**arrays)

  def wait(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._raise_storage(e, None)
      raise

  def close(self) -> None:
    self._manager.close()

  def _raise_storage(self, e: BaseException, step: int | None) -> None:
    """A checkpoint the disk refused, as one line; any other failure propagates unchanged."""
    reason = storage_reason(e)
    if not reason:
      return
    del step  # an asynchronous save fails at the next save or wait, not at its own step
    kept = self._step_dirs()
    resume = f'the checkpoint at step {kept[-1]} is kept' if kept else 'no checkpoint was kept'
    raise errors.StorageError(
        f'cannot write a checkpoint to {self.directory}: {reason}; {resume}; free space (or fix '
        f'the permissions) and rerun the same command to resume') from e
