"""How a run ends before its last step: one stop policy for signals, config.time_budget_s, a
hook's request (cnn_zoo.train.hooks) and non-finite steps.

  signal (SIGTERM, SIGINT, SIGHUP)  a checkpoint at the current step, then errors.Stopped
                                    (exit 128 + the signal); a rerun resumes
  time budget, a hook's request     a checkpoint at the step, the final evaluation and
                                    results.json marked incomplete; a rerun goes on
  a non-finite loss or gradient     NonFiniteError (config.nonfinite='stop'); the last good
                                    checkpoint is kept

With several processes every process stops at the same step: signals, the budget and the hooks'
requests are agreed where the loop syncs (a log, evaluation or checkpoint step).
"""

import dataclasses
import os
import signal
import threading
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from cnn_zoo.errors import NonFiniteError
from cnn_zoo.train import replicas as replicas_lib


class StopSignals:
  """SIGTERM (a scheduler, a preempted VM), SIGINT (Ctrl-C) and SIGHUP (a closed terminal or SSH
  session) ask the loop to save a checkpoint at the current step and stop; a second such signal
  acts as it would have without this."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # handlers live in the main thread
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.signum is None:
      self.signum = signum
      logging.warning('%s received: saving a checkpoint after this step, then stopping (send it '
                      'again to stop at once)', signal.Signals(signum).name)
      return
    previous = self._previous.get(signum, signal.SIG_DFL)
    signal.signal(signum, previous)
    if callable(previous):
      previous(signum, frame)
    else:
      os.kill(os.getpid(), signum)

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


@dataclasses.dataclass(frozen=True)
class Stop:
  """Why a run ends at a step before its last: `signum` for a signal, else `reason` (the time
  budget, or the hooks that asked) for a run that still evaluates and writes its results."""
  reason: str
  signum: int | None = None


class StopPolicy:
  """The one place that decides whether a run stops early, from the start of training's set-up
  (config.time_budget_s counts from the policy's creation: data on the device, compilation)."""

  def __init__(self, config, signals: StopSignals):
    self._config, self._signals = config, signals
    self._started = time.perf_counter()
    self._asked = []  # names of the hooks that asked to stop

  def request(self, names) -> None:
    """Hooks (by name) ask the run to stop at the current step."""
    for name in names:
      if name not in self._asked:
        self._asked.append(name)

  def before_start(self) -> Stop | None:
    """A signal received during set-up and compilation, agreed by every process."""
    signum = self._signals.signum
    if jax.process_count() > 1:
      signum = int(np.max(multihost_utils.process_allgather(np.int32(signum or 0)))) or None
    return Stop(signal.Signals(signum).name, signum) if signum else None

  def check(self, synced: bool, last: bool) -> Stop | None:
    """Whether the run stops after the current step (never after its last). Signals and hooks
    are heard at every step, the budget at synced steps only: a run can pass its budget by up to
    log_every_steps steps, and the final evaluation comes after it."""
    if last:
      return None
    if jax.process_count() == 1:
      signum, over, asked = self._signals.signum, synced and self._out_of_time(), self._asked
    elif not synced:
      return None
    else:
      mine = np.array([self._signals.signum or 0, self._out_of_time(), bool(self._asked)],
                      np.int32)
      signum, over, asked = np.max(multihost_utils.process_allgather(mine), axis=0).tolist()
      asked = self._asked or (['a hook of another process'] if asked else [])
    if signum:
      return Stop(signal.Signals(signum).name, int(signum))
    if over:
      return Stop(f'time budget of {self._config.time_budget_s:.0f}s used up')
    if asked:
      return Stop(f'{", ".join(asked)} asked to stop')
    return None

  def _out_of_time(self) -> bool:
    budget = self._config.time_budget_s
    return bool(budget) and time.perf_counter() - self._started > budget

  def check_finite(self, first_step: int, fetched: list) -> None:
    """NonFiniteError at the first of the steps first_step + 1, ... whose metrics (`fetched`)
    hold a non-finite loss or gradient, when config.nonfinite is 'stop' (with 'skip' the step
    left the weights as they were, and is counted). Replicas: the whole run stops (they share
    their checkpoints), naming the replicas."""
    if self._config.nonfinite != 'stop':
      return
    seeds = self._config.seeds
    for i, m in enumerate(fetched):
      bad = ~(np.isfinite(m['loss']) & np.isfinite(m['grad_norm']))
      if np.any(bad):
        which = ', '.join(replicas_lib.label(seeds, r) for r in np.flatnonzero(bad)) \
            if seeds else ''
        loss = ' '.join(format(v, '') for v in np.ravel(m['loss']))
        raise NonFiniteError(f'non-finite loss or gradient at step {first_step + i + 1} '
                             f'{"of " + which + " " if which else ""}'
                             f'(loss={loss}); the last good checkpoint is kept')
