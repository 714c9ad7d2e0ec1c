"""A trained run, reloaded from its workdir for inference: model, weights and preprocessing."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_zoo import errors
from cnn_zoo.data import device_pipeline, preprocess, sources
from cnn_zoo.pretrained import imagenet
from cnn_zoo.train import autoconv
from cnn_zoo.train import build as build_lib
from cnn_zoo.train import checkpoint
from cnn_zoo.train import config as config_lib
from cnn_zoo.train import replicas as replicas_lib


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  config: ml_collections.ConfigDict
  model: object  # the linen Module
  variables: dict  # {'params': ...} and, with BatchNorm, {'batch_stats': ...}
  preprocess: preprocess.Preprocess  # the run's eval preprocessing
  dataset: sources.Dataset
  step: int

  def inputs(self, images_uint8: np.ndarray) -> np.ndarray:
    """uint8 images (N, h, w, c) preprocessed as evaluation does (numpy and JAX only)."""
    return device_pipeline.eval_inputs(images_uint8, self.preprocess)

  def probabilities(self, images_uint8: np.ndarray) -> np.ndarray:
    logits = self.model.apply(self.variables, jnp.asarray(self.inputs(images_uint8)), train=False)
    return np.asarray(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))


def load(workdir: str, replica: int = 0) -> TrainedRun:
  """Reads WORKDIR/config.json and restores its latest readable checkpoint; of a run of replicas
  (config.seeds), replica `replica` (default the first seed's)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise errors.NotFoundError(f'{workdir} holds no run: {path} not found')
  try:
    with open(path, encoding='utf-8') as f:
      config = ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as e:
    raise errors.WorkdirError(f'{path} is unreadable ({type(e).__name__}: '
                              f'{str(e).splitlines()[0] if str(e) else ""})') from None
  # A run older than a field computed with the value then in effect (config.LEGACY), else the default.
  for field, value in config_lib.defaults().items():
    if field not in config:
      config[field] = config_lib.LEGACY.get(field, value)
  shape = build_lib.input_shape(config)
  if imagenet.is_converted(workdir):  # torchvision's weights: ImageNet's preprocessing, no data
    dataset = imagenet.photos(config.model, config.num_classes, shape[0])
  else:
    dataset = sources.load(config.dataset, config.data_dir or None, image_size=shape[0],
                           num_classes=config.num_classes or None)
  # Shapes only: nothing is initialised or compiled just to be overwritten by the checkpoint,
  # which is restored onto this process's devices, whatever mesh saved it.
  # The eval step's convolution as the run chose it (conv_impl.json): what its evaluation computed.
  impl = autoconv.recorded_eval(workdir, config.conv_impl)
  built = build_lib.build(config, build_lib.fixed_plan(config, config.num_classes or
                                                       dataset.num_classes), shard_params=False,
                          conv_impls=(impl, impl))
  if config.seeds:  # the stacked checkpoint, then one replica of it
    if not 0 <= replica < len(config.seeds):
      raise errors.ConfigError(f'replica={replica} is out of range: {workdir} holds '
                               f'{len(config.seeds)} replicas (seeds {list(config.seeds)})')
    built = replicas_lib.build(built)
  template = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          built.abstract_state, built.state_sharding)
  # A reader moves nothing: the run may be live, or another user's.
  state = checkpoint.Checkpoints(workdir, move_damaged=False).restore_latest(template)
  if state is None:
    raise errors.NotFoundError(f'{workdir} holds no readable checkpoint')
  if config.seeds:
    state = replicas_lib.replica(state, replica)
  mean, std = dataset.channel_stats()
  prep = preprocess.Preprocess(shape, tuple(mean), tuple(std), config.resize_mode)
  return TrainedRun(config, built.model, state.variables(), prep, dataset, int(state.step))
