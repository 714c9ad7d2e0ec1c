"""The reproduction table: both sides' seeds averaged beside the paper's, unfinished runs apart."""

import json

import pytest

from cnn_zoo import errors, reproduction


def _torch_json(path, seed, error, steps=64_000):
  path.write_text(json.dumps({'model': 'resnet20', 'seed': seed, 'steps': steps,
                              'test_error_pct': error, 'train_img_s': 1000.0 + seed}))
  return str(path)


def _zoo_run(workdir, name, seed, accuracy, complete=True):
  run = workdir / name
  run.mkdir(parents=True)
  (run / 'config.json').write_text(json.dumps({'model': 'resnet20', 'seed': seed}))
  (run / 'results.json').write_text(json.dumps({
      'model': 'resnet20', 'dataset': 'npz:c.npz', 'seed': seed, 'test_accuracy': accuracy,
      'steps': 64_000 if complete else 100, 'complete': complete, 'train_images_per_s': 9.0}))


def test_each_side_is_averaged_over_its_finished_seeds_beside_the_papers_error(tmp_path):
  _zoo_run(tmp_path / 'runs', 'a', 0, 0.9)
  _zoo_run(tmp_path / 'runs', 'b', 1, 0.92)
  _zoo_run(tmp_path / 'runs', 'c', 2, 0.1, complete=False)
  paths = [_torch_json(tmp_path / f't{s}.json', s, e) for s, e in ((0, 8.0), (1, 9.0))]
  text = reproduction.write(str(tmp_path / 'runs'), paths)
  assert text == (tmp_path / 'runs' / 'reproduction.md').read_text()
  rows = {l.split('|')[2].strip(): l for l in text.splitlines() if l.startswith('| resnet20')}
  assert rows['cnn_zoo'] == '| resnet20 | cnn_zoo | 0, 1 | 64,000 | 9.00 ± 1.41 | 8.75 | 9 ± 0 |'
  assert rows['PyTorch'] == '| resnet20 | PyTorch | 0, 1 | 64,000 | 8.50 ± 0.71 | 8.75 | 1,000 ± 1 |'
  assert 'cnn_zoo resnet20 seed 2 (c): stopped at step 100' in text


@pytest.mark.parametrize('content', ['{"model": "resnet20"}', 'not json', '[1, 2]'])
def test_a_file_that_is_not_a_reference_result_is_one_line_naming_it(tmp_path, content):
  (tmp_path / 'runs').mkdir()
  (tmp_path / 'bad.json').write_text(content)
  with pytest.raises(errors.ConfigError, match='bad.json: not a torch_train.py result'):
    reproduction.write(str(tmp_path / 'runs'), [str(tmp_path / 'bad.json')])
  with pytest.raises(errors.NotFoundError, match='PyTorch result not found'):
    reproduction.write(str(tmp_path / 'runs'), [str(tmp_path / 'absent.json')])
  assert not (tmp_path / 'runs' / 'reproduction.md').exists()
