"""One run, built once: from a validated config to the model, optimizer, state and compiled steps.

Training (`loop`), inference (`trained_run.load`, and through it `predict` and the feature maps) and
the step benchmark all build here, so what is benchmarked or reloaded is exactly what trains.

  plan = build.make_plan(config, dataset)         # shapes and budget, checked before compiling
  built = build.build(config, plan)               # model, optimizer, shardings
  state = built.init()                            # or a checkpoint restored onto built.abstract_state
  train_step = built.compile_train(state)         # ahead of time: another batch shape is an error
  eval_step = built.compile_eval(state)

config.conv_impl='auto' is resolved before `build` by `autoconv.choose` (runs, the benchmark),
which may pick different implementations for the train and the eval step; without that, 'auto'
means `conv.resolve('auto')`.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from cnn_zoo import errors, models, parallel
from cnn_zoo.data import preprocess, sources
from cnn_zoo.models import conv as conv_lib, summary as summary_lib
from cnn_zoo.train import config as config_lib
from cnn_zoo.train import optim, step as step_lib
from cnn_zoo.train import state as state_lib


def input_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """The model's input (H, W, C): config.image_size, or the model's canonical size."""
  h, _, c = models.input_shape(config.model)
  size = config.image_size or h
  return size, size, c


@dataclasses.dataclass(frozen=True)
class Plan:
  """Shapes and budget worked out from the config and the data, before any compilation."""
  input_shape: tuple[int, int, int]
  num_classes: int
  batch_size: int
  eval_batch_size: int
  steps_per_epoch: int
  total_steps: int
  eval_every_steps: int
  checkpoint_every_steps: int


def make_plan(config, dataset: sources.Dataset) -> Plan:
  shape = input_shape(config)
  models.check_input_shape(config.model, shape)
  preprocess.check_fits(dataset.name, dataset.image_shape, shape, config.resize_mode)
  num_classes = config.num_classes or dataset.num_classes
  top_label = int(max(dataset.train.labels.max(), dataset.test.labels.max()))
  if top_label >= num_classes:
    raise errors.DataError(f'{dataset.name}: label {top_label} is out of range for '
                           f'num_classes={num_classes}')
  if num_classes < 2:
    raise errors.DataError(f'{dataset.name}: {num_classes} class: one class is learnt at loss 0 and '
                           f'100% accuracy without learning anything; a dataset needs at least 2')
  eval_batch_size = config.eval_batch_size or config.batch_size
  parallel.check_batch_size(config.batch_size, 'batch_size')
  parallel.check_batch_size(eval_batch_size, 'eval_batch_size')
  # A larger eval batch would only be padding (eval_batch_size=10**9 would allocate it): at most
  # the test split, rounded up to divide over the devices and processes as the config's does.
  step = math.lcm(jax.device_count(), jax.process_count())
  eval_batch_size = min(eval_batch_size, -(-len(dataset.test) // step) * step)
  steps_per_epoch = len(dataset.train) // config.batch_size
  if steps_per_epoch == 0:
    raise errors.ConfigError(f'config.batch_size={config.batch_size} exceeds the '
                             f'{len(dataset.train)} training examples of {dataset.name}')
  total_steps = config.num_train_steps if config.num_train_steps > 0 else \
      max(1, int(math.ceil(config.num_epochs * steps_per_epoch)))
  if total_steps > config_lib.MAX_INT:
    raise errors.ConfigError(f'config.num_epochs={config.num_epochs!r} makes {total_steps:,} steps '
                             f'of {steps_per_epoch:,} per epoch; at most {config_lib.MAX_INT:,}')
  eval_every = int(round(config.eval_every_epochs * steps_per_epoch)) or total_steps
  return Plan(shape, num_classes, config.batch_size, eval_batch_size, steps_per_epoch,
              total_steps, eval_every, config.checkpoint_every_steps or eval_every)


@dataclasses.dataclass(frozen=True)
class Built:
  """What a run computes with. `init` and the compiled steps are the only entry points; the
  state's shardings follow config.shard_params on the mesh of every device."""
  config: ml_collections.ConfigDict
  plan: Plan
  model: object  # the linen Module
  schedule: optax.Schedule
  tx: optax.GradientTransformation
  mesh: jax.sharding.Mesh
  abstract_state: state_lib.TrainState  # shapes and dtypes only
  state_sharding: object  # a pytree of NamedSharding, like the state
  eval_model: object = None  # the linen Module the eval step computes with (None: `model`)

  @property
  def conv_impls(self) -> tuple[str, str]:
    """The concrete convolution implementations of the train and the eval step."""
    return (conv_lib.resolve(self.model.layers.conv_impl),
            conv_lib.resolve((self.eval_model or self.model).layers.conv_impl))

  @functools.cached_property
  def summary(self) -> summary_lib.Summary:
    """Parameters and MACs, counted by tracing the model once: only for those who report them
    (training, the benchmark), not for a run reloaded to predict."""
    return summary_lib.summarize(self.model, self.plan.input_shape)

  @property
  def replicated(self):
    return parallel.replicated(self.mesh)

  @property
  def batch_sharding(self):
    return parallel.batch_sharded(self.mesh)

  def init(self) -> state_lib.TrainState:
    """The initial state (config.seed), created directly in its shardings."""
    return jax.jit(self._create, out_shardings=self.state_sharding)()

  def _create(self):
    return state_lib.create(self.model, self.tx, self.plan.input_shape, self.config.seed)

  def batch_spec(self, batch_size: int, with_mask: bool) -> dict:
    spec = {'image': jax.ShapeDtypeStruct((batch_size, *self.plan.input_shape), jnp.float32,
                                          sharding=self.batch_sharding),
            'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=self.batch_sharding)}
    if with_mask:
      spec['mask'] = jax.ShapeDtypeStruct((batch_size,), jnp.float32, sharding=self.batch_sharding)
    return spec

  def compile_train(self, state, batch_size: int | None = None):
    """The train step compiled ahead of time for `batch_size` (default: the plan's); the state
    argument is donated."""
    c = self.config
    fn = jax.jit(functools.partial(step_lib.train_step, label_smoothing=c.label_smoothing,
                                   skip_nonfinite=c.nonfinite == 'skip'),
                 in_shardings=(self.state_sharding, self.batch_sharding),
                 out_shardings=(self.state_sharding, self.replicated), donate_argnums=0)
    return fn.lower(state, self.batch_spec(batch_size or self.plan.batch_size, False)).compile(
        compiler_options=train_compiler_options(c.remat))

  def compile_eval(self, state, batch_size: int | None = None):
    """The eval step (sums over a masked batch) compiled ahead of time for `batch_size`, computing
    with `eval_model`: it takes the train step's state, whose parameters every implementation
    shares."""
    eval_apply = (self.eval_model or self.model).apply

    def eval_step(state, batch):
      return step_lib.eval_step(state.replace(apply_fn=eval_apply), batch)

    fn = jax.jit(eval_step, in_shardings=(self.state_sharding, self.batch_sharding),
                 out_shardings=self.replicated)
    return fn.lower(state, self.batch_spec(batch_size or self.plan.eval_batch_size,
                                           True)).compile()


def train_compiler_options(remat: str, platform: str | None = None) -> dict:
  """XLA options for a train step: optimisation barriers kept (`conv.KEEP_BARRIERS`) where they
  do their work, jax.checkpoint's under remat and `conv.barrier_conv`'s on CPU."""
  platform = platform or jax.default_backend()
  return {} if remat == 'none' and platform != 'cpu' else dict(conv_lib.KEEP_BARRIERS)


def model(config, num_classes: int, conv_impl: str | None = None):
  """The config's model for `num_classes` classes, computing its convolutions with `conv_impl`
  (default config.conv_impl) and keeping what config.remat says for the backward pass."""
  remat = {'remat': config.remat} if config.remat != 'none' else {}  # only families with blocks
  return models.get(config.model, num_classes=num_classes, dtype=config.dtype,
                    weight_init=config.weight_init, conv_impl=conv_impl or config.conv_impl,
                    **remat, **config.model_kwargs.to_dict())


def build(config, plan: Plan, mesh=None, shard_params: bool | None = None,
          conv_impls: tuple[str, str] | None = None) -> Built:
  """The model, optimizer and state shardings of `config` under `plan` (nothing compiled yet).
  `shard_params` overrides config.shard_params (a reader restores onto replicated state);
  `conv_impls` (train, eval) overrides config.conv_impl (`autoconv.choose`'s choice)."""
  train_impl, eval_impl = conv_impls or (config.conv_impl, config.conv_impl)
  module = model(config, plan.num_classes, train_impl)
  eval_module = None if eval_impl == train_impl else model(config, plan.num_classes, eval_impl)
  lr_schedule = optim.schedule(config, plan.total_steps, plan.steps_per_epoch)
  tx = optim.optimizer(config, lr_schedule)
  mesh = mesh or parallel.mesh()
  abstract = jax.eval_shape(
      functools.partial(state_lib.create, module, tx, plan.input_shape, config.seed))
  shard = config.shard_params if shard_params is None else shard_params
  return Built(config, plan, module, lr_schedule, tx, mesh, abstract,
               parallel.state_shardings(abstract, mesh, shard), eval_module)


def fixed_plan(config, num_classes: int, total_steps: int = 1, steps_per_epoch: int = 1) -> Plan:
  """A plan without a dataset (the step benchmark; a reloaded run's shapes)."""
  batch = config.batch_size
  return Plan(input_shape(config), num_classes, batch, config.eval_batch_size or batch,
              steps_per_epoch, total_steps, total_steps, total_steps)
