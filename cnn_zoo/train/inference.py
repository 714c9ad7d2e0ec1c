"""A trained run, reloaded from its workdir for inference: model, weights and preprocessing."""

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_zoo import errors
from cnn_zoo import models, parallel
from cnn_zoo.data import device_pipeline, preprocess, sources
from cnn_zoo.pretrained import imagenet
from cnn_zoo.train import checkpoint, optim
from cnn_zoo.train import state as state_lib


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
    prep = self.preprocess
    fitted = device_pipeline.fit(images_uint8, prep.image_shape, prep.resize_mode)
    fitted = fitted / np.float32(255.0) if fitted.dtype == np.uint8 else fitted
    source, channels = images_uint8.shape[-1], prep.image_shape[-1]
    mean = preprocess.stats_for_channels(prep.mean, source, channels)
    std = preprocess.stats_for_channels(prep.std, source, channels)
    return ((fitted - mean) / std).astype(np.float32)

  def probabilities(self, images_uint8: np.ndarray) -> np.ndarray:
    logits = self.model.apply(self.variables, jnp.asarray(self.inputs(images_uint8)), train=False)
    return np.asarray(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))


def load(workdir: str) -> TrainedRun:
  """Reads WORKDIR/config.json and restores its latest readable checkpoint."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise errors.NotFoundError(f'{workdir} holds no run: {path} not found')
  try:
    with open(path, encoding='utf-8') as f:
      config = ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as e:
    raise errors.WorkdirError(f'{path} is unreadable ({type(e).__name__}: '
                              f'{str(e).splitlines()[0] if str(e) else ""})') from None
  spec = models.spec(config.model)
  size = config.image_size or spec.input_shape[0]
  input_shape = (size, size, spec.input_shape[2])
  if imagenet.is_converted(workdir):  # torchvision's weights: ImageNet's preprocessing, no data
    dataset = imagenet.photos(config.model, config.num_classes, size)
  else:
    dataset = sources.load(config.dataset, config.data_dir or None, image_size=size,
                           num_classes=config.num_classes or None)
  model = models.get(config.model, num_classes=config.num_classes or dataset.num_classes,
                     dtype=config.dtype, **config.model_kwargs.to_dict())
  # The optimizer only shapes the checkpoint's opt_state; its schedule values do not matter.
  tx = optim.optimizer(config, optim.schedule(config, total_steps=1, steps_per_epoch=1))
  # Shapes only: nothing is initialised or compiled just to be overwritten by the checkpoint.
  abstract = jax.eval_shape(functools.partial(state_lib.create, model, tx, input_shape, config.seed))
  # Restored onto this process's devices, whatever mesh saved the checkpoint.
  on_here = parallel.replicated(parallel.mesh())
  template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=on_here),
                          abstract)
  # A reader moves nothing: the run may be live, or another user's.
  state = checkpoint.Checkpoints(workdir, move_damaged=False).restore_latest(template)
  if state is None:
    raise errors.NotFoundError(f'{workdir} holds no readable checkpoint')
  mean, std = dataset.channel_stats()
  prep = preprocess.Preprocess(input_shape, tuple(mean), tuple(std), config.resize_mode)
  return TrainedRun(config, model, state.variables(), prep, dataset, int(state.step))
