"""The shared train and eval steps: learning, BatchNorm modes, dropout keys, exact evaluation."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_zoo import models
from cnn_zoo.train import state as state_lib
from cnn_zoo.train import step as step_lib


class TinyBNDropout(nn.Module):
  """A conv with BatchNorm and a dropout layer: the two kinds of state the step must handle."""
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3), use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x).mean(axis=(1, 2))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def _batch(n=8, shape=(8, 8, 1), classes=3, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': jnp.asarray(rng.normal(size=(n, *shape)), jnp.float32),
          'label': jnp.asarray(rng.integers(0, classes, n), jnp.int32)}


def _state(model, shape, lr=0.05):
  return state_lib.create(model, optax.sgd(lr, momentum=0.9), shape, seed=0)


def test_loss_falls_on_a_fixed_batch():
  # The step's learning is under test, not how fast an initialisation starts: linen's LeCun-normal
  # (PyTorch's default uniform, LeNet-5's 'paper' rule, has a third of its variance).
  state = _state(models.get('lenet5', weight_init='flax'), (32, 32, 1))
  batch = _batch(16, (32, 32, 1), classes=10)
  step = jax.jit(step_lib.train_step)
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  assert losses[-1] < 0.2 * losses[0]
  assert int(state.step) == 30


def test_model_without_batchnorm_has_empty_batch_stats():
  state = _state(models.get('lenet5'), (32, 32, 1))
  assert state.batch_stats == {}
  state, _ = jax.jit(step_lib.train_step)(state, _batch(4, (32, 32, 1), classes=10))
  assert state.batch_stats == {}


def test_batch_stats_change_in_train_mode_and_not_in_eval_mode():
  state = _state(TinyBNDropout(), (8, 8, 1))
  batch = _batch()
  new_state, _ = jax.jit(step_lib.train_step)(state, batch)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.batch_stats,
                         new_state.batch_stats)
  assert all(jax.tree.leaves(changed))
  # Eval mode reads the running statistics and leaves them as they were.
  _, updates = state.apply_fn(state.variables(), batch['image'], train=False,
                              mutable=['batch_stats'])
  same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state.batch_stats,
                      updates['batch_stats'])
  assert all(jax.tree.leaves(same))
  step_lib.eval_step(state, {**batch, 'mask': jnp.ones(8)})  # runs without a dropout key


def test_dropout_key_differs_by_step():
  state = _state(TinyBNDropout(), (8, 8, 1), lr=0.0)
  batch = _batch()
  step = jax.jit(step_lib.train_step)
  # With a zero learning rate only the dropout mask (drawn from fold_in(rng, step)) differs.
  _, m0 = step(state, batch)
  _, m0_again = step(state, batch)
  _, m1 = step(state.replace(step=state.step + 1), batch)
  assert float(m0['loss']) == float(m0_again['loss'])
  assert float(m0['loss']) != float(m1['loss'])


def test_label_smoothing_raises_the_loss_of_a_confident_prediction():
  logits = jnp.array([[10.0, -10.0, -10.0]])
  labels = jnp.array([0])
  assert step_lib.cross_entropy(logits, labels, 0.1)[0] > step_lib.cross_entropy(logits, labels)[0]


def test_eval_step_counts_only_unmasked_examples():
  state = _state(models.get('lenet5'), (32, 32, 1))
  batch = _batch(8, (32, 32, 1), classes=10)
  full = step_lib.eval_step(state, {**batch, 'mask': jnp.ones(8)})
  half_mask = jnp.array([1.0] * 5 + [0.0] * 3)
  part = step_lib.eval_step(state, {**batch, 'mask': half_mask})
  first5 = step_lib.eval_step(state, {k: v[:5] for k, v in batch.items()} | {'mask': jnp.ones(5)})
  assert float(part['count']) == 5 and float(full['count']) == 8
  np.testing.assert_allclose(part['loss'], first5['loss'], rtol=1e-6)
  assert float(part['top1']) == float(first5['top1'])
  assert float(full['top5']) >= float(full['top1'])


@pytest.mark.parametrize('mode', ['stop', 'skip'])
def test_nonfinite_steps_are_flagged_and_can_be_skipped(mode):
  state = _state(models.get('lenet5'), (32, 32, 1))
  batch = _batch(4, (32, 32, 1), classes=10)
  batch['image'] = batch['image'].at[0, 0, 0, 0].set(jnp.nan)
  step = jax.jit(functools.partial(step_lib.train_step, skip_nonfinite=mode == 'skip'))
  new_state, metrics = step(state, batch)
  assert int(metrics['nonfinite']) == 1
  kept = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)),
                                      state.params, new_state.params))
  assert all(kept) == (mode == 'skip')
