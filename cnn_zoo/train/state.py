"""The one immutable train state shared by every model."""

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any  # {} for models without BatchNorm
  opt_state: optax.OptState
  rng: jax.Array  # raw uint32 key; dropout draws from fold_in(rng, step)
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  def variables(self) -> dict:
    if self.batch_stats:
      return {'params': self.params, 'batch_stats': self.batch_stats}
    return {'params': self.params}


def create(model: nn.Module, tx: optax.GradientTransformation,
           input_shape: tuple[int, int, int], seed: int) -> TrainState:
  """Initialises parameters and optimizer state (pure: call it under jit)."""
  init_rng, dropout_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed), 3)
  variables = model.init({'params': init_rng, 'dropout': dropout_rng},
                         jnp.zeros((1, *input_shape), jnp.float32), train=False)
  params = variables['params']
  return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                    rng=state_rng, apply_fn=model.apply, tx=tx)
