"""The one train step and the one eval step: pure functions of (state, batch), jitted once."""

import jax
import jax.numpy as jnp
import optax

from cnn_zoo.train.state import TrainState


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy over integer labels, with optional label smoothing."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing) \
      if label_smoothing else jax.nn.one_hot(labels, logits.shape[-1])
  return optax.softmax_cross_entropy(logits, targets)


def _correct_top_k(logits, labels, k):
  k = min(k, logits.shape[-1])
  top = jax.lax.top_k(logits, k)[1]
  return jnp.any(top == labels[:, None], axis=-1)


def train_step(state: TrainState, batch, *, label_smoothing: float = 0.0,
               skip_nonfinite: bool = False):
  """One optimizer step; BatchNorm statistics update in train mode; dropout from (rng, step).

  With `skip_nonfinite`, a step whose loss or gradients are NaN or Inf leaves the weights, BN
  statistics and optimizer state as they were (and is counted in metrics['nonfinite']).
  """
  dropout_rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats} if state.batch_stats \
        else {'params': params}
    logits, updates = state.apply_fn(variables, batch['image'], train=True,
                                     mutable=['batch_stats'], rngs={'dropout': dropout_rng})
    # The loss in float32 at least: bfloat16 logits are widened, a float64 model keeps float64.
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    loss = cross_entropy(logits, batch['label'], label_smoothing).mean()
    return loss, (logits, updates.get('batch_stats', {}))

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  if skip_nonfinite:
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    params, batch_stats = keep(params, state.params), keep(batch_stats, state.batch_stats)
    opt_state = keep(opt_state, state.opt_state)
  metrics = {
      'loss': loss,
      'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
      'grad_norm': grad_norm,
      'nonfinite': 1 - finite.astype(jnp.int32),
  }
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, metrics


def eval_step(state: TrainState, batch):
  """Sums over the unmasked examples of a (possibly padded) batch: loss, top-1, top-5, count."""
  logits = state.apply_fn(state.variables(), batch['image'], train=False)
  logits = logits.astype(jnp.float32)
  mask = batch['mask']
  return {
      'loss': jnp.sum(cross_entropy(logits, batch['label']) * mask),
      'top1': jnp.sum(_correct_top_k(logits, batch['label'], 1) * mask),
      'top5': jnp.sum(_correct_top_k(logits, batch['label'], 5) * mask),
      'count': jnp.sum(mask),
  }
