"""Checkpoints in-process, on a tiny train state: a restore is bit-identical, only the newest are
kept, damaged step directories are moved aside, and a full disk is one line naming what is kept."""

import errno
import logging
import os
import shutil
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_zoo import errors
from cnn_zoo.train import checkpoint
from cnn_zoo.train.state import TrainState

TX = optax.sgd(0.1, momentum=0.9)


def _state(step):
  """Every field differs from step to step, so a restore of the wrong one (or field) shows."""
  params = {'w': jnp.arange(6.0).reshape(2, 3) + step}
  momentum = jax.tree.map(lambda p: p * 0.5, params)
  opt_state = (optax.TraceState(trace=momentum),) + TX.init(params)[1:]
  return TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                    batch_stats={'mean': jnp.full(3, step, jnp.float32)}, opt_state=opt_state,
                    rng=jax.random.PRNGKey(step), apply_fn=None, tx=TX)


def _assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def _saved(workdir, steps, keep=3):
  ckpt = checkpoint.Checkpoints(workdir, keep=keep)
  for step in steps:
    ckpt.save(_state(step))
  ckpt.wait()
  return ckpt


def test_a_restore_is_bit_identical_and_only_the_newest_are_kept(tmp_path):
  workdir = str(tmp_path)
  assert not checkpoint.exists(workdir)
  ckpt = checkpoint.Checkpoints(workdir, keep=2)
  assert ckpt.restore_latest(_state(0)) is None
  for step in (1, 2, 3):
    ckpt.save(_state(step))
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3] and checkpoint.exists(workdir)
  _assert_same(ckpt.restore_latest(_state(0)), _state(3))
  ckpt.close()
  # A new process: the newest again, and a step directory orbax never finished is not a run.
  _assert_same(checkpoint.Checkpoints(workdir).restore_latest(_state(0)), _state(3))
  other = str(tmp_path / 'other')
  os.makedirs(os.path.join(other, 'checkpoints', '7'))
  assert not checkpoint.exists(other)


def test_three_are_kept_by_default_and_only_a_forced_save_goes_back_in_steps(tmp_path):
  ckpt = checkpoint.Checkpoints(str(tmp_path))
  for step in (1, 2, 3, 4):
    ckpt.save(_state(step))
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3, 4]
  ckpt.save(_state(1))  # older than the newest: not a checkpoint the run needs
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3, 4]
  ckpt.save(_state(1), force=True)  # as a converted run's single save is forced
  ckpt.wait()
  assert 1 in ckpt.all_steps()
  ckpt.close()


def test_only_numbered_directories_are_step_directories(tmp_path):
  workdir = str(tmp_path)
  _saved(workdir, (1, 2)).close()
  directory = os.path.join(workdir, 'checkpoints')
  os.makedirs(os.path.join(directory, 'notes'))
  open(os.path.join(directory, '7'), 'w').close()  # a file, not a step directory
  ckpt = checkpoint.Checkpoints(workdir)
  assert ckpt._step_dirs() == [1, 2] and not os.path.exists(os.path.join(workdir, checkpoint.DAMAGED))
  _assert_same(ckpt.restore_latest(_state(0)), _state(2))
  ckpt.close()


def test_damaged_step_directories_are_moved_aside_and_the_previous_one_restored(tmp_path, caplog):
  workdir = str(tmp_path)
  _saved(workdir, (1, 2, 3)).close()
  directory = os.path.join(workdir, 'checkpoints')
  damaged = os.path.join(workdir, checkpoint.DAMAGED)
  os.makedirs(os.path.join(directory, '5'))  # an interrupted copy: no finished mark
  shutil.rmtree(os.path.join(directory, '3', 'default'))  # finished, but its arrays are gone
  caplog.set_level(logging.WARNING)
  ckpt = checkpoint.Checkpoints(workdir)
  assert sorted(os.listdir(damaged)) == ['5']
  _assert_same(ckpt.restore_latest(_state(0)), _state(2))
  assert sorted(os.listdir(damaged)) == ['3', '5'] and ckpt.all_steps() == [1, 2]
  lines = [r.getMessage() for r in caplog.records if 'unreadable' in r.getMessage()]
  assert len(lines) == 2, lines
  assert lines[0] == (f'checkpoint at step 5 is unreadable (no _CHECKPOINT_METADATA: an '
                      f'interrupted save or copy); moved it to {damaged}/5 and trying the '
                      f'previous one')
  assert lines[1].startswith('checkpoint at step 3 is unreadable (') and \
      lines[1].endswith(f'moved it to {damaged}/3 and trying the previous one')
  ckpt.close()
  # The same step damaged again is kept beside the first; with move_damaged=False it stays put.
  os.makedirs(os.path.join(directory, '5'))
  checkpoint.Checkpoints(workdir).close()
  assert sorted(os.listdir(damaged)) == ['3', '5', '5-2']
  os.makedirs(os.path.join(directory, '5'))
  os.makedirs(os.path.join(directory, '6'))
  checkpoint.Checkpoints(workdir).close()
  assert sorted(os.listdir(damaged)) == ['3', '5', '5-2', '5-3', '6']
  os.makedirs(os.path.join(directory, '9'))
  caplog.clear()
  checkpoint.Checkpoints(workdir, move_damaged=False).close()
  assert os.path.isdir(os.path.join(directory, '9')) and '9' not in os.listdir(damaged)
  assert [r.getMessage() for r in caplog.records if 'unreadable' in r.getMessage()] == [
      f'checkpoint at step 9 is unreadable (no _CHECKPOINT_METADATA: an interrupted save or '
      f'copy); left it in {directory}/9 and trying the previous one']


def test_a_reader_that_leaves_damage_in_place_still_restores_the_previous_step(tmp_path):
  """What a process other than the first (or prediction) does: the directory is shared."""
  workdir = str(tmp_path)
  _saved(workdir, (1, 2, 3)).close()
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '3', 'default'))
  ckpt = checkpoint.Checkpoints(workdir, move_damaged=False)
  _assert_same(ckpt.restore_latest(_state(0)), _state(2))
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '3'))
  ckpt.close()


@pytest.mark.parametrize('error, reason', [
    (ValueError('bad bytes\nin the second line'), 'ValueError: bad bytes'),
    (RuntimeError('  '), 'RuntimeError: '),
    (OSError('x' * 300), 'OSError: ' + 'x' * 191)])  # cut at 200 characters
def test_the_reason_a_checkpoint_is_unreadable_is_its_errors_type_and_first_line(
    tmp_path, caplog, monkeypatch, error, reason):
  workdir = str(tmp_path)
  _saved(workdir, (1, 2)).close()
  restore = checkpoint.ocp.CheckpointManager.restore

  def fail_at_2(manager, step, *args, **kwargs):
    if step == 2:
      raise error
    return restore(manager, step, *args, **kwargs)

  monkeypatch.setattr(checkpoint.ocp.CheckpointManager, 'restore', fail_at_2)
  caplog.set_level(logging.WARNING)
  ckpt = checkpoint.Checkpoints(workdir)
  _assert_same(ckpt.restore_latest(_state(0)), _state(1))
  ckpt.close()
  damaged = os.path.join(workdir, checkpoint.DAMAGED, '2')
  assert [r.getMessage() for r in caplog.records if 'unreadable' in r.getMessage()] == [
      f'checkpoint at step 2 is unreadable ({reason}); moved it to {damaged} and trying the '
      f'previous one']


def test_a_full_disk_is_one_line_naming_the_checkpoint_kept_and_other_errors_propagate(tmp_path):
  workdir = str(tmp_path)
  ckpt = _saved(workdir, (1, 2, 3))
  full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  def refuse(error):
    def fail(*args, **kwargs):
      raise error
    return fail

  for call, method in ((lambda: ckpt.save(_state(4)), 'save'),
                       (ckpt.wait, 'wait_until_finished')):
    real = getattr(ckpt._manager, method)
    setattr(ckpt._manager, method, refuse(full))
    with pytest.raises(errors.StorageError) as e:
      call()
    assert str(e.value) == (
        f'cannot write a checkpoint to {ckpt.directory}: No space left on device; the checkpoint '
        f'at step 3 is kept; free space (or fix the permissions) and rerun the same command to '
        f'resume')
    assert e.value.__cause__ is full
    bug = ValueError('not a storage error')
    setattr(ckpt._manager, method, refuse(bug))
    with pytest.raises(ValueError) as e:
      call()
    assert e.value is bug
    setattr(ckpt._manager, method, real)
  ckpt.close()
  empty = checkpoint.Checkpoints(str(tmp_path / 'empty'))
  with pytest.raises(errors.StorageError, match='; no checkpoint was kept; '):
    empty._raise_storage(full, None)
  empty.close()


def test_only_the_closed_event_loop_of_an_abandoned_read_is_silenced(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', seen.append)
  checkpoint._drop_abandoned_reads()
  hook = sys.unraisablehook
  checkpoint._drop_abandoned_reads()  # installed once
  assert sys.unraisablehook is hook
  closed = types.SimpleNamespace(exc_value=RuntimeError('Event loop is closed'))
  other_text = types.SimpleNamespace(exc_value=RuntimeError('Event loop is closed, and more'))
  other_type = types.SimpleNamespace(exc_value=ValueError('Event loop is closed'))
  for unraisable in (closed, other_text, other_type):
    hook(unraisable)
  assert seen == [other_text, other_type]
