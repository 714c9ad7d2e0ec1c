"""Hooks: code a run calls at fixed points (a profiler window, an early stop), passed to
train_and_evaluate(..., hooks=[...]).

  class StopAtLoss(hooks.Hook):
    def after_eval(self, step, test):
      return test['loss'] < 0.1     # True: stop the run here

Every process calls its hooks, and the time they take counts as training time. A hook that
returns True asks the run to stop at that step; the stop policy (cnn_zoo.train.stopping) ends it
as the time budget does: a checkpoint at the step, the final evaluation (unless one was just
made), results.json marked incomplete, and a rerun of the same command goes on from there. With
several processes the request is agreed at the next step that syncs.
"""


class Hook:
  """The points a run calls; a subclass defines the ones it needs."""

  def after_step(self, step: int, state, metrics: dict) -> bool:
    """After `step`, its logging, evaluation and checkpoint done: `state` is the TrainState after
    it, `metrics` its metrics still on the device (fetching them makes the host wait for it)."""
    del step, state, metrics
    return False

  def after_eval(self, step: int, test: dict) -> bool:
    """After each evaluation, the final one included: `test` holds loss, accuracy, top5 and
    count, as metrics.jsonl records them."""
    del step, test
    return False

  def end(self, step: int, results: dict | None) -> None:
    """Once, as the run ends at `step`: results.json's content, or None when a signal stopped
    it (an error, such as a non-finite loss, ends a run without this call)."""


class Hooks:
  """A run's hooks behind one call per point; `after_*` return the names of those that asked
  to stop. Every hook is called at every point, whatever the others answer."""

  def __init__(self, hooks=()):
    self.hooks = tuple(hooks)

  def after_step(self, step: int, state, metrics: dict) -> list[str]:
    return [_name(h) for h in self.hooks if h.after_step(step, state, metrics)]

  def after_eval(self, step: int, test: dict) -> list[str]:
    return [_name(h) for h in self.hooks if h.after_eval(step, test)]

  def end(self, step: int, results: dict | None) -> None:
    for hook in self.hooks:
      hook.end(step, results)


def _name(hook) -> str:
  return type(hook).__name__
