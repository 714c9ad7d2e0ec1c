"""Optimizers and schedules against updates computed by hand: weight decay on kernels only, L2 before
and decoupled after the optimizer, Nesterov, gradient clipping, and each schedule at exact steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_zoo.train import config as config_lib
from cnn_zoo.train import optim


def _config(**fields):
  c = config_lib.defaults()
  c.update(fields)
  return c


def _params(seed=0):
  """A tree like a model's: conv and dense kernels, their biases, BatchNorm scale and bias."""
  rng = np.random.default_rng(seed)
  f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return {'Conv_0': {'kernel': f(3, 3, 2, 4), 'bias': f(4)},
          'BatchNorm_0': {'scale': f(4), 'bias': f(4)},
          'Dense_0': {'kernel': f(4, 3), 'bias': f(3)}}


def _grads(steps, seed=1):
  return [_params(seed + i) for i in range(steps)]


def _is_kernel(path):
  return path[-1].key == 'kernel'


def _reference(config, params, grads, lr):
  """Several steps of the optimizer the config names, written out in numpy, leaf by leaf."""
  wd = config.weight_decay
  mode = config.weight_decay_mode or ('decoupled' if config.optimizer == 'adamw' else 'l2')
  w = {p: np.asarray(v, np.float64) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  kernel = {p: _is_kernel(p) or config.weight_decay_on == 'all' for p in w}  # what is decayed
  m = {p: np.zeros_like(v) for p, v in w.items()}
  v2 = {p: np.zeros_like(v) for p, v in w.items()}
  for t, g_tree in enumerate(grads):
    g = {p: np.asarray(v, np.float64) for p, v in jax.tree_util.tree_flatten_with_path(g_tree)[0]}
    if config.grad_clip_norm:
      norm = np.sqrt(sum(np.sum(x ** 2) for x in g.values()))
      if norm > config.grad_clip_norm:
        g = {p: x * config.grad_clip_norm / norm for p, x in g.items()}
    new = {}
    for p in w:
      d = g[p] + (wd * w[p] if mode == 'l2' and kernel[p] else 0.0)
      if config.optimizer == 'sgd':
        if config.momentum:
          m[p] = d + config.momentum * m[p]
          u = d + config.momentum * m[p] if config.nesterov else m[p]
        else:
          u = d
      else:
        b1, b2 = config.adam_b1, config.adam_b2
        m[p] = b1 * m[p] + (1 - b1) * d
        v2[p] = b2 * v2[p] + (1 - b2) * d ** 2
        u = (m[p] / (1 - b1 ** (t + 1))) / (np.sqrt(v2[p] / (1 - b2 ** (t + 1))) + config.adam_eps)
      if mode == 'decoupled' and kernel[p]:
        u = u + wd * w[p]
      new[p] = w[p] - lr(t) * u
    w = new
  return w


def _run(config, params, grads, lr):
  tx = optim.optimizer(config, lr)
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return {p: np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}


# A learning rate that changes every step, so each update is checked against its own step's rate.
LR = lambda count: 0.1 * (count + 1)


@pytest.mark.parametrize('fields', [
    dict(optimizer='sgd', momentum=0.9, weight_decay=0.1),
    dict(optimizer='sgd', momentum=0.9, nesterov=True, weight_decay=0.1),
    dict(optimizer='sgd', momentum=0.9, weight_decay=0.1, weight_decay_on='all'),
    dict(optimizer='adamw', weight_decay=0.1, weight_decay_on='all'),
    dict(optimizer='sgd', momentum=0.9, weight_decay=0.1, weight_decay_mode='decoupled'),
    dict(optimizer='sgd', momentum=0.0, weight_decay=0.1),
    dict(optimizer='sgd', momentum=0.9, weight_decay=0.0),
    dict(optimizer='adam', weight_decay=0.1),
    dict(optimizer='adam', weight_decay=0.1, weight_decay_mode='decoupled'),
    dict(optimizer='adamw', weight_decay=0.1),
    dict(optimizer='adamw', weight_decay=0.1, weight_decay_mode='l2'),
    dict(optimizer='sgd', momentum=0.9, weight_decay=0.1, grad_clip_norm=1.0),
    dict(optimizer='sgd', momentum=0.9, weight_decay=0.1, grad_clip_norm=1e3),  # not reached
    dict(optimizer='adam', weight_decay=0.1, grad_clip_norm=0.5),
    dict(optimizer='adam', adam_b1=0.5, adam_b2=0.9, adam_eps=0.1),  # not optax's defaults
], ids=lambda f: '-'.join(f'{k}={v}' for k, v in f.items()))
def test_three_steps_equal_the_hand_computed_updates(fields):
  config = _config(**fields)
  params, grads = _params(), _grads(3)
  expected = _reference(config, params, grads, LR)
  got = _run(config, params, grads, LR)
  for path in expected:
    np.testing.assert_allclose(got[path], expected[path], rtol=1e-5, atol=1e-5,
                               err_msg=jax.tree_util.keystr(path))


def test_the_cases_above_differ_from_each_other():
  """The hand-computed cases are far apart, so the tolerance above cannot confuse them."""
  params, grads = _params(), _grads(3)
  flat = lambda w: np.concatenate([np.ravel(v) for v in w.values()])
  base = dict(optimizer='sgd', momentum=0.9, weight_decay=0.1)
  variants = [base, {**base, 'nesterov': True}, {**base, 'weight_decay_mode': 'decoupled'},
              {**base, 'weight_decay': 0.0}, {**base, 'grad_clip_norm': 1.0},
              {**base, 'weight_decay_on': 'all'},
              dict(optimizer='adam', weight_decay=0.1),
              dict(optimizer='adam', weight_decay=0.1, weight_decay_mode='decoupled')]
  results = [flat(_reference(_config(**v), params, grads, LR)) for v in variants]
  for i in range(len(results)):
    for j in range(i):
      assert np.max(np.abs(results[i] - results[j])) > 1e-2, (variants[i], variants[j])


@pytest.mark.parametrize('on', ['kernels', 'all'])
def test_weight_decay_moves_what_weight_decay_on_names(on):
  """With zero gradients, one SGD step shrinks each kernel (with 'all', every parameter: biases and
  BatchNorm's scale and offset too) by lr * wd * w and nothing else moves."""
  params = _params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  for mode in ('l2', 'decoupled'):
    config = _config(optimizer='sgd', momentum=0.9, weight_decay=0.5, weight_decay_mode=mode,
                     weight_decay_on=on)
    got = _run(config, params, [zeros], lambda _: 0.1)
    for path, w in jax.tree_util.tree_flatten_with_path(params)[0]:
      expected = w * (1 - 0.05) if _is_kernel(path) or on == 'all' else w
      np.testing.assert_allclose(got[path], expected, rtol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_kernels_only_masks_every_kernel_of_a_real_model():
  from cnn_zoo import models
  model = models.get('resnet20')
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
  mask = jax.tree_util.tree_flatten_with_path(optim.kernels_only(params))[0]
  kernels = [p for p, m in mask if m]
  assert kernels and all(p[-1].key == 'kernel' for p in kernels)
  assert len(kernels) == 20  # 19 convolutions (option-A shortcuts have none) and the dense layer
  others = {p[-1].key for p, m in mask if not m}
  assert others == {'bias', 'scale'}


def _schedule(total=100, steps_per_epoch=10, **fields):
  fields.setdefault('learning_rate', 0.4)
  return optim.schedule(_config(**fields), total, steps_per_epoch)


def test_constant_schedule_with_warmup():
  lr = _schedule(schedule='constant', warmup_epochs=2)  # 20 steps of warm-up
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose([lr(5), lr(10), lr(19), lr(20), lr(99)],
                             [0.1, 0.2, 0.38, 0.4, 0.4], rtol=1e-6)
  assert float(_schedule(schedule='constant')(0)) == pytest.approx(0.4)


def test_piecewise_boundaries_are_fractions_of_the_whole_budget():
  # 0.5 and 0.75 of 200 steps: the rate drops at steps 100 and 150, warm-up or not.
  for warmup in (0, 3):
    lr = _schedule(total=200, schedule='piecewise', warmup_epochs=warmup, lr_boundaries=(0.5, 0.75),
                   lr_decay_factor=0.1)
    got = [float(lr(s)) for s in (99, 100, 149, 150, 199)]
    np.testing.assert_allclose(got, [0.4, 0.04, 0.04, 0.004, 0.004], rtol=1e-5)
  lr = _schedule(total=200, schedule='piecewise', warmup_epochs=3)
  np.testing.assert_allclose([float(lr(0)), float(lr(15)), float(lr(30))], [0.0, 0.2, 0.4],
                             rtol=1e-6)


def test_cosine_decays_to_zero_after_the_warmup():
  lr = _schedule(total=100, schedule='cosine', warmup_epochs=2)  # 20 warm-up, 80 of decay
  for s in (20, 30, 60, 90, 100):
    expected = 0.5 * 0.4 * (1 + np.cos(np.pi * (s - 20) / 80))
    assert float(lr(s)) == pytest.approx(expected, abs=1e-6), s
  lr = _schedule(total=100, schedule='cosine')
  assert float(lr(0)) == pytest.approx(0.4) and float(lr(50)) == pytest.approx(0.2)
  assert float(lr(100)) == pytest.approx(0.0, abs=1e-7)


def test_the_optimizer_follows_its_schedule_from_count_zero():
  """The first update uses schedule(0): a warm-up's first step does not move the weights."""
  params = _params()
  config = _config(optimizer='sgd', momentum=0.0, schedule='constant', warmup_epochs=1,
                   learning_rate=0.4)
  lr = optim.schedule(config, 100, 10)
  got = _run(config, params, _grads(2), lr)
  expected = _reference(config, params, _grads(2), lambda t: float(lr(t)))
  for path in expected:
    np.testing.assert_allclose(got[path], expected[path], rtol=1e-6)
  once = _run(config, params, _grads(1), lr)
  for path, w in jax.tree_util.tree_flatten_with_path(params)[0]:
    np.testing.assert_array_equal(once[path], w)


def test_a_single_step_of_warmup_or_of_decay_is_honoured():
  # One warm-up step: the first update is at rate 0.
  assert float(_schedule(total=100, steps_per_epoch=10, schedule='constant', warmup_epochs=0.1)(0)) == 0
  # A one-step budget decays over that step: cosine from 0.4 at step 0 to 0 at step 1.
  lr = _schedule(total=1, steps_per_epoch=1, schedule='cosine')
  assert float(lr(0)) == pytest.approx(0.4) and float(lr(1)) == pytest.approx(0.0, abs=1e-7)


def test_unknown_names_are_refused_with_the_choices():
  with pytest.raises(ValueError, match="unknown schedule 'linear'; valid choices: constant, "
                     "piecewise, cosine"):
    _schedule(schedule='linear')
  with pytest.raises(ValueError, match="unknown optimizer 'lion'; valid choices: sgd, adam, adamw"):
    optim.optimizer(_config(optimizer='lion'), LR)


def test_kernels_only_walks_lists_too():
  tree = {'blocks': [{'kernel': 1.0, 'bias': 2.0}, 3.0]}
  assert optim.kernels_only(tree) == {'blocks': [{'kernel': True, 'bias': False}, False]}
