"""A trained run, reloaded from its workdir for inference: model, weights and preprocessing.

Everything but the weights comes from the run's own record (config.json, dataset.json: the
normalisation, classes and shapes it trained with), never from its dataset, which is read only
for its test images (`TrainedRun.dataset`) or for a run saved before dataset.json was recorded.
"""

import dataclasses
import functools
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_zoo import errors, run_files
from cnn_zoo.data import device_pipeline, preprocess, run_data, sources
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
  data: run_data.RunData  # what the run recorded of its data: classes, normalisation, shapes
  step: int
  load_dataset: Callable[[], sources.Dataset] = dataclasses.field(repr=False, compare=False,
                                                                  default=None)

  @functools.cached_property
  def dataset(self) -> sources.Dataset:
    """The run's dataset, loaded on first use: only for its test images (feature maps of a test
    image, the explorer's examples); predicting, exporting and fine-tuning read none."""
    return self.load_dataset()

  def inputs(self, images_uint8: np.ndarray) -> np.ndarray:
    """uint8 images (N, h, w, c) preprocessed as evaluation does (numpy and JAX only)."""
    return device_pipeline.eval_inputs(images_uint8, self.preprocess)

  def probabilities(self, images_uint8: np.ndarray) -> np.ndarray:
    logits = self.model.apply(self.variables, jnp.asarray(self.inputs(images_uint8)), train=False)
    return np.asarray(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))


def load(workdir: str, replica: int = 0) -> TrainedRun:
  """Reads WORKDIR/config.json and restores its latest readable checkpoint; of a run of replicas
  (config.seeds), replica `replica` (default the first seed's)."""
  config = _saved_config(workdir)
  shape = build_lib.input_shape(config)
  data, load_dataset = _run_data(workdir, config, shape)
  # Shapes only: nothing is initialised or compiled just to be overwritten by the checkpoint,
  # which is restored onto this process's devices, whatever mesh saved it.
  # The eval step's convolution as the run chose it (conv_impl.json): what its evaluation computed.
  impl = autoconv.recorded_eval(workdir, config.conv_impl)
  built = build_lib.build(config, build_lib.fixed_plan(config, data.num_classes),
                          shard_params=False, conv_impls=(impl, impl))
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
  prep = preprocess.Preprocess(data.input_shape, data.mean, data.std, data.resize_mode)
  return TrainedRun(config, built.model, state.variables(), prep, data, int(state.step),
                    load_dataset)


def _saved_config(workdir: str) -> ml_collections.ConfigDict:
  """WORKDIR/config.json, with the fields it predates at the values then in effect."""
  path = run_files.path(workdir, run_files.CONFIG)
  try:
    saved = run_files.read_object(path)
  except run_files.Unreadable as e:
    raise errors.WorkdirError(str(e)) from None
  if saved is None:
    raise errors.NotFoundError(f'{workdir} holds no run: {path} not found')
  config = ml_collections.ConfigDict(saved)
  # A run older than a field computed with the value then in effect (config.LEGACY), else the default.
  for field, value in config_lib.defaults().items():
    if field not in config:
      config[field] = config_lib.LEGACY.get(field, value)
  return config


def _run_data(workdir: str, config, shape) -> tuple[run_data.RunData, Callable]:
  """The run's record of its data (WORKDIR/dataset.json) and a function that loads its dataset;
  for a run saved before that record, the record as training computed it, from the dataset."""
  converted = imagenet.is_converted(workdir)

  def load_dataset():
    if converted:  # torchvision's weights: ImageNet's preprocessing, no data
      return imagenet.photos(config.model, config.num_classes, shape[0])
    return sources.load(config.dataset, config.data_dir or None, image_size=shape[0],
                        num_classes=config.num_classes or None)

  path = run_files.path(workdir, run_files.DATASET)
  try:
    saved = run_files.read_object(path)
  except run_files.Unreadable as e:
    raise errors.WorkdirError(f'{e}; it records the normalisation and classes the run was trained '
                              f'with: restore it from a copy') from None
  if saved is not None:
    return run_data.RunData.from_json(saved, path), load_dataset
  logging.warning('%s holds no %s (saved by an earlier version): its normalisation and classes '
                  'are recomputed from its dataset %s, as they were then', workdir,
                  run_files.DATASET, config.dataset)
  dataset = load_dataset()
  data = run_data.of_dataset(dataset, config, shape, config.num_classes or dataset.num_classes,
                             fit='imagenet' if converted else 'dataset')
  return data, lambda: dataset
