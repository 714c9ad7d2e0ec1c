"""The guarantees of docs/guarantees.md, each held by a test built to fail when the guarantee
breaks: exact masked evaluation in eval mode, skip mode keeping the whole state, the NaN stop
after a checkpoint, steps compiled once, the convolution switch, dropped partial batches, torn log
lines."""

import functools
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_zoo.train import config as config_lib
from cnn_zoo import models
from cnn_zoo.data import tfdata_pipeline, sources
from cnn_zoo.train import loop, optim, writers
from cnn_zoo.train import state as state_lib
from cnn_zoo.train import step as step_lib

CLASSES = 10


class BNDropout(nn.Module):
  """BatchNorm (eval mode reads running statistics) and dropout (train mode needs a key)."""
  num_classes: int = CLASSES

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(6, (3, 3), padding=((1, 1), (1, 1)))(x)  # explicit: im2col takes no strings
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x).mean(axis=(1, 2))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def _state(seed=0):
  config = config_lib.defaults()
  config.weight_decay = 5e-4
  tx = optim.optimizer(config, lambda _: 0.1)  # SGD with momentum: a trace per parameter
  state = state_lib.create(BNDropout(), tx, (8, 8, 2), seed=seed)
  # Running statistics far from a batch's own, so that train-mode normalisation would differ.
  rng = np.random.default_rng(seed)
  stats = jax.tree.map(lambda v: jnp.asarray(rng.uniform(0.5, 2.0, v.shape), jnp.float32),
                       state.batch_stats)
  return state.replace(batch_stats=stats)


def _images(n, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(n, 8, 8, 2)), jnp.float32)


def _log_softmax(logits):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_eval_step_sums_eval_mode_predictions_over_unmasked_rows_only():
  state = _state()
  images = _images(12)
  logits = np.asarray(state.apply_fn(state.variables(), images, train=False))
  train_logits = state.apply_fn(state.variables(), images, train=True, mutable=['batch_stats'],
                                rngs={'dropout': jax.random.key(0)})[0]
  assert np.max(np.abs(logits - np.asarray(train_logits))) > 0.1  # the modes differ here
  ranks = np.argsort(-logits, axis=-1)
  # Unmasked rows are right at top-1, right at top-5 only, or wrong at both. Masked rows (the
  # padding) are labelled with their top prediction, so counting them would change every sum.
  mask = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1], np.float32)
  # The label's rank among the predictions, row by row; ranks 1 and 5 sit just outside top-1 and
  # top-5.
  rank = [0, 0, 1, 5, 0, 0, 4, 0, 9, 0, 0, 2]
  labels = ranks[np.arange(12), rank].astype(np.int32)
  sums = jax.jit(step_lib.eval_step)(state, {'image': images, 'label': jnp.asarray(labels),
                                              'mask': jnp.asarray(mask)})
  keep = mask == 1
  nll = -_log_softmax(logits)[np.arange(12), labels]
  top1 = ranks[:, 0] == labels
  top5 = (ranks[:, :5] == labels[:, None]).any(-1)
  assert float(sums['count']) == 8
  np.testing.assert_allclose(float(sums['loss']), nll[keep].sum(), rtol=1e-5)
  assert float(sums['top1']) == top1[keep].sum() == 3
  assert float(sums['top5']) == top5[keep].sum() == 6
  assert top1.sum() == 7 and top5.sum() == 10  # what unmasked sums would have been


def _leaves_equal(a, b):
  return [bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]


def test_skip_mode_keeps_the_whole_state_of_a_nonfinite_step_and_counts_it():
  state = _state()
  step = jax.jit(functools.partial(step_lib.train_step, skip_nonfinite=True))
  labels = jnp.arange(8, dtype=jnp.int32)
  # One good step first, so that the momentum is not zero.
  state, _ = step(state, {'image': _images(8, 1), 'label': labels})
  bad = {'image': _images(8, 2).at[3, 4, 4, 0].set(jnp.nan), 'label': labels}
  after, metrics = step(state, bad)
  assert int(metrics['nonfinite']) == 1 and not np.isfinite(float(metrics['loss']))
  assert int(after.step) == int(state.step) + 1
  for part in ('params', 'batch_stats', 'opt_state'):
    assert all(_leaves_equal(getattr(after, part), getattr(state, part))), part
  # A finite batch moves every leaf of all three.
  good, metrics = step(state, {'image': _images(8, 2), 'label': labels})
  assert int(metrics['nonfinite']) == 0
  for part in ('params', 'batch_stats', 'opt_state'):
    assert not any(_leaves_equal(getattr(good, part), getattr(state, part))), part


def test_the_train_step_reports_and_keeps_what_train_mode_computes():
  """By default: the plain cross-entropy of train-mode logits (dropout keyed by fold_in(rng, step)),
  BatchNorm statistics updated from the state's own, and a non-finite step not skipped."""
  state = _state()
  batch = {'image': _images(8, 3), 'label': jnp.arange(8, dtype=jnp.int32)}
  new_state, metrics = jax.jit(step_lib.train_step)(state, batch)
  logits, updates = state.apply_fn(state.variables(), batch['image'], train=True,
                                   mutable=['batch_stats'],
                                   rngs={'dropout': jax.random.fold_in(state.rng, state.step)})
  nll = -_log_softmax(logits)[np.arange(8), np.asarray(batch['label'])]
  np.testing.assert_allclose(float(metrics['loss']), nll.mean(), rtol=1e-5)
  for got, want in zip(jax.tree.leaves(new_state.batch_stats),
                       jax.tree.leaves(updates['batch_stats'])):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # With label smoothing 0.1 over 10 classes the target puts 0.01 on each class, 0.91 on the label.
  _, smoothed = jax.jit(functools.partial(step_lib.train_step, label_smoothing=0.1))(state, batch)
  targets = np.full((8, CLASSES), 0.01) + 0.9 * np.eye(CLASSES)[np.asarray(batch['label'])]
  np.testing.assert_allclose(float(smoothed['loss']),
                             -(targets * _log_softmax(logits)).sum(-1).mean(), rtol=1e-5)
  bad = {**batch, 'image': batch['image'].at[0, 0, 0, 0].set(jnp.nan)}
  after, _ = jax.jit(step_lib.train_step)(state, bad)
  assert not all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(after.params))


def test_skip_mode_also_keeps_the_state_when_only_the_gradient_is_nonfinite():
  # LeNet-5's max pooling drops a NaN pixel from the forward pass, but not from the kernel's
  # gradient: the loss is finite and the gradient is not.
  model = models.get('lenet5')
  state = state_lib.create(model, optax.sgd(0.1, momentum=0.9), (32, 32, 1), seed=0)
  image = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 1)), jnp.float32)
  batch = {'image': image.at[0, 0, 0, 0].set(jnp.nan), 'label': jnp.arange(4, dtype=jnp.int32)}
  after, metrics = jax.jit(functools.partial(step_lib.train_step, skip_nonfinite=True))(state, batch)
  assert np.isfinite(float(metrics['loss'])) and not np.isfinite(float(metrics['grad_norm']))
  assert int(metrics['nonfinite']) == 1
  assert all(_leaves_equal(after.params, state.params))
  assert all(_leaves_equal(after.opt_state, state.opt_state))


@pytest.mark.parametrize('impl,has_conv', [('xla', True), ('im2col', False), ('auto', False)])
def test_the_models_convolution_choice_decides_what_the_step_computes(impl, has_conv):
  """im2col leaves no convolution op in the step (forward or gradients); 'auto' is im2col on CPU."""
  assert jax.default_backend() == 'cpu'
  model = models.get('lenet5', conv_impl=impl)
  state = state_lib.create(model, optax.sgd(0.1), (32, 32, 1), 0)
  batch = {'image': jnp.zeros((4, 32, 32, 1)), 'label': jnp.arange(4, dtype=jnp.int32)}
  jaxpr = str(jax.make_jaxpr(step_lib.train_step)(state, batch))
  assert ('conv_general_dilated' in jaxpr) == has_conv
  eval_jaxpr = str(jax.make_jaxpr(step_lib.eval_step)(state, {**batch, 'mask': jnp.ones(4)}))
  assert ('conv_general_dilated' in eval_jaxpr) == has_conv


# LeNet-5 ('VALID') and ResNet-18's 1x1 projections (flax's default 'SAME') pad by name.
@pytest.mark.parametrize('name', ['alexnet_cifar', 'resnet20', 'lenet5', 'resnet18'])
def test_im2col_leaves_no_convolution_in_a_zoo_models_step(name):
  model = models.get(name, conv_impl='im2col')
  shape = models.input_shape(name)
  shape = (64, 64, 3) if shape[0] > 32 else shape  # the graph, not the size, is what counts
  abstract = jax.eval_shape(lambda: state_lib.create(model, optax.sgd(0.1), shape, 0))
  state = abstract.replace(apply_fn=model.apply, tx=optax.sgd(0.1))
  batch = {'image': jax.ShapeDtypeStruct((2, *shape), jnp.float32),
           'label': jax.ShapeDtypeStruct((2,), jnp.int32)}
  jaxpr = jax.make_jaxpr(step_lib.train_step)(state, batch)
  assert 'conv_general_dilated' not in str(jaxpr)


def _small_config(smoke_config, steps=12):
  smoke_config.num_train_steps = steps
  smoke_config.checkpoint_every_steps = 4
  smoke_config.keep_checkpoints = 10
  smoke_config.log_every_steps = 100  # metrics are checked only where a checkpoint is due
  smoke_config.batch_size = 16
  smoke_config.input_pipeline = 'tfdata'  # the tests below patch the host pipeline's batches
  return smoke_config


def _checkpoint_steps(workdir):
  path = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def test_nan_at_a_known_step_stops_naming_it_and_keeps_the_checkpoint_before(smoke_config, tmp_path,
                                                                              monkeypatch):
  config = _small_config(smoke_config)
  workdir = str(tmp_path / 'run')
  real = tfdata_pipeline.train_batches

  def poisoned(*args, **kwargs):
    # Batch of step 7 (steps count from 1) holds a NaN pixel: its loss is NaN, earlier ones not.
    for s, batch in enumerate(real(*args, **kwargs), kwargs['start_step'] + 1):
      if s == 7:
        batch = {**batch, 'image': batch['image'].copy()}
        batch['image'][0, 0, 0, 0] = np.nan
      yield batch

  monkeypatch.setattr(tfdata_pipeline, 'train_batches', poisoned)
  with pytest.raises(loop.NonFiniteError) as error:
    loop.train_and_evaluate(config, workdir)
  assert str(error.value).startswith('non-finite loss or gradient at step 7 (loss=')
  # The save of step 4 is asynchronous and may still be finishing (a launcher waits at exit).
  deadline = time.time() + 60
  while time.time() < deadline and any('tmp' in d for d in os.listdir(f'{workdir}/checkpoints')):
    time.sleep(0.1)
  assert _checkpoint_steps(workdir) == [4]  # written before; none at or after the NaN
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  # The kept checkpoint is good: the same command, data fixed, resumes from it to the end.
  monkeypatch.setattr(tfdata_pipeline, 'train_batches', real)
  results = loop.train_and_evaluate(config, workdir)
  assert results['resumed_from_step'] == 4 and np.isfinite(results['test_loss'])


def test_the_compiled_train_step_refuses_a_batch_of_another_shape(smoke_config, tmp_path,
                                                                  monkeypatch):
  config = _small_config(smoke_config, steps=3)
  real = tfdata_pipeline.train_batches

  def short_second_batch(*args, **kwargs):
    for s, batch in enumerate(real(*args, **kwargs)):
      yield {k: v[:8] for k, v in batch.items()} if s == 1 else batch

  monkeypatch.setattr(tfdata_pipeline, 'train_batches', short_second_batch)
  with pytest.raises(TypeError, match='compiled'):
    loop.train_and_evaluate(config, str(tmp_path / 'train'))


def test_the_compiled_eval_step_refuses_a_batch_of_another_shape(smoke_config, tmp_path,
                                                                 monkeypatch):
  config = _small_config(smoke_config, steps=2)
  real = tfdata_pipeline.eval_batches

  def short_batches(*args, **kwargs):
    for batch in real(*args, **kwargs):
      yield {k: v[:32] for k, v in batch.items()}

  monkeypatch.setattr(tfdata_pipeline, 'eval_batches', short_batches)
  with pytest.raises(TypeError, match='compiled'):
    loop.train_and_evaluate(config, str(tmp_path / 'eval'))


def test_the_loop_compiles_the_step_with_the_configured_convolution(smoke_config, tmp_path,
                                                                   monkeypatch):
  seen = []
  real_train, real_eval = step_lib.train_step, step_lib.eval_step

  def train_step(state, batch, **kwargs):
    seen.append(('train', state.apply_fn.__self__.layers.conv_impl, kwargs['skip_nonfinite']))
    return real_train(state, batch, **kwargs)

  def eval_step(state, batch):
    seen.append(('eval', state.apply_fn.__self__.layers.conv_impl))
    return real_eval(state, batch)

  monkeypatch.setattr(step_lib, 'train_step', train_step)
  monkeypatch.setattr(step_lib, 'eval_step', eval_step)
  config = _small_config(smoke_config, steps=2)
  config.conv_impl = 'xla'
  config.nonfinite = 'skip'
  loop.train_and_evaluate(config, str(tmp_path))
  # Each traced once, ahead of time, whatever the number of steps and evaluation batches.
  assert sorted(seen) == [('eval', 'xla'), ('train', 'xla', True)]


def _indexed_split(n):
  """n 8x8 images whose every pixel is the example's index, so a batch names its examples."""
  images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 8, 8, 1))
  return sources.Split(np.ascontiguousarray(images), np.arange(n, dtype=np.int32) % 10)


def _indexed_prep():
  # Normalised back to the raw 0..255.
  return tfdata_pipeline.Preprocess((8, 8, 1), (0.0,), (1 / 255,))


def _indices(batch):
  return np.rint(batch['image'][:, 0, 0, 0]).astype(int)


def test_an_epochs_last_partial_batch_is_dropped_and_the_next_epoch_starts_afresh():
  split, n, batch = _indexed_split(50), 50, 16  # 3 full batches per epoch, 2 examples left
  batches = [_indices(b) for b in tfdata_pipeline.train_batches(
      split, _indexed_prep(), global_batch=batch, seed=0, start_step=0, num_steps=7)]
  assert [len(b) for b in batches] == [16] * 7
  assert all(b.min() >= 0 and b.max() < n for b in batches)
  for epoch in (batches[0:3], batches[3:6]):
    seen = np.concatenate(epoch)
    assert len(set(seen.tolist())) == 48  # each example at most once per epoch: 2 left out
  assert not np.array_equal(np.concatenate(batches[0:3]), np.concatenate(batches[3:6]))
  # Step 6 opens epoch 2: a resumed run at step 6 sees the same batch.
  again = next(tfdata_pipeline.train_batches(split, _indexed_prep(), global_batch=batch, seed=0,
                                      start_step=6, num_steps=7))
  np.testing.assert_array_equal(_indices(again), batches[6])


def test_a_complete_last_record_without_its_newline_is_dropped_on_resume(tmp_path):
  """A kill between a record and its newline leaves a line that parses: it must still go, or the
  next record would be appended to it."""
  path = tmp_path / 'metrics.jsonl'
  lines = [json.dumps({'step': s, 'split': 'train', 'loss': 1.0 / s}) for s in (2, 4, 6)]
  path.write_text('\n'.join(lines))  # the record of step 6 lost its newline
  writer = writers.MetricWriter(str(tmp_path), resume_step=6)
  assert [r['step'] for r in writer.kept] == [2, 4]
  writer.write(6, 'train', {'loss': 0.5})
  writer.close()
  records = [json.loads(line) for line in path.read_text().splitlines()]
  assert [(r['step'], r['loss']) for r in records] == [(2, 0.5), (4, 0.25), (6, 0.5)]
