"""Replicas of a run: config.seeds trained as one program, the state stacked and the one step vmapped.

Replica i is the run with seed=seeds[i]: its initialisation (`state.create` from key(seeds[i])),
its epoch order, crops and flips (the device input path's batch functions, vmapped over the seeds:
each batch is a pure function of (seed, step)) and its dropout (fold_in(its rng, step)). Every
array of the train state gets a leading replica axis except `step`, which all replicas share; its
BatchNorm statistics are the replica's own. Nothing crosses replicas: the compiled step is
`jax.vmap(step.train_step)`, the eval step `jax.vmap(step.eval_step)` over one shared test batch.

On a mesh the stacked state is replicated and each replica's batch is split over the `data` axis
(batches (R, B, ...) sharded as P(None, 'data')): data parallelism inside every replica.

  built = replicas.build(build.build(config, plan))   # a Built-like object over the stacked state
  state = built.init(); train = built.compile_train(state); eval = built.compile_eval(state)
  replicas.replica(state, i)                          # replica i as the single run's TrainState
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from cnn_zoo import parallel
from cnn_zoo.train import build as build_lib
from cnn_zoo.train import state as state_lib
from cnn_zoo.train import step as step_lib


def state_axes(state: state_lib.TrainState):
  """vmap's axes for a stacked state: 0 on every array, None on the shared step."""
  return jax.tree.map(lambda _: 0, state).replace(step=None)


def batch_sharding(mesh) -> NamedSharding:
  """A stacked batch (R, B, ...): every replica's batch split over the `data` axis."""
  return NamedSharding(mesh, P(None, parallel.DATA_AXIS))


def replica(state: state_lib.TrainState, i: int) -> state_lib.TrainState:
  """Replica i of a stacked state, shaped as the single run's state."""
  return jax.tree.map(lambda x: x[i], state.replace(step=None)).replace(step=state.step)


def label(seeds, i: int) -> str:
  return f'replica {i} (seed {seeds[i]})'


@dataclasses.dataclass(frozen=True)
class Replicas:
  """The run's `Built` with the state stacked over config.seeds: the same entry points (init,
  compile_train, compile_eval) and the same reports (summary, schedule, conv_impls)."""
  built: build_lib.Built

  @property
  def seeds(self) -> tuple[int, ...]:
    return tuple(int(s) for s in self.built.config.seeds)

  def __getattr__(self, name):  # config, plan, model, schedule, mesh, summary, conv_impls ...
    if name == 'built':
      raise AttributeError(name)
    return getattr(self.built, name)

  def _create(self):
    b = self.built
    create = functools.partial(state_lib.create, b.model, b.tx, b.plan.input_shape)
    stacked = jax.vmap(create)(jnp.asarray(self.seeds, jnp.int32))
    return stacked.replace(step=stacked.step[0])

  @functools.cached_property
  def abstract_state(self):
    return jax.eval_shape(self._create)

  @functools.cached_property
  def state_sharding(self):
    return parallel.state_shardings(self.abstract_state, self.mesh, False)

  @property
  def batch_sharding(self):
    return batch_sharding(self.mesh)

  def init(self) -> state_lib.TrainState:
    """The stacked initial state: replica i initialised as the run with seed=seeds[i]."""
    return jax.jit(self._create, out_shardings=self.state_sharding)()

  def batch_spec(self, batch_size: int) -> dict:
    r, shape = len(self.seeds), self.plan.input_shape
    return {'image': jax.ShapeDtypeStruct((r, batch_size, *shape), jnp.float32,
                                          sharding=self.batch_sharding),
            'label': jax.ShapeDtypeStruct((r, batch_size), jnp.int32,
                                          sharding=self.batch_sharding)}

  def compile_train(self, state, batch_size: int | None = None):
    """vmap of the one train step, compiled ahead of time; metrics come per replica (R,); the
    state argument is donated. nonfinite='skip' keeps a replica's state at its own bad step."""
    c = self.config
    step = functools.partial(step_lib.train_step, label_smoothing=c.label_smoothing,
                             skip_nonfinite=c.nonfinite == 'skip')
    axes = state_axes(self.abstract_state)
    fn = jax.jit(jax.vmap(step, in_axes=(axes, 0), out_axes=(axes, 0)),
                 in_shardings=(self.state_sharding, self.batch_sharding),
                 out_shardings=(self.state_sharding, self.replicated), donate_argnums=0)
    return fn.lower(state, self.batch_spec(batch_size or self.plan.batch_size)).compile(
        compiler_options=build_lib.train_compiler_options(c.remat))

  def compile_eval(self, state, batch_size: int | None = None):
    """One eval step for all replicas over one (shared) masked test batch: sums per replica,
    the count once."""
    eval_apply = (self.eval_model or self.model).apply
    axes = state_axes(self.abstract_state)

    def one(state, batch):
      return step_lib.eval_step(state.replace(apply_fn=eval_apply), batch)

    def every(state, batch):
      sums = jax.vmap(one, in_axes=(axes, None))(state, batch)
      return {**sums, 'count': sums['count'][0]}

    fn = jax.jit(every, in_shardings=(self.state_sharding, self.built.batch_sharding),
                 out_shardings=self.replicated)
    spec = self.built.batch_spec(batch_size or self.plan.eval_batch_size, True)
    return fn.lower(state, spec).compile()


def build(built: build_lib.Built) -> Replicas:
  return Replicas(built)


def _mean_std(values):
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


# Fields of results.json that differ by replica.
PER_REPLICA = ('seed', 'test_accuracy', 'test_top5', 'test_loss', 'skipped_steps',
               'weights_sha256')


def results(common: dict, seeds, tests: list[dict], skipped, shas: list[str]) -> dict:
  """One results.json for the replicas: `replicas` holds each one's results as the run with its
  seed would write them (the comparison report reads them as seeds); the top level holds the
  shared fields, the mean of each test metric with its sample standard deviation (`_std`), and
  `train_images_per_s_all` (every replica's images)."""
  skipped = np.broadcast_to(np.asarray(skipped, np.int64), (len(seeds),))
  per = [{**common, 'seed': int(s), 'test_accuracy': t['accuracy'], 'test_top5': t['top5'],
          'test_loss': t['loss'], 'test_examples': t['count'], 'skipped_steps': int(k),
          'weights_sha256': sha}
         for s, t, k, sha in zip(seeds, tests, skipped, shas)]
  top = {**common, 'seed': None, 'seeds': [int(s) for s in seeds], 'replicas': per,
         'test_examples': tests[0]['count'], 'skipped_steps': [int(k) for k in skipped],
         'weights_sha256': list(shas)}
  for key in ('test_accuracy', 'test_top5', 'test_loss'):
    top[key], top[key + '_std'] = _mean_std([r[key] for r in per])
  if common.get('train_images_per_s'):
    top['train_images_per_s_all'] = common['train_images_per_s'] * len(seeds)
  return top
