"""Rematerialisation: which activations a model's blocks keep for the backward pass.

Every block-structured family takes a `remat` field (runs: config.remat):

- 'none': the backward pass reads every activation the forward pass kept (fastest, most memory).
- 'blocks': a block (a ResNet block, an Inception block, a DenseNet layer) keeps only its inputs;
  its activations are recomputed in the backward pass, one block at a time (`jax.checkpoint`).
- 'dots': a block keeps the outputs of its convolutions and matrix multiplies and recomputes the
  cheap elementwise work (BatchNorm, ReLU, concatenation) from them.

The function computed, the parameters and their names are the same under every choice.

`jax.checkpoint` marks what it recomputes with optimisation barriers, so that the compiler does
not merge the recomputation back into the forward pass (common-subexpression elimination), which
would keep every activation alive again. XLA's CPU pipeline removes those barriers before its CSE
(the 'cse_barrier_expander' pass): a train step with remat is compiled with that pass disabled
(`conv.KEEP_BARRIERS`, applied by `cnn_zoo.train.build.train_compiler_options`), without which
remat saved no memory on CPU.
"""

import flax.linen as nn
import jax

REMAT_POLICIES = ('none', 'blocks', 'dots')
FAMILIES_WITH_BLOCKS = ('resnet', 'googlenet', 'densenet')


def block(cls: type[nn.Module], remat: str) -> type[nn.Module]:
  """`cls`, or `cls` rematerialised under `remat`; it is called as `block(x, train)` (train
  static) and keeps `cls`'s name, so parameters are named as without remat."""
  if remat not in REMAT_POLICIES:
    raise ValueError(f'remat={remat!r} is not valid; valid choices: {", ".join(REMAT_POLICIES)}')
  if remat == 'none':
    return cls
  policy = jax.checkpoint_policies.dots_saveable if remat == 'dots' else None
  wrapped = nn.remat(cls, static_argnums=(2,), policy=policy)
  wrapped.__name__ = cls.__name__  # flax names submodules after their class: 'BasicBlock_0'
  return wrapped

