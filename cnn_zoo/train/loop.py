"""train_and_evaluate: config in, a workdir of checkpoints, metrics and results.json out.

A run in named parts, read top to bottom:
  _set_up   the model and its state (restored, init_from or fresh), config.json, the writers,
            the compiled steps
  _steps    the steps; Progress holds the metrics not yet fetched and the training clock, the stop
            policy (cnn_zoo.train.stopping) ends a run early: a signal, the time budget, a hook,
            a non-finite step
  _finish   the final evaluation, results.json (_results), the writers closed
Every record goes through the writers (cnn_zoo.train.writers: metrics.jsonl, TensorBoard, the
trackers and any passed in); hooks (cnn_zoo.train.hooks) are called after each step and
evaluation and at the end.
"""

import contextlib
import dataclasses
import functools
import hashlib
import platform
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_zoo import errors
from cnn_zoo import output_paths, run_files
from cnn_zoo.data import inputs as inputs_lib, run_data, sources
from cnn_zoo.train import autoconv
from cnn_zoo.train import build as build_lib
from cnn_zoo.train import config as config_lib
from cnn_zoo.train import torchvision_weights
from cnn_zoo.train import checkpoint, workdir as workdir_lib, writers
from cnn_zoo.train import hooks as hooks_lib
from cnn_zoo.train import replicas as replicas_lib
from cnn_zoo.train import state as state_lib
from cnn_zoo.train import stopping

NonFiniteError = errors.NonFiniteError  # also loop.NonFiniteError, as callers name it


def weights_sha256(state: state_lib.TrainState) -> str:
  """SHA-256 of the parameters and BatchNorm statistics: equal digests mean bit-identical weights."""
  tree = multihost_utils.process_allgather({'params': state.params,
                                            'batch_stats': state.batch_stats}, tiled=True)
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    leaf = np.ascontiguousarray(leaf)
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(str(leaf.dtype).encode() + str(leaf.shape).encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()


def evaluate(eval_fn, state, batches) -> dict:
  """Loss, top-1 and top-5 over every example of the test split, each counted exactly once
  (`batches`: the padded and masked evaluation batches)."""
  totals = None
  for batch in batches:
    sums = eval_fn(state, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals['count'])
  mean = lambda key: (np.asarray(totals[key], np.float64) / count).tolist()  # per replica: lists
  return {'loss': mean('loss'), 'accuracy': mean('top1'), 'top5': mean('top5'),
          'count': int(count)}


def _f(value, spec: str = '.4f') -> str:
  """A logged number, or a replicated run's numbers one per replica."""
  return ' '.join(format(v, spec) for v in np.ravel(value))


def _write_config(config, workdir, dataset, plan):
  """WORKDIR/config.json, and dataset.json: what inference needs of the data (no dataset read)."""
  run_files.write_text(run_files.path(workdir, run_files.CONFIG),
                       config.to_json(indent=2, sort_keys=True))
  recorded = run_data.of_dataset(dataset, config, plan.input_shape, plan.num_classes)
  run_files.write_json(run_files.path(workdir, run_files.DATASET), recorded.to_json())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, overwrite: bool = False,
                       writers=None, hooks=None) -> dict:
  """Trains config.model on config.dataset into `workdir`, resuming from its latest checkpoint.

  Everything the user chose is checked (config, data, sizes, workdir) before anything is compiled
  or written. A workdir holding another config's run is refused unless `overwrite`. `writers`
  (cnn_zoo.train.writers.Writer) receive the run's config, every record and the results, beside
  the run's own (metrics.jsonl, TensorBoard and config.trackers); `hooks`
  (cnn_zoo.train.hooks.Hook) are called after each step and evaluation and at the end, and may
  stop the run early (cnn_zoo.train.stopping). Returns the results written to
  WORKDIR/results.json.
  """
  config_lib.validate(config)
  if config.init_from and not checkpoint.exists(workdir):  # a fresh start reads it: check it first
    torchvision_weights.check_init_from(config)
  is_lead = jax.process_index() == 0
  dataset = sources.load(config.dataset, config.data_dir or None,
                         image_size=build_lib.input_shape(config)[0],
                         num_classes=config.num_classes or None)
  plan = build_lib.make_plan(config, dataset)
  # The path 'auto' picks is recorded (config.json) and held to on resume: the two draw differently.
  config = config.copy_and_resolve_references()
  config.input_pipeline = inputs_lib.choose(config.input_pipeline, dataset, plan.input_shape,
                                            config.resize_mode)
  workdir_lib.prepare(workdir)
  lock = workdir_lib.Lock(workdir) if is_lead else None
  try:
    if is_lead:
      workdir_lib.check_same_run(workdir, config.to_json(sort_keys=True), overwrite)
    with stopping.StopSignals() as signals:
      return _train(config, workdir, dataset, plan, is_lead, signals, tuple(writers or ()),
                    hooks_lib.Hooks(hooks or ()))
  except errors.UserError:
    raise
  except OSError as e:  # a full disk or lost permissions while writing the metrics or results
    reason = output_paths.storage_reason(e)
    if not reason:
      raise
    raise errors.StorageError(f'cannot write {e.filename or workdir}: {reason}; checkpoints '
                              f'already written are kept: free space and rerun the same command '
                              f'to resume') from e
  finally:
    if lock:
      lock.release()


def _train(config, workdir, dataset, plan, is_lead, signals, extra_writers, hooks) -> dict:
  """The body of train_and_evaluate, once the inputs are known to be good."""
  policy = stopping.StopPolicy(config, signals)  # config.time_budget_s counts from here
  run, state = _set_up(config, workdir, dataset, plan, is_lead, extra_writers)
  state, final_step, tested, progress = _steps(run, state, policy, hooks)
  return _finish(run, state, final_step, tested, progress, hooks)


@dataclasses.dataclass(frozen=True)
class _Run:
  """A run once set up: what its steps, evaluations and results read."""
  config: ml_collections.ConfigDict
  workdir: str
  dataset_name: str
  plan: build_lib.Plan
  built: object  # build.Built, or replicas.Replicas with config.seeds
  inputs: inputs_lib.Inputs
  ckpts: checkpoint.Checkpoints
  writer: writers.MetricWriter
  train_fn: object  # the compiled steps
  eval_fn: object
  compile_time: float
  start_step: int
  is_lead: bool


def _set_up(config, workdir, dataset, plan, is_lead, extra_writers) -> tuple[_Run, object]:
  """The model and its state (the workdir's latest checkpoint, else init_from, else a fresh
  start), config.json, the writers and the compiled steps. Returns the run and its state."""
  # 'auto' measured (or read from the cache) before anything is compiled, or on resume the
  # workdir's record of what this run began with.
  conv_choice = autoconv.for_run(config, plan, workdir, write=is_lead,
                                 resuming=checkpoint.exists(workdir))
  built = build_lib.build(config, plan, conv_impls=conv_choice.impls)
  if config.seeds:  # replicas of the run, one program (cnn_zoo.train.replicas)
    built = replicas_lib.build(built)
  model_summary = built.summary
  ckpts = checkpoint.Checkpoints(workdir, config.keep_checkpoints, move_damaged=is_lead)
  ckpts.check_fits(built.abstract_state, plan.num_classes)  # before anything is compiled
  state = built.init()
  # Onto this run's mesh, whatever mesh saved it; a checkpoint of other shapes is refused.
  restored = ckpts.restore_latest(state, num_classes=plan.num_classes)
  if restored is not None:
    state = restored
  elif config.init_from:  # a new run from pretrained weights (a new classifier if classes differ)
    state = torchvision_weights.initialise(state, config.init_from, config.model, plan.num_classes)
  start_step = int(jax.device_get(state.step))
  if is_lead:
    _write_config(config, workdir, dataset, plan)
  writer = writers.MetricWriter(workdir, enabled=is_lead, resume_step=start_step, config=config,
                                extra=extra_writers)

  inputs = inputs_lib.make(config, dataset, plan, built.mesh)  # compiles its batch functions
  t0 = time.perf_counter()
  # Compiled once, ahead of time: a batch of any other shape is an error, not a recompile.
  train_fn, eval_fn = built.compile_train(state), built.compile_eval(state)
  compile_time = time.perf_counter() - t0 + inputs.compile_time

  logging.info('%s on %s: %s trainable parameters, %.4f GMACs/example; %d steps of %d '
               '(%d per epoch) on %d %s device(s), %s input; convolutions: %s train, %s eval '
               '(%s); compiled in %.1fs; starting at step %d', config.model, dataset.name,
               f'{model_summary.params:,}', model_summary.macs / 1e9, plan.total_steps,
               plan.batch_size, plan.steps_per_epoch, jax.device_count(),
               jax.devices()[0].platform, inputs.path, conv_choice.train, conv_choice.eval,
               conv_choice.source, compile_time, start_step)
  run = _Run(config, workdir, dataset.name, plan, built, inputs, ckpts, writer, train_fn, eval_fn,
             compile_time, start_step, is_lead)
  return run, state


class Progress:
  """The training metrics not yet fetched from the device (the host waits for the device only at
  a flush: no sync on most steps) and what results.json counts: the training time, which leaves
  out whatever runs `paused` (evaluations, checkpoints, writing records), and the skipped steps.
  `earlier`: the metrics.jsonl record at the step a resumed run starts from, whose time and count
  it carries on (a run from an older version, without them: this process only)."""

  def __init__(self, plan, schedule, start_step: int, earlier: dict):
    self._plan, self._schedule = plan, schedule
    self.timed_from_step = 0 if 'train_time_s' in earlier else start_step
    self.train_time = earlier.get('train_time_s', 0.0)
    self.skipped = np.asarray(earlier.get('skipped_steps', 0), np.int64)  # per replica with seeds
    self._pending = []
    self._window_start, self._window_steps = time.perf_counter(), 0

  def add(self, metrics: dict) -> None:
    """One step's metrics, still on the device."""
    self._pending.append(metrics)
    self._window_steps += 1

  @contextlib.contextmanager
  def paused(self):
    """Time spent inside is not training time."""
    t = time.perf_counter()
    try:
      yield
    finally:
      self._window_start += time.perf_counter() - t

  def flush(self, step: int, check_finite) -> dict | None:
    """The train record at `step`, the mean of the pending metrics, once `check_finite(first_step,
    fetched)` has seen every step's; None when none are pending."""
    if not self._pending:
      return None
    fetched = jax.device_get(self._pending)
    elapsed = time.perf_counter() - self._window_start
    self.train_time += elapsed
    check_finite(step - len(fetched), fetched)
    self.skipped = self.skipped + np.sum([m['nonfinite'] for m in fetched], axis=0)
    means = {k: np.mean([m[k] for m in fetched], axis=0).tolist() for k in fetched[0]
             if k != 'nonfinite'}
    record = {**means, 'epoch': step / self._plan.steps_per_epoch,
              'learning_rate': float(self._schedule(step - 1)),
              'images_per_s': self._window_steps * self._plan.batch_size / max(elapsed, 1e-9),
              'train_time_s': self.train_time, 'skipped_steps': self.skipped.tolist()}
    self._pending, self._window_steps = [], 0
    self._window_start = time.perf_counter()
    return record


def _steps(run: _Run, state, policy: stopping.StopPolicy, hooks: hooks_lib.Hooks):
  """The steps from the checkpoint's to the last, or to where the stop policy ends the run.
  Returns the state, the step reached, the evaluation made at that step (None if none was) and
  the run's Progress."""
  config, plan, ckpts = run.config, run.plan, run.ckpts
  batches = run.inputs.train(run.start_step, plan.total_steps)
  earlier = run.writer.kept_record(run.start_step, 'train') if run.start_step else \
      {'train_time_s': 0.0}
  progress = Progress(plan, run.built.schedule, run.start_step, earlier)
  flush = functools.partial(_flush, run, progress, policy)
  stop = policy.before_start()
  if stop:  # a signal during compilation
    _stop_for_signal(run, state, run.start_step, run.start_step, stop, flush, hooks)
  saved_step = final_step = run.start_step
  tested = None
  for step in range(run.start_step + 1, plan.total_steps + 1):
    state, metrics = run.train_fn(state, next(batches))
    progress.add(metrics)
    last = step == plan.total_steps
    synced = step % config.log_every_steps == 0 or step % plan.eval_every_steps == 0 or last or \
        step % plan.checkpoint_every_steps == 0
    if synced:
      flush(step)
    tested = None
    if step % plan.eval_every_steps == 0 and not last:
      with progress.paused():
        tested = _test(run, state, step)
        logging.info('step %d  test loss %s  top-1 %s  top-5 %s', step, _f(tested['loss']),
                     _f(tested['accuracy']), _f(tested['top5']))
      policy.request(hooks.after_eval(step, tested))
    if step % plan.checkpoint_every_steps == 0 or last:
      with progress.paused():
        ckpts.save(state)
      saved_step = step
    policy.request(hooks.after_step(step, state, metrics))
    stop = policy.check(synced, last)
    if stop and stop.signum:
      _stop_for_signal(run, state, step, saved_step, stop, flush, hooks)
    final_step = step
    if stop:  # the time budget or a hook: the run ends here, with its results
      flush(step)  # a hook may ask between two flushes
      if step > saved_step:
        with progress.paused():
          ckpts.save(state)
      logging.warning('%s at step %d of %d: checkpoint saved, results marked incomplete; rerun '
                      'the same command to go on', stop.reason, step, plan.total_steps)
      break
  return state, final_step, tested, progress


def _flush(run: _Run, progress: Progress, policy: stopping.StopPolicy, step: int) -> None:
  """Fetches the pending metrics, stops on a non-finite step (the policy), writes and logs their
  mean."""
  record = progress.flush(step, policy.check_finite)
  if record is None:
    return
  plan = run.plan
  with progress.paused():
    run.writer.write(step, 'train', record)
  eta = (plan.total_steps - step) * plan.batch_size / max(record['images_per_s'], 1e-9)
  logging.info('step %d/%d  epoch %.2f  loss %s  acc %s  lr %.4g  %.0f img/s  %s left',
               step, plan.total_steps, record['epoch'], _f(record['loss']),
               _f(record['accuracy']), record['learning_rate'], record['images_per_s'],
               _duration(eta))


def _test(run: _Run, state, step: int) -> dict:
  """Evaluates the state on the test split and writes the record."""
  test = evaluate(run.eval_fn, state, run.inputs.eval())
  run.writer.write(step, 'test', {**test, 'epoch': step / run.plan.steps_per_epoch})
  return test


def _stop_for_signal(run: _Run, state, step: int, saved_step: int, stop: stopping.Stop, flush,
                     hooks: hooks_lib.Hooks):
  """Saves the state at `step` (after checking its metrics), closes the outputs and raises
  errors.Stopped."""
  flush(step)
  if step > saved_step:
    run.ckpts.save(state, force=True)
  run.ckpts.wait()
  run.ckpts.close()
  run.writer.close()
  hooks.end(step, None)
  where = (f'saved a checkpoint at step {step} in {run.ckpts.directory}' if step > run.start_step
           else f'nothing new to save{f" (checkpoint at step {step} kept)" if step else ""}')
  raise errors.Stopped(f'{stop.reason} at step {step} of {run.plan.total_steps}: {where}; rerun '
                       f'the same command to resume', stop.signum)


def _finish(run: _Run, state, final_step: int, tested: dict | None, progress: Progress,
            hooks: hooks_lib.Hooks) -> dict:
  """The final evaluation (unless the run stopped right after one), results.json, the outputs
  closed. Returns the results."""
  test = tested
  if test is None:
    test = _test(run, state, final_step)
    hooks.after_eval(final_step, test)  # the run ends here: a request to stop changes nothing
  run.ckpts.wait()
  run.ckpts.close()
  results = _results(run, state, test, final_step, progress)
  if run.is_lead:
    run_files.write_json(run_files.path(run.workdir, run_files.RESULTS), results)
  run.writer.close(results)
  logging.info('done: test top-1 %s  top-5 %s  loss %s  (%.1fs training, %.0f img/s)',
               _f(test['accuracy']), _f(test['top5']), _f(test['loss']), progress.train_time,
               results['train_images_per_s'] or 0)
  hooks.end(final_step, results)
  return results


def _results(run: _Run, state, test: dict, final_step: int, progress: Progress) -> dict:
  """results.json's content: what was trained, how well it did, how long it took, where."""
  config, plan, summary = run.config, run.plan, run.built.summary
  train_time, steps_timed = progress.train_time, final_step - progress.timed_from_step
  results = {
      'model': config.model, 'dataset': run.dataset_name, 'num_classes': plan.num_classes,
      'input_shape': list(plan.input_shape),
      'params': summary.params, 'batch_stats': summary.batch_stats,
      'fwd_macs_per_example': summary.macs, 'flops_per_example': 2 * summary.macs,
      'test_accuracy': test['accuracy'], 'test_top5': test['top5'], 'test_loss': test['loss'],
      'test_examples': test['count'],
      'epochs': final_step / plan.steps_per_epoch, 'steps': final_step,
      'complete': final_step == plan.total_steps,
      'batch_size': plan.batch_size, 'seed': config.seed, 'dtype': config.dtype,
      'input_pipeline': run.inputs.path,
      'conv_impl_train': run.built.conv_impls[0], 'conv_impl_eval': run.built.conv_impls[1],
      'train_time_s': train_time, 'compile_time_s': run.compile_time,
      'train_images_per_s': steps_timed * plan.batch_size / train_time if train_time else None,
      'resumed_from_step': run.start_step, 'skipped_steps': progress.skipped.tolist(),
      'num_devices': jax.device_count(), 'num_processes': jax.process_count(),
      'platform': jax.devices()[0].platform, 'device_kind': jax.devices()[0].device_kind,
      'host': platform.node(), 'jax_version': jax.__version__,
      'weights_sha256': None if config.seeds else weights_sha256(state),
      'layers': [dataclasses.asdict(layer) for layer in summary.layers],
  }
  if config.seeds:  # one results.json, each replica's results in results['replicas']
    seeds = config.seeds
    tests = [{k: v[i] if isinstance(v, list) else v for k, v in test.items()}
             for i in range(len(seeds))]
    shas = [weights_sha256(replicas_lib.replica(state, i)) for i in range(len(seeds))]
    results = replicas_lib.results(results, seeds, tests, progress.skipped, shas)
  return results



def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'
