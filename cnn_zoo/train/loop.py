"""train_and_evaluate: config in, a workdir of checkpoints, metrics and results.json out."""

import dataclasses
import hashlib
import os
import platform
import signal
import threading
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_zoo import errors
from cnn_zoo import outputs, run_files
from cnn_zoo.data import inputs as inputs_lib, run_data, sources
from cnn_zoo.errors import NonFiniteError  # noqa: F401  (also loop.NonFiniteError)
from cnn_zoo.train import autoconv
from cnn_zoo.train import build as build_lib
from cnn_zoo.train import config as config_lib
from cnn_zoo.train import converted
from cnn_zoo.train import checkpoint, workdir as workdir_lib, writers
from cnn_zoo.train import replicas as replicas_lib
from cnn_zoo.train import state as state_lib


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False, writers: tuple = ()) -> dict:
  """Trains config.model on config.dataset into `workdir`, resuming from its latest checkpoint.

  Everything the user chose is checked (config, data, sizes, workdir) before anything is compiled
  or written. A workdir holding another config's run is refused unless `overwrite`. `writers`
  (cnn_zoo.train.writers.Writer) receive the run's config, metrics and results beside
  metrics.jsonl, TensorBoard and config.trackers. Returns the results written to
  WORKDIR/results.json.
  """
  config_lib.validate(config)
  if config.init_from and not checkpoint.exists(workdir):  # a fresh start reads it: check it first
    converted.check_init_from(config)
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
    with StopSignals() as stop:
      return _train(config, workdir, dataset, plan, is_lead, stop, writers)
  except errors.UserError:
    raise
  except OSError as e:  # a full disk or lost permissions while writing the metrics or results
    reason = outputs.storage_reason(e)
    if not reason:
      raise
    raise errors.StorageError(f'cannot write {e.filename or workdir}: {reason}; checkpoints '
                              f'already written are kept: free space and rerun the same command '
                              f'to resume') from e
  finally:
    if lock:
      lock.release()


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


def _train(config, workdir, dataset, plan, is_lead, stop: StopSignals, extra_writers) -> dict:
  """The body of train_and_evaluate, once the inputs are known to be good."""
  started = time.perf_counter()  # config.time_budget_s counts from here
  # 'auto' measured (or read from the cache) before anything is compiled, or on resume the
  # workdir's record of what this run began with.
  conv_choice = autoconv.for_run(config, plan, workdir, write=is_lead,
                                 resuming=checkpoint.exists(workdir))
  built = build_lib.build(config, plan, conv_impls=conv_choice.impls)
  if config.seeds:  # replicas of the run, one program (cnn_zoo.train.replicas)
    built = replicas_lib.build(built)
  model_summary, lr_schedule = built.summary, built.schedule
  ckpts = checkpoint.Checkpoints(workdir, config.keep_checkpoints, move_damaged=is_lead)
  ckpts.check_fits(built.abstract_state, plan.num_classes)  # before anything is compiled
  state = built.init()
  # Onto this run's mesh, whatever mesh saved it; a checkpoint of other shapes is refused.
  restored = ckpts.restore_latest(state, num_classes=plan.num_classes)
  if restored is not None:
    state = restored
  elif config.init_from:  # a new run from pretrained weights (a new classifier if classes differ)
    state = converted.initialise(state, config.init_from, config.model, plan.num_classes)
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

  batches = inputs.train(start_step, plan.total_steps)
  pending = []  # device metrics not yet fetched: no host sync on most steps
  # A resumed run carries on the training time and skip count its earlier processes logged at the
  # checkpoint's step, so results cover the whole run (a run from an older version: this process).
  earlier = writer.kept_record(start_step, 'train') if start_step else {'train_time_s': 0.0}
  timed_from_step = 0 if 'train_time_s' in earlier else start_step
  train_time = earlier.get('train_time_s', 0.0)
  skipped = np.asarray(earlier.get('skipped_steps', 0), np.int64)  # per replica with seeds
  window_start, window_steps = time.perf_counter(), 0

  def flush(step):
    """Fetches pending metrics, logs their mean, and stops on a non-finite loss."""
    nonlocal pending, train_time, window_start, window_steps, skipped
    if not pending:
      return
    fetched = jax.device_get(pending)
    elapsed = time.perf_counter() - window_start
    train_time += elapsed
    first = step - len(fetched)
    for i, m in enumerate(fetched):
      bad = ~(np.isfinite(m['loss']) & np.isfinite(m['grad_norm']))
      if config.nonfinite == 'stop' and np.any(bad):
        # Replicas: the whole run stops (they share their checkpoints), naming the replicas.
        which = ', '.join(replicas_lib.label(config.seeds, r) for r in np.flatnonzero(bad)) \
            if config.seeds else ''
        raise NonFiniteError(f'non-finite loss or gradient at step {first + i + 1} '
                             f'{"of " + which + " " if which else ""}'
                             f'(loss={_f(m["loss"], "")}); the last good checkpoint is kept')
    skipped = skipped + np.sum([m['nonfinite'] for m in fetched], axis=0)
    means = {k: np.mean([m[k] for m in fetched], axis=0).tolist() for k in fetched[0]
             if k != 'nonfinite'}
    images_per_s = window_steps * plan.batch_size / max(elapsed, 1e-9)
    record = {**means, 'epoch': step / plan.steps_per_epoch,
              'learning_rate': float(lr_schedule(step - 1)), 'images_per_s': images_per_s,
              'train_time_s': train_time, 'skipped_steps': skipped.tolist()}
    writer.write(step, 'train', record)
    eta = (plan.total_steps - step) * plan.batch_size / max(images_per_s, 1e-9)
    logging.info('step %d/%d  epoch %.2f  loss %s  acc %s  lr %.4g  %.0f img/s  %s left',
                 step, plan.total_steps, record['epoch'], _f(means['loss']), _f(means['accuracy']),
                 record['learning_rate'], images_per_s, _duration(eta))
    pending, window_steps = [], 0
    window_start = time.perf_counter()

  def pause(fn, *args):
    """Runs `fn` outside the timed training window."""
    nonlocal window_start
    t = time.perf_counter()
    out = fn(*args)
    window_start += time.perf_counter() - t
    return out

  def stop_signal(synced: bool) -> int | None:
    """The signal that asked this run to stop; with several processes, agreed at flush points."""
    if jax.process_count() == 1:
      return stop.signum
    if not synced:
      return None
    agreed = multihost_utils.process_allgather(np.int32(stop.signum or 0))
    return int(np.max(agreed)) or None

  def stop_at(step, saved_step, signum):
    """Saves the state at `step` (after checking its metrics) and raises errors.Stopped."""
    flush(step)
    if step > saved_step:
      ckpts.save(state, force=True)
    ckpts.wait()
    ckpts.close()
    writer.close()
    name = signal.Signals(signum).name
    where = (f'saved a checkpoint at step {step} in {ckpts.directory}' if step > start_step else
             f'nothing new to save{f" (checkpoint at step {step} kept)" if step else ""}')
    raise errors.Stopped(f'{name} at step {step} of {plan.total_steps}: {where}; rerun the same '
                         f'command to resume', signum)

  def out_of_time() -> bool:
    """Whether config.time_budget_s has run out, counted from the start of training's set-up
    (data on the device, compilation), checked where metrics are flushed: a run can pass its
    budget by up to log_every_steps steps, and the final evaluation comes after it."""
    over = bool(config.time_budget_s) and time.perf_counter() - started > config.time_budget_s
    if jax.process_count() > 1:
      over = bool(np.max(multihost_utils.process_allgather(np.int32(over))))
    return over

  signum = stop_signal(True)
  if signum:  # during compilation
    stop_at(start_step, start_step, signum)
  saved_step = final_step = start_step
  for step in range(start_step + 1, plan.total_steps + 1):
    state, metrics = train_fn(state, next(batches))
    pending.append(metrics)
    window_steps += 1
    last = step == plan.total_steps
    synced = step % config.log_every_steps == 0 or step % plan.eval_every_steps == 0 or last or \
        step % plan.checkpoint_every_steps == 0
    if synced:
      flush(step)
    if step % plan.eval_every_steps == 0 and not last:
      test = pause(evaluate, eval_fn, state, inputs.eval())
      writer.write(step, 'test', {**test, 'epoch': step / plan.steps_per_epoch})
      logging.info('step %d  test loss %s  top-1 %s  top-5 %s', step, _f(test['loss']),
                   _f(test['accuracy']), _f(test['top5']))
    if step % plan.checkpoint_every_steps == 0 or last:
      pause(ckpts.save, state)
      saved_step = step
    signum = None if last else stop_signal(synced)
    if signum:
      stop_at(step, saved_step, signum)
    final_step = step
    if synced and not last and out_of_time():
      if step > saved_step:
        pause(ckpts.save, state)
      logging.warning('time budget of %.0fs used up at step %d of %d: checkpoint saved, results '
                      'marked incomplete; rerun the same command to go on', config.time_budget_s,
                      step, plan.total_steps)
      break

  if not (final_step < plan.total_steps and final_step % plan.eval_every_steps == 0):
    test = evaluate(eval_fn, state, inputs.eval())  # else: stopped right after evaluating
    writer.write(final_step, 'test', {**test, 'epoch': final_step / plan.steps_per_epoch})
  ckpts.wait()
  ckpts.close()

  steps_timed = final_step - timed_from_step
  results = {
      'model': config.model, 'dataset': dataset.name, 'num_classes': plan.num_classes,
      'input_shape': list(plan.input_shape),
      'params': model_summary.params, 'batch_stats': model_summary.batch_stats,
      'fwd_macs_per_example': model_summary.macs, 'flops_per_example': 2 * model_summary.macs,
      'test_accuracy': test['accuracy'], 'test_top5': test['top5'], 'test_loss': test['loss'],
      'test_examples': test['count'],
      'epochs': final_step / plan.steps_per_epoch, 'steps': final_step,
      'complete': final_step == plan.total_steps,
      'batch_size': plan.batch_size, 'seed': config.seed, 'dtype': config.dtype,
      'input_pipeline': inputs.path,
      'conv_impl_train': built.conv_impls[0], 'conv_impl_eval': built.conv_impls[1],
      'train_time_s': train_time, 'compile_time_s': compile_time,
      'train_images_per_s': steps_timed * plan.batch_size / train_time if train_time else None,
      'resumed_from_step': start_step, 'skipped_steps': skipped.tolist(),
      'num_devices': jax.device_count(), 'num_processes': jax.process_count(),
      'platform': jax.devices()[0].platform, 'device_kind': jax.devices()[0].device_kind,
      'host': platform.node(), 'jax_version': jax.__version__,
      'weights_sha256': None if config.seeds else weights_sha256(state),
      'layers': [dataclasses.asdict(layer) for layer in model_summary.layers],
  }
  if config.seeds:  # one results.json, each replica's results in results['replicas']
    seeds = config.seeds
    tests = [{k: v[i] if isinstance(v, list) else v for k, v in test.items()}
             for i in range(len(seeds))]
    shas = [weights_sha256(replicas_lib.replica(state, i)) for i in range(len(seeds))]
    results = replicas_lib.results(results, seeds, tests, skipped, shas)
  if is_lead:
    run_files.write_json(run_files.path(workdir, run_files.RESULTS), results)
  writer.close(results)
  logging.info('done: test top-1 %s  top-5 %s  loss %s  (%.1fs training, %.0f img/s)',
               _f(test['accuracy']), _f(test['top5']), _f(test['loss']), train_time,
               results['train_images_per_s'] or 0)
  return results


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'
