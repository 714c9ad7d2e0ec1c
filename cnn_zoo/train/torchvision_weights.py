"""Converted runs and fine-tuning: torchvision weights in and out of the zoo's run directories.

- `convert(model, path, workdir)` writes a run directory from a torchvision state dict: the
  `config.json` and orbax checkpoint (step 0) that `cnn_zoo.train.trained_run.load` reads, so
  `experiments.predict` and `experiments.visualize` take it like any trained run, and
  `converted.json`, which says where the weights came from and makes inference use ImageNet's
  preprocessing and class names (`cnn_zoo.pretrained.imagenet`).
- `initialise(state, init_from, ...)` starts a training run from the weights of a run directory
  (converted or trained here) or of a state dict file (`config.init_from`), with a new classifier
  when the number of classes differs.
- `export(workdir, path)` writes a run's weights as a torchvision state dict.
"""

import hashlib
import os
import shutil
import time

from absl import logging
import jax
import numpy as np

from cnn_zoo import errors, run_files
from cnn_zoo.data import run_data
from cnn_zoo.pretrained import convert as convert_lib
from cnn_zoo.pretrained import state_dict_files, imagenet, layout
from cnn_zoo.train import build as build_lib
from cnn_zoo.train import checkpoint, trained_run, optim, workdir as workdir_lib
from cnn_zoo.train import config as config_lib
from cnn_zoo.train import state as state_lib

# TFDS's name of ILSVRC-2012, the data torchvision's ImageNet weights were trained on: a converted
# run records it, but reads no data (inference gives it `imagenet.Photos`).
IMAGENET = 'tfds:imagenet2012'


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 22), b''):
      digest.update(chunk)
  return digest.hexdigest()


def run_config(model: str, num_classes: int, model_kwargs: dict):
  """The config.json of a converted run: the model as torchvision built it at 224x224. SGD without
  momentum, so the checkpoint holds no optimizer state (fine-tuning starts its own)."""
  config = config_lib.defaults()
  config.model = model
  config.model_kwargs = model_kwargs
  config.dataset = IMAGENET
  config.num_classes = num_classes
  config.image_size = imagenet.CROP
  config.resize_mode = 'resize'
  config.momentum = 0.0
  config.num_epochs = 0.0
  config.num_train_steps = 1  # a valid config; nothing is trained
  return config


def convert(model: str, torchvision_path: str, workdir: str, overwrite: bool = False) -> dict:
  """Converts the torchvision state dict at `torchvision_path` to zoo model `model` and writes it
  as a run in `workdir`. Returns what it wrote to WORKDIR/converted.json, with timings."""
  layout.check_convertible(model)
  started = time.perf_counter()
  state_dict = state_dict_files.read(torchvision_path)
  read_s = time.perf_counter() - started
  variables, num_classes, kwargs = convert_lib.to_zoo(state_dict, model, where=torchvision_path)
  convert_s = time.perf_counter() - started - read_s
  config = run_config(model, num_classes, kwargs)
  config_lib.validate(config)

  workdir_lib.prepare(workdir)
  lock = workdir_lib.Lock(workdir)
  try:
    workdir_lib.saved_config(workdir)  # another tool's directory is never replaced
    holds = [f for f in run_files.RUN_FILES + (run_files.CONVERTED,)
             if os.path.exists(os.path.join(workdir, f))]
    if holds and not overwrite:
      raise errors.WorkdirError(f'workdir {workdir} already holds a run ({", ".join(holds)}); '
                                f'choose another --workdir or pass --overwrite to replace it')
    for name in holds:
      target = os.path.join(workdir, name)
      shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
    module = build_lib.model(config, num_classes)
    tx = optim.optimizer(config, optim.schedule(config, total_steps=1, steps_per_epoch=1))
    params = jax.device_put(variables['params'])
    state = state_lib.TrainState(
        step=jax.numpy.zeros([], jax.numpy.int32), params=params,
        batch_stats=jax.device_put(variables.get('batch_stats', {})), opt_state=tx.init(params),
        rng=jax.random.PRNGKey(config.seed), apply_fn=module.apply, tx=tx)
    ckpts = checkpoint.Checkpoints(workdir, keep=1)
    ckpts.save(state, force=True)
    ckpts.wait()
    ckpts.close()
    run_files.write_text(run_files.path(workdir, run_files.CONFIG),
                         config.to_json(indent=2, sort_keys=True))
    shape = build_lib.input_shape(config)
    recorded = run_data.of_dataset(imagenet.photos(model, num_classes, shape[0]), config, shape,
                                   num_classes, fit='imagenet')
    run_files.write_json(run_files.path(workdir, run_files.DATASET), recorded.to_json())
    info = {'model': model, 'torchvision_model': layout.TORCHVISION[model],
            'source': os.path.abspath(torchvision_path), 'source_sha256': _sha256(torchvision_path),
            'num_classes': num_classes, 'model_kwargs': kwargs,
            'tensors': len(state_dict), 'params': int(sum(np.size(x) for x in
                                                          jax.tree.leaves(params))),
            'mean': list(imagenet.statistics(model)[0]), 'std': list(imagenet.statistics(model)[1]),
            'preprocessing': f'resize {imagenet.RESIZE}, centre crop {imagenet.CROP}'}
    run_files.write_json(run_files.path(workdir, run_files.CONVERTED), info)
  finally:
    lock.release()
  return {**info, 'read_s': read_s, 'convert_s': convert_s,
          'total_s': time.perf_counter() - started}


def _run_variables(workdir: str):
  """(model, num_classes, model_kwargs, variables) of a run directory."""
  run = trained_run.load(workdir)
  num_classes = run.data.num_classes
  variables = jax.tree.map(np.asarray, run.variables)
  return run.config.model, num_classes, run.config.model_kwargs.to_dict(), variables


def source_model(init_from: str) -> str | None:
  """The model of a run directory (from its config.json), None for a state dict file; refuses a
  path that is neither, naming it."""
  if os.path.isdir(init_from):
    path = run_files.path(init_from, run_files.CONFIG)
    try:
      model = (run_files.read_object(path) or {}).get('model')
    except run_files.Unreadable:
      model = None
    if not isinstance(model, str):
      raise errors.ConfigError(f'config.init_from={init_from!r}: a directory holding no readable '
                               f'run ({path}); give a run directory or a state dict file '
                               f'({", ".join(state_dict_files.FORMATS)})')
    return model
  if not os.path.isfile(init_from):
    raise errors.ConfigError(f'config.init_from={init_from!r} not found; give a run directory or '
                             f'a state dict file ({", ".join(state_dict_files.FORMATS)})')
  state_dict_files._format(init_from)  # pylint: disable=protected-access
  return None


def check_init_from(config) -> None:
  """config.init_from names a run of config.model, or a state dict file (read later)."""
  model = source_model(config.init_from)
  if model is not None and model != config.model:
    raise errors.ConfigError(f'config.init_from={config.init_from!r} is a run of {model!r}, not of '
                             f'config.model={config.model!r}')
  if model is None:
    layout.check_convertible(config.model)


def initialise(state: state_lib.TrainState, init_from: str, model: str,
               num_classes: int) -> state_lib.TrainState:
  """`state` with the parameters and BatchNorm statistics of `init_from` (a run directory or a
  torchvision state dict file); the classifier keeps its fresh initialisation when the number of
  classes differs, and GoogLeNet's auxiliary heads are dropped when the new model has none.
  Everything else must match the new model leaf for leaf, or it is a one-line error."""
  if os.path.isdir(init_from):
    source, source_classes, _, variables = _run_variables(init_from)
    if source != model:
      raise errors.ConfigError(f'config.init_from={init_from!r} is a run of {source!r}, not of '
                               f'{model!r}')
  else:
    variables, source_classes, _ = convert_lib.to_zoo(state_dict_files.read(init_from), model,
                                                      where=init_from)
  target = {'params': state.params, 'batch_stats': state.batch_stats}
  source = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  flat_source = {jax.tree_util.keystr(p): v for p, v in
                 jax.tree_util.tree_flatten_with_path(source)[0]}
  fresh, used = [], set()

  def take(path, leaf):
    key = jax.tree_util.keystr(path)
    if key not in flat_source:
      raise errors.ConfigError(f'config.init_from={init_from!r} has no {key} of shape '
                               f'{tuple(leaf.shape)}: the new {model} differs from it '
                               f'(model_kwargs?)')
    value = flat_source[key]
    used.add(key)
    if value.shape != leaf.shape:
      head = (value.shape[:-1] == leaf.shape[:-1] and value.shape[-1] == source_classes
              and leaf.shape[-1] == num_classes)
      if not head:
        raise errors.ConfigError(f'config.init_from={init_from!r}: {key} has shape '
                                 f'{value.shape}, the new {model} needs {tuple(leaf.shape)}')
      fresh.append(key)
      return leaf
    value = np.asarray(value, leaf.dtype)
    return jax.make_array_from_callback(leaf.shape, leaf.sharding, lambda index: value[index])

  loaded = jax.tree_util.tree_map_with_path(take, target)
  unused = [k for k in flat_source if k not in used and not ("['aux1']" in k or "['aux2']" in k)]
  if unused:
    raise errors.ConfigError(f'config.init_from={init_from!r} has {unused[0]}, which the new '
                             f'{model} lacks ({len(unused)} such leaves): model_kwargs?')
  logging.info('initialised %s from %s (%d of %d leaves; new classifier for %d classes: %s)',
               model, init_from, len(used) - len(fresh), len(used), num_classes,
               ', '.join(fresh) or 'none, the same classes')
  return state.replace(params=loaded['params'], batch_stats=loaded['batch_stats'])


def export(workdir: str, path: str) -> dict:
  """Writes the weights of the run in `workdir` as a torchvision state dict at `path` (.pth needs
  PyTorch; .safetensors and .npz do not). Returns what was written."""
  model, num_classes, _, variables = _run_variables(workdir)
  layout.check_convertible(model)
  state_dict = convert_lib.to_torchvision(variables, model)
  state_dict_files.write(state_dict, path)
  return {'model': model, 'torchvision_model': layout.TORCHVISION[model],
          'num_classes': num_classes, 'tensors': len(state_dict), 'path': path}
