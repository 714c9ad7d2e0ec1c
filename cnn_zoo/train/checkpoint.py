"""Orbax checkpoints of the train state: atomic saves, the latest few kept, restore on any mesh."""

import os

from absl import logging
import jax
import orbax.checkpoint as ocp

from cnn_zoo.train.state import TrainState


def _arrays(state: TrainState) -> dict:
  return {'step': state.step, 'params': state.params, 'batch_stats': state.batch_stats,
          'opt_state': state.opt_state, 'rng': state.rng}


class Checkpoints:
  """The run's checkpoints in WORKDIR/checkpoints.

  Orbax writes each step into a temporary directory and renames it when complete, so a killed
  save leaves no checkpoint that looks finished; older ones are deleted only after a newer one is.
  """

  def __init__(self, workdir: str, keep: int = 3):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, state: TrainState, force: bool = False) -> None:
    self._manager.save(int(jax.device_get(state.step)), args=ocp.args.StandardSave(_arrays(state)),
                       force=force)

  def restore_latest(self, template: TrainState) -> TrainState | None:
    """The newest readable checkpoint restored into `template`'s shapes and shardings.

    A checkpoint that fails to restore (truncated, corrupt) is reported and the one before it is
    tried; None when there is none.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _arrays(template))
    for step in reversed(self.all_steps()):
      try:
        arrays = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('checkpoint at step %d is unreadable (%s: %s); trying the previous one',
                        step, type(e).__name__, str(e).splitlines()[0] if str(e) else '')
        continue
      return template.replace(**arrays)
    return None

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
