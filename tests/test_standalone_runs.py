"""A run stands alone: training records what inference needs of its data (dataset.json:
normalisation, classes, shapes), so a run moved elsewhere with its dataset deleted predicts the
same, a dataset changed after training changes nothing a reloaded run computes, and a run saved by
the code of e286f77 (before the record) still loads, recomputing it from its dataset as then, and
saying so in one line."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from cnn_zoo import errors, predict, run_files, visualize
from cnn_zoo.data import digits, sources
from cnn_zoo.train import torchvision_weights, trained_run, loop
from configs import default as default_config

LEGACY = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'legacy_e286f77')
FALLBACK = f'holds no {run_files.DATASET} (saved by an earlier version)'


def _write_folder(root, classes: dict, invert: bool = False) -> None:
  """An image folder of 8x8 digits: class folder name -> the digit its images show (30 train and
  10 test images each); `invert`: their negatives, so the mean and std change."""
  (x_train, y_train), (x_test, y_test) = digits.arrays()
  for split, (x, y), count in (('train', (x_train, y_train), 30), ('test', (x_test, y_test), 10)):
    for name, digit in classes.items():
      folder = root / split / name
      folder.mkdir(parents=True)
      for i, image in enumerate(x[y == digit][:count]):
        Image.fromarray(255 - image[..., 0] if invert else image[..., 0]).save(folder / f'{i}.png')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """LeNet-5 trained 3 steps on an image folder of three named classes, and what it computed
  then: the ranking of an outside photo, the probabilities of the test images, its classes."""
  tmp = tmp_path_factory.mktemp('standalone')
  data = tmp / 'pets'
  _write_folder(data, {'cat': 0, 'dog': 1, 'eel': 2})
  config = default_config.get_config('smoke')
  config.dataset = f'folder:{data}'
  config.num_train_steps, config.log_every_steps = 3, 3
  config.batch_size = config.eval_batch_size = 30
  workdir = tmp / 'run'
  loop.train_and_evaluate(config, str(workdir))
  photo = tmp / 'photo.png'
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 20, 3), np.uint8)).save(photo)
  run = trained_run.load(str(workdir))
  images = run.dataset.test.images
  then = {'ranking': predict.predict(str(workdir), str(photo), top_k=None),
          'probabilities': run.probabilities(images), 'classes': predict.class_names(run),
          'mean': run.preprocess.mean, 'std': run.preprocess.std,
          'stats': sources.load(f'folder:{data}', image_size=32).channel_stats()}
  assert then['classes'] == ['cat', 'dog', 'eel']
  return data, workdir, photo, images, then


def test_training_records_what_inference_needs(trained):
  data, workdir, _, _, then = trained
  record = run_files.read_object(run_files.path(str(workdir), run_files.DATASET))
  mean, std = then['stats']
  assert record == {'format': 1, 'dataset': f'folder:{data}', 'image_shape': [32, 32, 1],
                    'input_shape': [32, 32, 1], 'resize_mode': 'auto', 'fit': 'dataset',
                    'mean': [float(mean[0])], 'std': [float(std[0])],
                    'class_names': ['cat', 'dog', 'eel']}
  assert then['mean'] == (float(mean[0]),) and then['std'] == (float(std[0]),)


def test_a_moved_run_predicts_the_same_with_its_dataset_deleted(trained, tmp_path, monkeypatch,
                                                                caplog):
  data, workdir, photo, images, then = trained
  moved = tmp_path / 'another' / 'machine' / 'run'
  shutil.copytree(workdir, moved)
  shutil.rmtree(data, ignore_errors=True)
  monkeypatch.chdir(tmp_path)  # and another working directory: nothing is found relative to it
  with caplog.at_level(logging.INFO):
    assert predict.predict(str(moved), str(photo), top_k=None) == then['ranking']
    run = trained_run.load(str(moved))
    np.testing.assert_array_equal(run.probabilities(images), then['probabilities'])
    # The feature maps of an outside image, and the weights and classes export and init_from take.
    visualize.make('feature-maps', str(tmp_path / 'figures'), image=str(photo), workdir=str(moved))
    model, num_classes, _, _ = torchvision_weights._run_variables(str(moved))  # pylint: disable=protected-access
  assert (model, num_classes) == ('lenet5', 3)
  assert FALLBACK not in caplog.text
  assert not os.path.exists(data)


def test_a_dataset_changed_after_training_changes_nothing_a_reloaded_run_computes(trained):
  data, workdir, photo, images, then = trained
  shutil.rmtree(data, ignore_errors=True)
  # A class more, sorted first ('ant': every label would shift), and other images: other statistics.
  _write_folder(data, {'ant': 3, 'cat': 0, 'dog': 1, 'eel': 2}, invert=True)
  changed = sources.load(f'folder:{data}', image_size=32)
  assert changed.num_classes == 4 and changed.channel_stats()[0][0] != then['mean'][0]
  run = trained_run.load(str(workdir))
  assert predict.class_names(run) == then['classes'] == ['cat', 'dog', 'eel']
  assert (run.preprocess.mean, run.preprocess.std) == (then['mean'], then['std'])
  np.testing.assert_array_equal(run.probabilities(images), then['probabilities'])
  assert predict.predict(str(workdir), str(photo), top_k=None) == then['ranking']


def test_a_damaged_record_is_refused_naming_it(trained, tmp_path):
  _, workdir, _, _, _ = trained
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  record = run_files.read_object(run_files.path(str(copy), run_files.DATASET))
  run_files.write_json(run_files.path(str(copy), run_files.DATASET), {**record, 'mean': 'grey'})
  with pytest.raises(errors.DataError, match=r"dataset.json: mean='grey' is not valid"):
    trained_run.load(str(copy))
  (copy / run_files.DATASET).write_text('{"half')
  with pytest.raises(errors.WorkdirError, match='dataset.json is unreadable'):
    trained_run.load(str(copy))


def test_a_run_saved_by_the_code_of_e286f77_loads_and_predicts_as_it_did(tmp_path, caplog):
  """tests/data/legacy_e286f77: a LeNet-5 run of 3 steps on digits written by e286f77, and the
  probabilities that code computed for the first test images (make_fixture.sh)."""
  workdir = tmp_path / 'run'
  shutil.copytree(os.path.join(LEGACY, 'lenet5_digits'), workdir)
  assert not (workdir / run_files.DATASET).exists()
  with open(os.path.join(LEGACY, 'predictions.json'), encoding='utf-8') as f:
    expected = json.load(f)
  with caplog.at_level(logging.INFO):
    run = trained_run.load(str(workdir))
  said = [r.getMessage() for r in caplog.records if FALLBACK in r.getMessage()]
  assert said == [f'{workdir} {FALLBACK}: its normalisation and classes are recomputed from its '
                  f'dataset digits, as they were then']
  images = sources.load('digits').test.images[:len(expected['probabilities'])]
  np.testing.assert_allclose(run.probabilities(images), expected['probabilities'], rtol=0,
                             atol=1e-6)
  assert predict.class_names(run) == expected['class_names'] and run.step == expected['step']
