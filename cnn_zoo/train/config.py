"""Every config field with its default, and validation before anything is compiled.

Config files in configs/ start from `defaults()` and change what their experiment needs, so every
config has every field and an unknown field is an error.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnn_zoo import errors
from cnn_zoo import models
from cnn_zoo.data import inputs, preprocess, sources
from cnn_zoo.models import conv, registry, remat
from cnn_zoo.train import optim, trackers

DTYPES = ('float32', 'bfloat16')
NONFINITE = ('stop', 'skip')
# Bounds that keep counts inside the int32 the step counts in, and sizes that can be built at all.
MAX_INT = 2**31 - 1
MAX_IMAGE_SIZE = 4096
FLOAT32_MAX = float(np.finfo(np.float32).max)


# What runs from before a field existed computed, in effect: a run that predates weight_init was
# initialised with flax's defaults and fed by tf.data, one that predates weight_decay_on decayed
# the kernels only, and each resumes only under those values.
LEGACY = {'weight_init': 'flax', 'input_pipeline': 'tfdata', 'weight_decay_on': 'kernels'}


def defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # What to train, on what.
  c.model = 'lenet5'
  c.model_kwargs = ml_collections.ConfigDict()  # constructor overrides, e.g. activation='tanh'
  c.dataset = 'digits'  # a TFDS name, npz:PATH, folder:PATH or tfds:NAME
  c.data_dir = ''  # TFDS data_dir; '' means TFDS_DATA_DIR or ~/tensorflow_datasets
  c.num_classes = 0  # 0: the dataset's
  c.image_size = 0  # 0: the model's canonical size
  c.weight_init = 'paper'  # each family's own initialisation, or 'flax' (linen's defaults)
  c.init_from = ''  # start from a run directory's or a torchvision state dict's weights
  c.resize_mode = 'auto'
  c.augment = 'none'
  c.input_pipeline = 'auto'  # device: batches computed on the device; tfdata: on the host
  c.crop_padding = 4
  # Budget: num_train_steps > 0 overrides num_epochs.
  c.batch_size = 128
  c.eval_batch_size = 0  # 0: batch_size
  c.num_epochs = 10.0
  c.num_train_steps = -1
  c.time_budget_s = 0.0  # > 0: stop after this many seconds with a checkpoint, results incomplete
  # Optimizer and schedule.
  c.optimizer = 'sgd'
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.nesterov = False
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adam_eps = 1e-8
  c.weight_decay = 0.0
  c.weight_decay_mode = ''  # '' picks decoupled for adamw, l2 otherwise
  c.weight_decay_on = 'kernels'  # all: every parameter (PyTorch's SGD(model.parameters())); kernels
  c.grad_clip_norm = 0.0
  c.schedule = 'cosine'
  c.warmup_epochs = 0.0
  c.lr_boundaries = (0.5, 0.75)  # piecewise: fractions of the budget
  c.lr_decay_factor = 0.1
  c.label_smoothing = 0.0
  # Numerics and reproducibility.
  c.seed = 0
  # () trains the one run of config.seed; (0, 1, 2) trains three replicas of it in one program,
  # replica i exactly as the run with seed=seeds[i] (cnn_zoo.train.replicas); seed is then unused.
  c.seeds = ()
  c.dtype = 'float32'  # activations; parameters, optimizer state and BN statistics stay float32
  c.nonfinite = 'stop'  # stop at a NaN/Inf loss or gradient, or skip such steps (counted)
  # auto: on CPU the faster of xla and im2col for each step, measured once per machine and cached
  # (cnn_zoo.train.autoconv); XLA's native convolution elsewhere. im2col_bf16: bfloat16 GEMMs.
  c.conv_impl = 'auto'
  c.remat = 'none'  # none | blocks | dots: what blocks keep for the backward pass (models.remat)
  c.shard_params = False  # FSDP-style: split large parameters and optimizer state over devices
  # Outputs.
  c.log_every_steps = 50
  c.eval_every_epochs = 1.0  # 0: evaluate only at the end
  c.checkpoint_every_steps = 0  # 0: at each evaluation and at the end
  c.keep_checkpoints = 3
  # Experiment trackers (cnn_zoo.train.trackers): ('mlflow',), ('wandb',) or both.
  c.trackers = ()
  c.tracker_project = 'cnn_zoo'  # the MLflow experiment, the W&B project
  c.mlflow_uri = ''  # '': MLFLOW_TRACKING_URI, else MLflow's default
  return c


def _choice(config, field, choices):
  value = config[field]
  if value not in choices:
    if field == 'model':
      raise errors.ConfigError(f'config.model={value!r} is not valid; {registry.suggest(value)}')
    raise errors.ConfigError(f'config.{field}={value!r} is not valid; valid choices: '
                             f'{", ".join(choices)}')


def _at_least(config, field, low, *, strict=False, high=None):
  value = config[field]
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise errors.ConfigError(f'config.{field}={value!r} must be a number')
  if value < low or (strict and value == low):
    relation = '>' if strict else '>='
    raise errors.ConfigError(f'config.{field}={value!r} is out of range; it must be {relation} {low}')
  if high is not None and value > high:
    raise errors.ConfigError(f'config.{field}={value!r} is out of range; it must be <= {high}')


def _below_one(config, field):
  if not 0 <= config[field] < 1:
    raise errors.ConfigError(f'config.{field}={config[field]!r} must be in [0, 1)')


def _numbers(tree, prefix='config'):
  """(name, value) of every number in a config, lists and model_kwargs included."""
  items = tree.items() if hasattr(tree, 'items') else enumerate(tree)
  for key, value in items:
    name = f'{prefix}.{key}' if hasattr(tree, 'items') else f'{prefix}[{key}]'
    if hasattr(value, 'items') or isinstance(value, (list, tuple)):
      yield from _numbers(value, name)
    elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
      yield name, value


def _check_finite(config):
  """Refuses NaN, Inf and floats beyond float32 anywhere: they can never be right."""
  for name, value in _numbers(config):
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
      raise errors.NonFiniteConfigError(f'{name}={value!r} is not a finite number')
    if isinstance(value, (float, np.floating)) and abs(value) > FLOAT32_MAX:
      raise errors.NonFiniteConfigError(f'{name}={value!r} overflows float32 (the largest is '
                                        f'{FLOAT32_MAX:.4g})')


def _check_model_kwargs(config):
  """Refuses constructor overrides that the model does not take."""
  module = models.get(config.model)
  taken = sorted(f.name for f in dataclasses.fields(module)
                 if f.init and f.name not in ('parent', 'name', 'num_classes', 'layers', 'remat'))
  unknown = sorted(set(config.model_kwargs.keys()) - set(taken))
  if unknown:
    raise errors.ConfigError(f'config.model_kwargs {", ".join(unknown)} is not an argument of model '
                     f'{config.model!r}; valid choices: {", ".join(taken) or "none"}')
  if config.model_kwargs:
    # A value the model cannot be built with (stem='foo'): found by tracing its init on shapes
    # alone, which costs nothing to compile and allocates nothing.
    kwargs = config.model_kwargs.to_dict()
    h, w, c = models.input_shape(config.model)
    size = config.image_size or h
    try:
      jax.eval_shape(functools.partial(models.get(config.model, **kwargs).init, train=False),
                     jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, size, size, c), jnp.float32))
    except (ValueError, TypeError, KeyError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise errors.ConfigError(f'config.model_kwargs {kwargs} cannot build model '
                               f'{config.model!r}: {first}') from None


MAX_REPLICAS = 1024


def _check_seeds(config):
  """config.seeds: distinct seeds in [0, MAX_INT], and what replicas of a run cannot do yet."""
  seeds = config.seeds
  if not isinstance(seeds, (tuple, list)) or any(
      isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s <= MAX_INT
      for s in seeds):
    raise errors.ConfigError(f'config.seeds={seeds!r} must be a tuple of seeds, each an integer '
                             f'in [0, {MAX_INT}], e.g. (0, 1, 2); () trains config.seed alone')
  if len(set(seeds)) != len(seeds) or len(seeds) > MAX_REPLICAS:
    raise errors.ConfigError(f'config.seeds={tuple(seeds)!r} must be at most {MAX_REPLICAS} '
                             f'distinct seeds')
  if not seeds:
    return
  if config.seed != 0:
    raise errors.ConfigError(f'config.seed={config.seed!r} is unused when config.seeds='
                             f'{tuple(seeds)!r} is given; leave seed at 0')
  for field, single in (('input_pipeline', 'tfdata'), ('init_from', None),
                        ('shard_params', True)):
    value = config[field]
    if (value == single) if single is not None else value:
      raise errors.ConfigError(f'config.{field}={value!r} cannot train replicas (config.seeds='
                               f'{tuple(seeds)!r}): replicas use the device input path, start '
                               f'from their own seeds and keep their state unsharded; train one '
                               f'seed per run instead (seeds=())')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (a ValueError) with one line naming the field, the value and the valid
  choices."""
  unknown = sorted(set(config.keys()) - set(defaults().keys()))
  if unknown:
    raise errors.ConfigError(f'unknown config field(s) {", ".join(unknown)}; valid fields: '
                             f'{", ".join(sorted(defaults().keys()))}')
  _check_finite(config)
  _choice(config, 'model', models.names())
  _choice(config, 'weight_init', models.WEIGHT_INITS)
  _check_model_kwargs(config)
  sources.check_name(config.dataset)
  _choice(config, 'optimizer', optim.OPTIMIZERS)
  _choice(config, 'schedule', optim.SCHEDULES)
  _choice(config, 'weight_decay_mode', ('',) + optim.WEIGHT_DECAY_MODES)
  _choice(config, 'weight_decay_on', optim.WEIGHT_DECAY_ON)
  _choice(config, 'augment', preprocess.AUGMENTATIONS)
  _choice(config, 'input_pipeline', inputs.INPUT_PIPELINES)
  _choice(config, 'resize_mode', preprocess.RESIZE_MODES)
  _choice(config, 'dtype', DTYPES)
  _choice(config, 'nonfinite', NONFINITE)
  _choice(config, 'conv_impl', conv.CONV_IMPLS)
  _choice(config, 'remat', remat.REMAT_POLICIES)
  trackers.check(config.trackers)
  family = models.spec(config.model).family
  if config.remat != 'none' and family not in remat.FAMILIES_WITH_BLOCKS:
    raise errors.ConfigError(
        f'config.remat={config.remat!r}: model {config.model!r} ({family}) has no blocks to '
        f'rematerialise; families with blocks: {", ".join(remat.FAMILIES_WITH_BLOCKS)}')
  for field in ('batch_size', 'learning_rate', 'log_every_steps', 'keep_checkpoints', 'adam_eps'):
    _at_least(config, field, 0, strict=True, high=MAX_INT)
  for field in ('num_epochs', 'eval_batch_size', 'momentum', 'weight_decay', 'grad_clip_norm',
                'warmup_epochs', 'label_smoothing', 'crop_padding', 'eval_every_epochs',
                'checkpoint_every_steps', 'seed', 'adam_b1', 'adam_b2', 'lr_decay_factor',
                'time_budget_s'):
    _at_least(config, field, 0, high=MAX_INT)
  _check_seeds(config)
  _at_least(config, 'num_classes', 0, high=sources.MAX_CLASSES)
  if config.num_classes == 1:
    raise errors.ConfigError('config.num_classes=1: one class is learnt at loss 0 and 100% accuracy '
                             'without learning anything; give at least 2 (or 0: the dataset\'s)')
  size = config.image_size or models.input_shape(config.model)[0]
  if config.augment in ('crop', 'crop_flip') and config.crop_padding >= size:
    raise errors.ConfigError(f'config.crop_padding={config.crop_padding} must be smaller than the '
                             f'{size}x{size} model input it pads (augment={config.augment!r})')
  _at_least(config, 'image_size', 0, high=MAX_IMAGE_SIZE)
  _at_least(config, 'num_train_steps', -MAX_INT, high=MAX_INT)
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    raise errors.ConfigError(f'config.num_epochs={config.num_epochs!r} must be > 0 '
                             f'(or give config.num_train_steps > 0)')
  for field in ('label_smoothing', 'momentum', 'adam_b1', 'adam_b2'):
    _below_one(config, field)
  if any(isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b < 1
         for b in config.lr_boundaries):
    raise errors.ConfigError(f'config.lr_boundaries={tuple(config.lr_boundaries)!r} must be '
                             f'fractions of the budget, each in (0, 1)')


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """A config file's argument (`--config=FILE:ARG`) as named values: `model=resnet56,reduced`
  with defaults(model='resnet20', reduced=False) gives model='resnet56', reduced=True. A bare
  name sets a boolean to True; values take the type of their default. Unknown names are a
  ConfigError naming the valid ones."""
  parsed = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, has_value, value = item.partition('=')
    key = key.strip()
    if key not in defaults:
      valid = (k if isinstance(v, bool) else f'{k}=... (default {v!r})' for k, v in defaults.items())
      raise errors.ConfigError(f'unknown config argument {key!r}; valid choices: '
                               f'{", ".join(valid)}')
    default = defaults[key]
    if not has_value:
      if not isinstance(default, bool):
        raise errors.ConfigError(f'config argument {key!r} needs a value ({key}=...)')
      parsed[key] = True
    elif isinstance(default, bool):
      if value not in ('true', 'false', 'True', 'False'):
        raise errors.ConfigError(f'config argument {key}={value!r} must be true or false')
      parsed[key] = value in ('true', 'True')
    else:
      try:
        parsed[key] = type(default)(value)
      except ValueError:
        raise errors.ConfigError(f'config argument {key}={value!r} must be a '
                                 f'{type(default).__name__}') from None
  return parsed


def choose(name: str, value, choices) -> None:
  """A config argument's value among its choices, else a ConfigError naming them."""
  if value not in choices:
    raise errors.ConfigError(f'config argument {name}={value!r} is not valid; valid choices: '
                             f'{", ".join(map(str, choices))}')


def flatten(tree: dict, prefix: str = '') -> dict:
  """Nested dicts as one level of dotted field names, as `--config.a.b=` overrides name them."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat
