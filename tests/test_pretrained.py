"""torchvision weights in the zoo, without PyTorch: the committed key -> shape manifest of every
torchvision counterpart maps one to one, zoo -> torchvision layout -> zoo is bit-exact for every
family, files are read and refused as they should be, and a converted run is taken by predict,
visualize and fine-tuning. (tests/test_pretrained_torch.py checks the logits against torchvision's
own code where PyTorch is installed.)"""

import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cnn_zoo import errors, models, predict, run_files, visualize
from cnn_zoo.pretrained import convert, state_dict_files, imagenet, layout
from cnn_zoo.train import torchvision_weights as runs, trained_run, loop
from configs import finetune

MANIFESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'cnn_zoo',
                         'pretrained', 'manifests')


def _manifest(name):
  with open(os.path.join(MANIFESTS, f'{name}.json'), encoding='utf-8') as f:
    return json.load(f)


def _zeros(manifest):
  """A state dict of the manifest's shapes; zero-strided, so VGG's costs no memory until converted."""
  return {k: np.zeros((), np.int64) if k.endswith(layout.BATCHES_TRACKED)
          else np.broadcast_to(np.float32(0), shape) for k, shape in manifest.items()}


def _random_variables(name, num_classes=1000, seed=0, **kwargs):
  """Variables of zoo model `name` drawn from numpy (faster than init for VGG's 100M weights);
  running variances positive."""
  abstract = convert.abstract_variables(name, num_classes, kwargs)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    x = rng.standard_normal(leaf.shape, dtype=np.float32)
    if path[-1].key == 'var':
      return np.abs(x) + 0.5
    if path[-1].key == 'kernel':
      return x * np.float32(np.sqrt(2.0 / np.prod(leaf.shape[:-1])))
    return x * np.float32(0.1)
  return jax.tree_util.tree_map_with_path(draw, abstract)


def test_every_convertible_model_has_a_manifest():
  assert sorted(f[:-5] for f in os.listdir(MANIFESTS)) == sorted(layout.TORCHVISION)
  for name in layout.TORCHVISION:  # the zoo counts the same parameters as torchvision
    manifest = _manifest(name)
    if name == 'googlenet':  # torchvision's file holds the auxiliary heads; the zoo builds them
      manifest = {k: v for k, v in manifest.items() if not k.startswith('aux')}
    count = sum(int(np.prod(s)) for k, s in manifest.items()
                if not k.endswith(('running_mean', 'running_var', layout.BATCHES_TRACKED)))
    variables = convert.abstract_variables(name, 1000)
    assert count == sum(x.size for x in jax.tree.leaves(variables['params'])), name


@pytest.mark.parametrize('name', sorted(layout.TORCHVISION))
def test_the_manifest_maps_one_to_one(name):
  manifest = _manifest(name)
  variables, num_classes, kwargs = convert.to_zoo(_zeros(manifest), name)
  assert num_classes == 1000
  assert kwargs == ({'aux_logits': True} if name == 'googlenet' else {})
  # Every leaf of the model filled, with its shape ...
  abstract = convert.abstract_variables(name, 1000, kwargs)
  assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda x: x.shape, abstract)
  # ... and back: torchvision's keys, in its order, with its shapes.
  back = convert.to_torchvision(variables, name)
  assert list(back) == list(manifest)
  assert {k: list(v.shape) for k, v in back.items()} == manifest


def test_googlenet_without_auxiliary_heads_converts_too():
  manifest = {k: v for k, v in _manifest('googlenet').items() if not k.startswith('aux')}
  variables, _, kwargs = convert.to_zoo(_zeros(manifest), 'googlenet')
  assert kwargs == {} and 'aux1' not in variables['params']
  assert list(convert.to_torchvision(variables, 'googlenet')) == list(manifest)


@pytest.mark.parametrize('name, kwargs, suffix', [
    ('alexnet', {}, '.npz'), ('vgg11_bn', {}, '.safetensors'),
    ('googlenet', {'aux_logits': True}, '.safetensors'), ('resnet18', {}, '.npz'),
    ('resnet50', {}, '.safetensors'), ('densenet121', {}, '.npz')])
def test_zoo_to_torchvision_and_back_is_bit_exact(name, kwargs, suffix, tmp_path):
  variables = _random_variables(name, num_classes=10, **kwargs)
  path = str(tmp_path / f'{name}{suffix}')
  state_dict_files.write(convert.to_torchvision(variables, name), path)
  again, num_classes, again_kwargs = convert.to_zoo(state_dict_files.read(path), name, where=path)
  assert num_classes == 10 and again_kwargs == kwargs
  assert jax.tree.structure(again) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(variables)):
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_flattened_inputs_are_reordered_from_nchw_to_nhwc():
  """AlexNet's first Linear reads torchvision's (C, H, W) flatten; the zoo's the (H, W, C) one:
  the same function of the same maps."""
  state = {k: np.asarray(v) for k, v in _zeros(_manifest('alexnet')).items()}
  weight = np.random.default_rng(0).standard_normal((4096, 256 * 6 * 6)).astype(np.float32)
  state['classifier.1.weight'] = weight
  variables, _, _ = convert.to_zoo(state, 'alexnet')
  maps = np.random.default_rng(1).standard_normal((256, 6, 6)).astype(np.float32)  # C, H, W
  torch_out = weight.astype(np.float64) @ maps.reshape(-1)
  kernel = variables['params']['Dense_0']['kernel'].astype(np.float64)
  zoo_out = maps.transpose(1, 2, 0).reshape(-1) @ kernel
  np.testing.assert_allclose(zoo_out, torch_out, rtol=1e-12, atol=1e-10)


def test_wrapped_and_old_style_keys_are_understood():
  manifest = _manifest('densenet121')
  old = {k.replace('denselayer1.norm1.', 'denselayer1.norm.1.'): v
         for k, v in _zeros(manifest).items()}
  wrapped = {f'module.{k}': v for k, v in old.items()}
  variables, _, _ = convert.to_zoo(wrapped, 'densenet121')
  assert list(convert.to_torchvision(variables, 'densenet121')) == list(manifest)


def test_bad_state_dicts_are_one_line_naming_the_key_and_shapes():
  state = _zeros(_manifest('resnet18'))
  missing = dict(state)
  del missing['layer2.0.downsample.0.weight']
  with pytest.raises(errors.DataError, match=r"needs key\(s\) 'layer2.0.downsample.0.weight'"):
    convert.to_zoo(missing, 'resnet18', where='r.pth')
  extra = {**state, 'layer5.0.conv1.weight': np.zeros((3, 3), np.float32)}
  with pytest.raises(errors.DataError, match=r"'layer5.0.conv1.weight' \(shape \(3, 3\)\) have no "
                                             r"place in resnet18"):
    convert.to_zoo(extra, 'resnet18')
  wrong = {**state, 'layer1.0.conv1.weight': np.zeros((64, 64, 1, 1), np.float32)}
  with pytest.raises(errors.DataError, match=r'layer1.0.conv1.weight has shape \(64, 64, 1, 1\); '
                                             r'resnet18 with 1000 classes needs \(64, 64, 3, 3\)'):
    convert.to_zoo(wrong, 'resnet18')
  with pytest.raises(errors.DataError, match=r"resnet34 needs key\(s\) 'layer1.2.conv1.weight', "
                                             r"'layer1.2.bn1.weight', 'layer1.2.bn1.bias' and 77 "
                                             r"more, missing there \(122 keys in all\)"):
    convert.to_zoo(state, 'resnet34')  # another model's weights
  with pytest.raises(errors.DataError, match=r"'layer1.2.conv1.weight', .* have no place in "
                                             r"resnet18 \(torchvision's resnet18\)"):
    convert.to_zoo(_zeros(_manifest('resnet34')), 'resnet18')
  integers = {**state, 'fc.bias': np.zeros((1000,), np.int32)}
  with pytest.raises(errors.DataError, match='fc.bias holds int32') as caught:
    convert.to_zoo(integers, 'resnet18')
  assert '\n' not in str(caught.value)


@pytest.mark.parametrize('name, match', [
    ('resnet99', 'did you mean'), ('zfnet', "no torchvision counterpart; models that have one: "
                                            "alexnet, densenet121"),
    ('resnet20', 'no torchvision counterpart')])
def test_models_without_a_counterpart_are_named_with_the_valid_ones(name, match):
  with pytest.raises(errors.ConfigError, match=match):
    convert.to_zoo({}, name)


def test_unreadable_files_are_one_line(tmp_path):
  with pytest.raises(errors.NotFoundError, match='not found'):
    state_dict_files.read(str(tmp_path / 'missing.safetensors'))
  with pytest.raises(errors.ConfigError, match=r"unknown state dict format '.h5'; valid choices"):
    state_dict_files.read(str(tmp_path / 'weights.h5'))
  path = tmp_path / 'w.safetensors'
  state_dict_files.write({'fc.weight': np.ones((4, 3), np.float32)}, str(path))
  data = path.read_bytes()
  (tmp_path / 'cut.safetensors').write_bytes(data[:-8])
  with pytest.raises(errors.DataError, match="tensor 'fc.weight' lies beyond the end of the file"):
    state_dict_files.read(str(tmp_path / 'cut.safetensors'))
  (tmp_path / 'junk.safetensors').write_bytes(b'\x05\x00\x00\x00\x00\x00\x00\x00{nope')
  with pytest.raises(errors.DataError, match='not a readable .safetensors file'):
    state_dict_files.read(str(tmp_path / 'junk.safetensors'))
  (tmp_path / 'junk.npz').write_bytes(b'not a zip')
  with pytest.raises(errors.DataError, match='cannot read it as an npz state dict'):
    state_dict_files.read(str(tmp_path / 'junk.npz'))
  (tmp_path / 'junk.pth').write_bytes(b'not a pickle')
  try:
    import torch  # noqa: F401  pylint: disable=unused-import,g-import-not-at-top
    expected = (errors.DataError, 'cannot read it as a PyTorch state dict')
  except ImportError:
    expected = (errors.ConfigError, r'needs PyTorch, not installed here: `pip install torch')
  with pytest.raises(expected[0], match=expected[1]):
    state_dict_files.read(str(tmp_path / 'junk.pth'))


def test_safetensors_dtypes_read_as_float32(tmp_path):
  path = str(tmp_path / 'w.safetensors')
  values = np.array([1.5, -2.25, 3.0e-3], np.float32)
  state_dict_files.write({'a': values.astype(np.float16), 'b': values.astype(np.float64),
               'n': np.array(7, np.int64)}, path)
  state = state_dict_files.read(path)
  assert state['a'].dtype == state['b'].dtype == np.float32 and state['n'] == 7
  np.testing.assert_allclose(state['a'], values, rtol=1e-3)
  # bfloat16, the top 16 bits of float32, by hand: header, then the bytes.
  header = json.dumps({'c': {'dtype': 'BF16', 'shape': [3], 'data_offsets': [0, 6]}}).encode()
  raw = (values.view(np.uint32) >> 16).astype('<u2').tobytes()
  (tmp_path / 'bf16.safetensors').write_bytes(len(header).to_bytes(8, 'little') + header + raw)
  np.testing.assert_allclose(state_dict_files.read(str(tmp_path / 'bf16.safetensors'))['c'], values, rtol=1e-2)


def test_imagenet_class_names_and_crop():
  names = imagenet.class_names()
  assert len(names) == len(set(names)) == 1000
  assert (names[0], names[1], names[999]) == ('tench', 'goldfish', 'toilet tissue')
  photo = np.random.default_rng(0).integers(0, 256, (300, 400, 3), np.uint8)
  assert imagenet.resize_and_crop(photo).shape == (224, 224, 3)
  assert imagenet.resize_and_crop(photo[..., :1]).shape == (224, 224, 3)
  assert imagenet.resize_and_crop(photo[:, :200]).shape == (224, 224, 3)
  assert imagenet.statistics('googlenet') == (imagenet.HALF, imagenet.HALF)
  assert imagenet.statistics('resnet50') == (imagenet.MEAN, imagenet.STD)


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """ResNet-18 weights as a torchvision .safetensors file, converted into a run directory."""
  tmp = tmp_path_factory.mktemp('converted')
  variables = _random_variables('resnet18', seed=3)
  source = str(tmp / 'resnet18.safetensors')
  state_dict_files.write(convert.to_torchvision(variables, 'resnet18'), source)
  workdir = str(tmp / 'resnet18_tv')
  done = runs.convert('resnet18', source, workdir)
  photo = str(tmp / 'photo.jpg')
  Image.fromarray(np.random.default_rng(1).integers(0, 256, (240, 320, 3), np.uint8)).save(photo)
  return workdir, variables, photo, done


def test_a_converted_run_holds_what_inference_reads(converted):
  workdir, variables, _, done = converted
  assert done['tensors'] == len(_manifest('resnet18')) and done['params'] == 11_689_512
  for name in ('config.json', 'converted.json', 'dataset.json', 'checkpoints'):
    assert os.path.exists(os.path.join(workdir, name)), name
  run = trained_run.load(workdir)
  assert run.config.model == 'resnet18' and run.config.num_classes == 1000 and run.step == 0
  for a, b in zip(jax.tree.leaves(run.variables), jax.tree.leaves(variables)):
    assert np.array_equal(np.asarray(a), b)
  with pytest.raises(errors.WorkdirError, match='already holds a run'):
    runs.convert('resnet18', os.path.join(os.path.dirname(workdir), 'resnet18.safetensors'),
                 workdir)


def test_predict_on_a_converted_run_uses_imagenet_preprocessing_and_names(converted):
  workdir, variables, photo, _ = converted
  ranking = predict.predict(workdir, photo, top_k=None)
  assert len(ranking) == 1000 and abs(sum(p for *_, p in ranking) - 1) < 1e-4
  assert {name for _, name, _ in ranking} == set(imagenet.class_names())
  # The same as the model on torchvision's preprocessing, computed here by hand.
  image = np.asarray(Image.open(photo).convert('RGB').resize((341, 256), Image.Resampling.BILINEAR))
  crop = image[16:240, 58:282].astype(np.float32) / 255
  x = (crop - np.float32(imagenet.MEAN)) / np.float32(imagenet.STD)
  logits = models.get('resnet18').apply(variables, jnp.asarray(x[None]), train=False)
  want = np.asarray(jax.nn.softmax(logits[0]))
  got = np.array([p for _, _, p in sorted(ranking)])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_a_converted_run_from_before_its_data_record_predicts_the_same(converted, tmp_path,
                                                                      caplog):
  """A converted run as e286f77 wrote it (the same files, but no dataset.json) falls back to
  ImageNet's preprocessing and names, saying so once, and ranks a photo as a run with the record."""
  workdir, _, photo, _ = converted
  old = tmp_path / 'old'
  shutil.copytree(workdir, old)
  os.remove(old / run_files.DATASET)
  with caplog.at_level(logging.INFO):
    ranking = predict.predict(str(old), photo, top_k=None)
  assert [r.getMessage() for r in caplog.records if 'holds no dataset.json' in r.getMessage()] \
      == [f'{old} holds no dataset.json (saved by an earlier version): its normalisation and '
          f'classes are recomputed from its dataset {runs.IMAGENET}, as they were then']
  assert ranking == predict.predict(workdir, photo, top_k=None)


def test_visualize_takes_a_converted_run(converted, tmp_path):
  workdir, _, photo, _ = converted
  text, written = visualize.make('feature-maps', str(tmp_path), image=photo, workdir=workdir)
  assert [os.path.basename(p) for p, _ in written] == ['resnet18_feature_maps.png',
                                                       'resnet18_filters.png']
  assert 'conv1' in text and all(size > 0 for _, size in written)
  with pytest.raises(errors.ConfigError, match='no test images; give --image=FILE'):
    visualize.make('feature-maps', str(tmp_path), workdir=workdir)


def test_fine_tuning_starts_from_a_converted_run_with_a_new_head(converted, tmp_path):
  workdir, variables, _, _ = converted
  config = finetune.get_config('resnet18,smoke')
  config.init_from = workdir
  config.learning_rate = 1e-9  # the trained weights stay where they started
  results = loop.train_and_evaluate(config, str(tmp_path / 'digits'))
  assert results['num_classes'] == 10 and results['steps'] == 3
  run = trained_run.load(str(tmp_path / 'digits'))
  params = run.variables['params']
  assert params['Dense_0']['kernel'].shape == (512, 10)  # a new head for digits' classes
  np.testing.assert_allclose(params['BasicBlock_3']['Conv_1']['kernel'],
                             variables['params']['BasicBlock_3']['Conv_1']['kernel'], atol=1e-6)
  np.testing.assert_allclose(params['Conv_0']['kernel'], variables['params']['Conv_0']['kernel'],
                             atol=1e-6)


def test_init_from_is_checked_before_anything_is_written(converted, tmp_path):
  workdir, _, _, _ = converted
  config = finetune.get_config('resnet34,smoke')
  config.init_from = workdir
  with pytest.raises(errors.ConfigError, match=r"is a run of 'resnet18', not of "
                                               r"config.model='resnet34'"):
    loop.train_and_evaluate(config, str(tmp_path / 'x'))
  config.init_from = str(tmp_path / 'nothing')
  with pytest.raises(errors.ConfigError, match='not found; give a run directory or a state dict'):
    loop.train_and_evaluate(config, str(tmp_path / 'x'))
  assert not os.path.exists(tmp_path / 'x')


def test_export_writes_what_convert_reads(converted, tmp_path):
  workdir, variables, _, _ = converted
  path = str(tmp_path / 'out.npz')
  done = runs.export(workdir, path)
  assert done['tensors'] == len(_manifest('resnet18'))
  again, _, _ = convert.to_zoo(state_dict_files.read(path), 'resnet18')
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(variables)):
    assert np.array_equal(a, b)


def test_the_convert_launcher(converted, tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  source = os.path.join(os.path.dirname(converted[0]), 'resnet18.safetensors')
  launch = lambda *flags: subprocess.run([sys.executable, '-m', 'experiments.convert', *flags],
                                         cwd=root, capture_output=True, text=True, check=False)
  done = launch('--model=resnet18', f'--torchvision={source}', f'--workdir={tmp_path / "tv"}')
  assert done.returncode == 0, done.stderr
  assert '122 tensors -> resnet18 (11,689,512 parameters, 1000 classes)' in done.stdout
  bad = launch('--model=zfnet', f'--torchvision={source}', f'--workdir={tmp_path / "zf"}')
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith(
      "error: model 'zfnet' has no torchvision counterpart; models that have one: alexnet")
  assert not os.path.exists(tmp_path / 'zf')


def test_feature_map_figures_of_deep_models_keep_twelve_layers_of_maps():
  from cnn_zoo.visualize import activations  # pylint: disable=g-import-not-at-top
  layer = lambda name, kind: activations.Layer(name, kind, np.zeros((2, 2, 1)))
  layers = ([layer('input', 'input')] + [layer(f'conv{i}', 'conv') for i in range(1, 54)] +
            [layer('pool1', 'pool'), layer('output', 'output')])
  kept = activations.thinned(activations.Activations(layers, None)).layers
  names = [x.name for x in kept]
  assert len(names) == 14 and names[:2] == ['input', 'conv1'] and names[-2:] == ['pool1', 'output']
  few = activations.Activations(layers[:5], None)
  assert activations.thinned(few) is few


def test_files_written_by_the_safetensors_package_are_read(tmp_path):
  safetensors_numpy = pytest.importorskip('safetensors.numpy')
  values = {'a.weight': np.arange(12, dtype=np.float32).reshape(3, 4),
            'a.num_batches_tracked': np.array(3, np.int64)}
  safetensors_numpy.save_file(values, str(tmp_path / 'w.safetensors'))
  read = state_dict_files.read(str(tmp_path / 'w.safetensors'))
  assert set(read) == set(values)
  assert all(np.array_equal(read[k], v) for k, v in values.items())
  state_dict_files.write(values, str(tmp_path / 'ours.safetensors'))
  theirs = safetensors_numpy.load_file(str(tmp_path / 'ours.safetensors'))
  # (its numpy loader gives a 0-d tensor the shape (1,))
  assert all(np.array_equal(theirs[k].reshape(v.shape), v) for k, v in values.items())
