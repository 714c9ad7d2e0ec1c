"""The loop's seams (issue 29): a writer of one's own receives every record the loop writes, hooks
are called at their points, and a hook's request to stop is the stop policy's (as the time budget
ends a run), while a signal still saves and exits as before."""

import json
import os
import signal
import threading

import jax
import pytest

from cnn_zoo import errors
from cnn_zoo.train import hooks, loop, stopping, writers
from configs import default

STEPS = 12
EVAL_EVERY = 4  # digits: 1437 training images, 44 steps of 32 an epoch


def _config(digits_dir, **fields):
  config = default.get_config('smoke')
  config.update(data_dir=digits_dir, num_train_steps=STEPS, log_every_steps=3, batch_size=32,
                eval_batch_size=64, eval_every_epochs=EVAL_EVERY / 44, keep_checkpoints=10,
                augment='crop')
  config.update(fields)
  return config


def _lines(workdir, name='metrics.jsonl'):
  with open(os.path.join(workdir, name), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def _checkpoints(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())


class Recorder(writers.Writer):
  """A writer of one's own: keeps what it is handed."""

  def __init__(self):
    self.config, self.records, self.results = None, [], 'never closed'

  def start(self, config, resume_step):
    self.config, self.resume_step = config, resume_step

  def write(self, step, split, values):
    self.records.append({'step': step, 'split': split, **values})

  def close(self, results=None):
    self.results = results


class Observer(hooks.Hook):
  """Records every call; asks to stop after step `stop_after` or after the evaluation at
  `stop_on_eval`."""

  def __init__(self, stop_after=None, stop_on_eval=None):
    self.stop_after, self.stop_on_eval, self.calls = stop_after, stop_on_eval, []

  def after_step(self, step, state, metrics):
    self.calls.append(('step', step, int(jax.device_get(state.step)), 'loss' in metrics))
    return step == self.stop_after

  def after_eval(self, step, test):
    self.calls.append(('eval', step, test['count']))
    return step == self.stop_on_eval

  def end(self, step, results):
    self.calls.append(('end', step, results and results['steps']))


@pytest.fixture(scope='module')
def reference(digits_dir, tmp_path_factory):
  """An uninterrupted run, with a writer and a hook of its own."""
  recorder, observer = Recorder(), Observer()
  workdir = str(tmp_path_factory.mktemp('reference'))
  results = loop.train_and_evaluate(_config(digits_dir), workdir, writers=[recorder],
                                    hooks=[observer])
  return workdir, results, recorder, observer


def test_a_writer_of_ones_own_receives_every_record_the_run_writes(reference):
  workdir, results, recorder, _ = reference
  assert recorder.records == _lines(workdir)  # metrics.jsonl, record for record
  assert [(r['step'], r['split']) for r in recorder.records] == [
      (3, 'train'), (4, 'train'), (4, 'test'), (6, 'train'), (8, 'train'), (8, 'test'),
      (9, 'train'), (12, 'train'), (12, 'test')]
  with open(os.path.join(workdir, 'config.json')) as f:
    assert recorder.config == json.load(f) and recorder.resume_step == 0
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.loads(json.dumps(recorder.results)) == json.load(f)  # its tuples as lists
  assert recorder.results == results


def test_hooks_are_called_after_every_step_and_evaluation_and_once_at_the_end(reference):
  *_, observer = reference
  steps = [c for c in observer.calls if c[0] == 'step']
  assert steps == [('step', s, s, True) for s in range(1, STEPS + 1)]
  assert [c for c in observer.calls if c[0] != 'step'] == [
      ('eval', 4, 360), ('eval', 8, 360), ('eval', 12, 360), ('end', 12, 12)]
  assert observer.calls[-2:] == [('eval', 12, 360), ('end', 12, 12)]  # the final evaluation last


def test_a_hook_stops_the_run_between_flushes_and_the_rerun_goes_on_bit_identically(
    reference, digits_dir, tmp_path, caplog):
  _, full, _, _ = reference
  config, workdir, observer = _config(digits_dir), str(tmp_path / 'run'), Observer(stop_after=5)
  with caplog.at_level('WARNING'):
    cut = loop.train_and_evaluate(config, workdir, hooks=[observer])
  assert (cut['steps'], cut['complete'], cut['test_examples']) == (5, False, 360)
  assert ('Observer asked to stop at step 5 of 12: checkpoint saved, results marked incomplete; '
          'rerun the same command to go on') in caplog.text
  assert observer.calls[-2:] == [('eval', 5, 360), ('end', 5, 5)]
  assert _checkpoints(workdir) == [4, 5]
  # Step 5 is no log step: its metrics are fetched, checked and written at the stop.
  assert [(r['step'], r['split']) for r in _lines(workdir)] == [
      (3, 'train'), (4, 'train'), (4, 'test'), (5, 'train'), (5, 'test')]
  done = loop.train_and_evaluate(config, workdir)
  assert (done['resumed_from_step'], done['steps'], done['complete']) == (5, STEPS, True)
  assert done['weights_sha256'] == full['weights_sha256']
  assert done['test_loss'] == full['test_loss']


def test_a_hooks_stop_ends_the_run_as_the_time_budget_does(digits_dir, tmp_path):
  # log_every_steps=4: the first step the budget is heard at is the first evaluation's.
  budget = loop.train_and_evaluate(_config(digits_dir, log_every_steps=4, time_budget_s=1e-9),
                                   str(tmp_path / 'budget'))
  observer = Observer(stop_on_eval=4)  # an early stop on the test metrics
  hooked = loop.train_and_evaluate(_config(digits_dir, log_every_steps=4), str(tmp_path / 'hook'),
                                   hooks=[observer])
  assert (budget['steps'], budget['complete']) == (4, False)
  same = ('steps', 'complete', 'epochs', 'test_loss', 'test_accuracy', 'test_examples',
          'skipped_steps', 'weights_sha256')
  assert {k: hooked[k] for k in same} == {k: budget[k] for k in same}
  assert _checkpoints(tmp_path / 'hook') == _checkpoints(tmp_path / 'budget') == [4]
  strip = lambda workdir: [{k: v for k, v in r.items() if k not in ('images_per_s',
                                                                    'train_time_s')}
                           for r in _lines(workdir)]
  # Stopped right after an evaluation: no second one.
  assert [(r['step'], r['split']) for r in strip(tmp_path / 'hook')] == [(4, 'train'),
                                                                         (4, 'test')]
  assert strip(tmp_path / 'hook') == strip(tmp_path / 'budget')
  assert [c for c in observer.calls if c[0] != 'step'] == [('eval', 4, 360), ('end', 4, 4)]


def test_a_signal_during_a_step_saves_that_step_and_exits_as_before(digits_dir, tmp_path):
  """tests/test_trust_round_two.py resumes such a run bit-identically, in a process of its own."""
  assert threading.current_thread() is threading.main_thread()  # where the loop's handlers live

  class Terminate(Observer):
    def after_step(self, step, state, metrics):
      super().after_step(step, state, metrics)
      if step == 5:
        os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would, in the middle of the run

  config, workdir, recorder, hook = _config(digits_dir), str(tmp_path / 'run'), Recorder(), \
      Terminate()
  with pytest.raises(errors.Stopped) as e:
    loop.train_and_evaluate(config, workdir, writers=[recorder], hooks=[hook])
  assert e.value.exit_code == 128 + signal.SIGTERM
  assert str(e.value) == (f'SIGTERM at step 5 of 12: saved a checkpoint at step 5 in '
                          f'{workdir}/checkpoints; rerun the same command to resume')
  assert _checkpoints(workdir) == [4, 5] and not os.path.exists(os.path.join(workdir,
                                                                             'results.json'))
  assert recorder.results is None and hook.calls[-1] == ('end', 5, None)
  assert recorder.records == _lines(workdir) and recorder.records[-1]['step'] == 5


def test_the_stop_policy_hears_signals_then_the_budget_then_hooks_never_after_the_last_step():
  config = default.get_config('smoke')
  config.time_budget_s = 1e-9
  signals = stopping.StopSignals()  # not entered: no handler is installed
  policy = stopping.StopPolicy(config, signals)
  assert policy.check(synced=False, last=False) is None  # the budget is heard at synced steps
  assert policy.check(synced=True, last=False).reason == 'time budget of 0s used up'
  policy.request(['EarlyStop', 'EarlyStop', 'Profiler'])
  assert policy.check(synced=False, last=False).reason == 'EarlyStop, Profiler asked to stop'
  signals.signum = signal.SIGHUP
  assert policy.check(synced=False, last=False) == stopping.Stop('SIGHUP', signal.SIGHUP)
  assert policy.before_start() == stopping.Stop('SIGHUP', signal.SIGHUP)
  assert policy.check(synced=True, last=True) is None  # the last step ends the run anyway
  config.time_budget_s = 0.0
  assert stopping.StopPolicy(config, stopping.StopSignals()).check(synced=True, last=False) is None
