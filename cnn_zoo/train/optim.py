"""Optimizers (optax) and learning-rate schedules from the config."""

import jax
import optax

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'piecewise', 'cosine')
WEIGHT_DECAY_MODES = ('l2', 'decoupled')
# What weight decay applies to: every parameter, as torch.optim.SGD(model.parameters(),
# weight_decay=...) in the CIFAR references, or convolution and dense kernels only.
WEIGHT_DECAY_ON = ('all', 'kernels')


def schedule(config, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  """Linear warm-up for `warmup_epochs`, then constant, piecewise or cosine decay.

  Piecewise boundaries are fractions of the whole budget (He et al.'s 32k and 48k of 64k
  iterations are 0.5 and 0.75), so a reduced-budget run keeps the recipe's shape.
  """
  lr = config.learning_rate
  warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total_steps)
  decay_steps = max(total_steps - warmup, 1)
  if config.schedule == 'constant':
    main = optax.constant_schedule(lr)
  elif config.schedule == 'piecewise':
    main = optax.piecewise_constant_schedule(
        lr, {int(round(b * total_steps)) - warmup: config.lr_decay_factor
             for b in config.lr_boundaries})
  elif config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, decay_steps)
  else:
    raise ValueError(f'unknown schedule {config.schedule!r}; valid choices: {", ".join(SCHEDULES)}')
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def kernels_only(params):
  """Weight decay applies to convolution and dense kernels, not to biases or BatchNorm."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def optimizer(config, lr_schedule: optax.Schedule) -> optax.GradientTransformation:
  """SGD (momentum, Nesterov), Adam or AdamW, with L2 or decoupled weight decay on what
  config.weight_decay_on names: every parameter ('all') or the kernels only ('kernels').

  'l2' adds weight_decay * w to the kernel gradients before the optimizer (PyTorch's
  `weight_decay`); 'decoupled' adds it after the optimizer's preconditioning (Loshchilov & Hutter),
  which is what AdamW means.
  """
  if config.optimizer == 'sgd':
    base = optax.trace(decay=config.momentum, nesterov=config.nesterov) \
        if config.momentum else optax.identity()
  elif config.optimizer in ('adam', 'adamw'):
    base = optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
  else:
    raise ValueError(f'unknown optimizer {config.optimizer!r}; valid choices: {", ".join(OPTIMIZERS)}')
  mode = config.weight_decay_mode or ('decoupled' if config.optimizer == 'adamw' else 'l2')
  if config.weight_decay_on not in WEIGHT_DECAY_ON:
    raise ValueError(f'unknown weight_decay_on {config.weight_decay_on!r}; valid choices: '
                     f'{", ".join(WEIGHT_DECAY_ON)}')
  mask = kernels_only if config.weight_decay_on == 'kernels' else None
  decay = optax.add_decayed_weights(config.weight_decay, mask=mask) \
      if config.weight_decay else optax.identity()
  chain = []
  if config.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  chain += [decay, base] if mode == 'l2' else [base, decay]
  chain.append(optax.scale_by_learning_rate(lr_schedule))
  return optax.chain(*chain)
