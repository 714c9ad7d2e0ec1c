"""Untrusted inputs (issue 30, "Trust, round three", its input half): image files decoded only in
the documented formats and bounded before decoding, one decoder for training, packs and
prediction; names escaped wherever they are shown; `pack` that never writes over its input or an
existing file unasked; bounds checked against the data; state dict files validated."""

import csv
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from cnn_zoo import errors, escape, models, predict, report
from cnn_zoo.data import digits, images, pack, preprocess, run_data, sources
from cnn_zoo.pretrained import state_dict_files
from cnn_zoo.train import build, config as config_lib, trained_run, loop
from cnn_zoo.visualize import explorer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, 'tests', 'data', 'explorer_harness.js')
EPS = (b'%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n'
       b'0 0 moveto 10 10 lineto stroke\nshowpage\n')


def _one_line(e: pytest.ExceptionInfo, *needles: str) -> str:
  text = str(e.value)
  assert '\n' not in text, text
  for needle in needles:
    assert needle in text, (needle, text)
  return text


def _png(path, array, **kwargs):
  Image.fromarray(array).save(path, **kwargs)
  return str(path)


def _png_header(width: int, height: int) -> bytes:
  """A PNG that declares width x height and holds no pixels: a few dozen bytes."""
  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
  ihdr = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IEND', b'')


def _folder(root, files_by_class: dict, test=None):
  """ROOT/train/<class>/<name> and ROOT/test/<class>/<name> from {class: {name: bytes}}."""
  for split, by_class in (('train', files_by_class), ('test', test or files_by_class)):
    for name, content in by_class.items():
      os.makedirs(root / split / name, exist_ok=True)
      for file_name, data in content.items():
        (root / split / name / file_name).write_bytes(data)
  return f'folder:{root}'


def _png_bytes(array) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


GREY = np.full((8, 8), 100, np.uint8)


# ---- 1. Decode only what is documented ----

@pytest.fixture
def fake_gs(tmp_path, monkeypatch):
  """A `gs` first on PATH that records being run; Pillow's cached lookup of it forgotten."""
  bin_dir, marker = tmp_path / 'bin', tmp_path / 'gs_was_run'
  bin_dir.mkdir()
  (bin_dir / 'gs').write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 1\n')
  (bin_dir / 'gs').chmod(0o755)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  monkeypatch.setattr(EpsImagePlugin, 'gs_binary', None)
  return marker


def test_a_postscript_file_named_png_never_reaches_ghostscript(tmp_path, fake_gs):
  evil = tmp_path / 'photo.png'
  evil.write_bytes(EPS)
  with pytest.raises(errors.DataError) as e:  # prediction
    predict.read_image(str(evil))
  _one_line(e, str(evil), 'not a PNG, JPEG, GIF, BMP or WEBP file')
  dataset = _folder(tmp_path / 'data', {'a': {'0.png': _png_bytes(GREY)},
                                        'b': {'0.png': _png_bytes(GREY), 'evil.png': EPS}})
  with pytest.raises(errors.DataError) as e:  # training's folder reader
    sources.load(dataset, image_size=8)
  _one_line(e, 'evil.png', 'not a PNG or JPEG file')
  packed = tmp_path / 'evil.packed.npz'  # a pack whose first image is PostScript
  np.savez(packed, train_bytes=np.frombuffer(EPS, np.uint8), train_offsets=np.array([0, len(EPS)]),
           train_labels=np.array([0]), test_bytes=np.frombuffer(EPS, np.uint8),
           test_offsets=np.array([0, len(EPS)]), test_labels=np.array([0]),
           shape=np.array([10, 10, 1]))
  with pytest.raises(errors.DataError) as e:
    pack.unpack(str(packed))
  _one_line(e, str(packed), 'train #0', 'not a PNG or JPEG file')
  assert not fake_gs.exists(), 'Ghostscript was run on ' + fake_gs.read_text()


def test_formats_beyond_the_documented_ones_and_damaged_files_are_one_line(tmp_path):
  tiff, bmp = tmp_path / 'scan.png', tmp_path / 'picture.bmp'
  Image.fromarray(GREY).save(tiff, format='TIFF')  # a TIFF named .png
  Image.fromarray(GREY).save(bmp, format='BMP')
  with pytest.raises(errors.DataError) as e:
    predict.read_image(str(tiff))
  _one_line(e, str(tiff), 'not a PNG, JPEG, GIF, BMP or WEBP file')
  assert predict.read_image(str(bmp)).shape == (8, 8, 1)  # BMP is documented for prediction
  cut = tmp_path / 'cut.png'
  cut.write_bytes(_png_bytes(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))[:-30])
  with pytest.raises(errors.DataError) as e:
    predict.read_image(str(cut))
  _one_line(e, str(cut), 'damaged PNG')
  for name, data in (('scan.png', tiff.read_bytes()), ('picture.png', bmp.read_bytes()),
                     ('cut.png', cut.read_bytes())):  # datasets read PNG and JPEG only
    root = tmp_path / f'data_{name}'
    dataset = _folder(root, {'a': {'0.png': _png_bytes(GREY)}, 'b': {name: data}})
    with pytest.raises(errors.DataError) as e:
      sources.load(dataset, image_size=8)
    _one_line(e, os.path.join(str(root), 'train', 'b', name))


def test_16_bit_images_read_the_same_in_training_and_prediction(tmp_path):
  ramp = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257)  # 0..65535
  deep = _png(tmp_path / 'deep.png', ramp)
  assert Image.open(deep).mode.startswith('I')  # a 16-bit grey PNG
  want = (ramp >> 8).astype(np.uint8)[..., None]  # the high byte, as Pillow reads 16-bit colour
  np.testing.assert_array_equal(predict.read_image(deep), want)
  data = _folder(tmp_path / 'data', {'a': {'0.png': open(deep, 'rb').read()},
                                     'b': {'0.png': _png_bytes(np.zeros((16, 16), np.uint8))}})
  ds = sources.load(data, image_size=16)
  np.testing.assert_array_equal(ds.train.images[0], want)


def test_declared_sizes_beyond_the_bounds_are_refused_before_decoding(tmp_path):
  huge, bomb = tmp_path / 'huge.png', tmp_path / 'bomb.png'
  huge.write_bytes(_png_header(8000, 8000))  # 64 megapixels in 45 bytes
  bomb.write_bytes(_png_header(100_000, 100_000))  # beyond Pillow's own limit too
  strip = _png(tmp_path / 'strip.png', np.zeros((1, 4000), np.uint8), optimize=True)
  assert os.path.getsize(strip) < 200
  for path, needle in ((huge, 'megapixels'), (bomb, 'megapixels'), (strip, 'aspect')):
    with pytest.raises(errors.DataError) as e:
      predict.read_image(str(path))
    _one_line(e, str(path), needle)
  dataset = _folder(tmp_path / 'data', {'a': {'0.png': _png_bytes(GREY)},
                                        'b': {'strip.png': open(strip, 'rb').read()}})
  with pytest.raises(errors.DataError) as e:
    sources.load(dataset, image_size=8)
  _one_line(e, 'strip.png', f'more than {images.MAX_ASPECT} times')


_MEASURE = """
import sys
from cnn_zoo.data import sources

def peak_mb():  # this process's own high-water mark (ru_maxrss would include its parent's)
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmHWM:')) // 1024

before = peak_mb()
ds = sources.load(sys.argv[1], image_size=32)
print(ds.train.images.shape, peak_mb() - before)
"""


def test_a_folder_of_photos_is_reduced_as_it_is_decoded(tmp_path):
  """Six 3000x3000 JPEGs (27 MB each decoded) for 32x32 examples: decoded at 1/8 scale, one at a
  time, the peak memory grows by a few MB, not by the photos' full size."""
  if not os.path.exists('/proc/self/status'):
    pytest.skip('the peak memory is read from /proc/self/status (Linux)')
  y, x = np.mgrid[0:3000, 0:3000]
  photo = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(photo).save(buffer, format='JPEG', quality=50)
  jpeg = buffer.getvalue()
  dataset = _folder(tmp_path, {c: {f'{i}.jpg': jpeg for i in range(3)} for c in 'ab'},
                    test={c: {'0.jpg': jpeg} for c in 'ab'})
  out = subprocess.run([sys.executable, '-c', _MEASURE, dataset], capture_output=True, text=True,
                       cwd=ROOT, check=True).stdout.split()
  assert out[:4] == ['(6,', '32,', '32,', '3)'], out
  assert int(out[-1]) < 40, f'the peak memory grew by {out[-1]} MB'


# ---- 2. Escape what is printed ----

HOSTILE = ['<img src=x onerror=alert(1)>', '</script><b>bold', '<!--', 'a&amp;b', 'line\u2028sep',
           '=HYPERLINK("http://x")', 'cat|dog', '\x1b[31mred\x1b[0m']


def _untrained_lenet_run() -> trained_run.TrainedRun:
  """A LeNet-5 at its initialisation on digits: what the explorer page needs, without training."""
  import jax  # pylint: disable=g-import-not-at-top
  model = models.get('lenet5', num_classes=10)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                          jax.ShapeDtypeStruct((1, 32, 32, 1), np.float32))
  rng = np.random.default_rng(0)  # random weights: tracing the shapes compiles nothing
  variables = jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(np.float32), shapes)
  (x_train, y_train), (x_test, y_test) = digits.arrays()
  dataset = sources.Dataset('digits', sources.Split(x_train, y_train),
                            sources.Split(x_test, y_test), 10)
  data = run_data.RunData('digits', (8, 8, 1), (32, 32, 1), 'auto', 'dataset', (0.5,), (0.25,),
                          tuple(str(i) for i in range(10)))
  return trained_run.TrainedRun(config_lib.defaults(), model, dict(variables),
                              preprocess.Preprocess((32, 32, 1), (0.5,), (0.25,)), data, 0,
                              lambda: dataset)


def test_the_explorer_puts_class_names_in_as_text_and_escapes_its_json(tmp_path, monkeypatch):
  names = HOSTILE + ['zebra_9', 'yak_8']
  monkeypatch.setattr(predict, 'class_names', lambda run: names)  # as folder names would give
  html = explorer.page(_untrained_lenet_run())
  opening = '<script id="explorer-data" type="application/json">'
  start = html.index(opening) + len(opening)
  blob = html[start:html.index('</script>', start)]
  for c in '<>&\u2028\u2029':
    assert c not in blob, repr(c)
  assert json.loads(blob)['classes'] == names
  if not shutil.which('node'):
    pytest.skip('node is not installed: the page\'s script is not run')
  (tmp_path / 'explorer.html').write_text(html, encoding='utf-8')
  seen = json.loads(subprocess.run(['node', HARNESS, str(tmp_path / 'explorer.html')],
                                   capture_output=True, text=True, check=True).stdout)
  assert seen['classes'] == names
  hovers = [h for h in seen['html'] if h.startswith('<b>output</b>')]
  assert len(hovers) == len(names)  # every output node hovered
  for name in names:
    assert not any(name in h for h in seen['html']), f'{name!r} went into innerHTML'
    assert name in seen['text'], f'{name!r} was not shown as text'


def test_comparison_csv_neutralises_formulas_and_keeps_numbers_numeric(tmp_path):
  for i, (model, name) in enumerate((('@SUM(A1:A9)', '=HYPERLINK("x")'),
                                     ('cat|dog\nrow', '-2+3'))):
    run = tmp_path / name
    run.mkdir()
    (run / 'config.json').write_text(json.dumps({'model': model, 'seed': -3, 'lr': i}))
    (run / 'results.json').write_text(json.dumps(
        {'model': model, 'dataset': '+digits', 'seed': -3, 'params': 10, 'epochs': -1.5,
         'test_accuracy': 0.5, 'train_time_s': -2.0}))
  report.write(str(tmp_path))
  with open(tmp_path / report.CSV, newline='', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  by_model = {row['model']: row for row in rows}
  assert set(by_model) == {"'@SUM(A1:A9)", 'cat|dog\nrow'}
  first, second = by_model["'@SUM(A1:A9)"], by_model['cat|dog\nrow']
  assert first['runs'] == "'=HYPERLINK(\"x\")" and first['dataset'] == "'+digits"
  assert second['runs'] == "'-2+3"  # text that starts like a formula
  for row in rows:  # numbers stay numbers, negative ones too
    assert (row['seeds'], row['epochs'], row['train_time_s_mean'], row['params']) == \
        ('-3', '-1.5', '-2.0', '10')
  table = [line for line in (tmp_path / report.MARKDOWN).read_text().splitlines()
           if line.startswith('| ')]
  assert len(table) == 3  # the header and two rows: no cell's newline split a row
  columns = {len(line.replace('\\|', '').split('|')) for line in table}
  assert len(columns) == 1, table  # no cell's '|' added a column
  assert any('cat\\|dog\\nrow' in line for line in table)


def test_escapes_of_each_kind():
  assert escape.terminal('\x1b[31mred\x1b[0m\r\u202e!') == '\\x1b[31mred\\x1b[0m\\r\\u202e!'
  assert escape.terminal('Köln 東京 a b') == 'Köln 東京 a b'  # printable text unchanged
  assert escape.markdown('a|b\\c\nd') == 'a\\|b\\\\c\\nd'
  assert [escape.csv_cell(v) for v in ('=1+1', '-x', '@a', '\tx', '\rx', '-3', '+1.5e3', 'plain',
                                       -3, 2.5)] == \
      ["'=1+1", "'-x", "'@a", "'\tx", "'\rx", '-3', '+1.5e3', 'plain', -3, 2.5]
  text = escape.json_for_html({'k': '</script><!-- & \u2028\u2029'})
  assert not set(text) & set('<>&\u2028\u2029') and json.loads(text)['k'].startswith('</script>')


def test_predict_shows_control_characters_of_class_names_escaped():
  ranking = [(0, '\x1b[2J\x1b[31mcat', 0.75), (1, 'dog\rcat', 0.25), (2, 'ok', 0.0)]
  text = predict.format_ranking(ranking, top_k=2)
  assert '\x1b' not in text and '\r' not in text
  assert '\\x1b[2J\\x1b[31mcat' in text and 'dog\\rcat' in text
  assert len(text.splitlines()) == 3  # two classes and the rest


# ---- 3. pack writes only where it was asked to, whole ----

def _tiny_npz(path, value=7):
  x = np.full((4, 8, 8, 1), value, np.uint8)
  np.savez(path, x_train=x, y_train=np.arange(4) % 2, x_test=x[:2], y_test=np.arange(2))
  return str(path)


def test_pack_refuses_its_input_and_existing_files_and_writes_whole(tmp_path, monkeypatch):
  npz = _tiny_npz(tmp_path / 'd.npz')
  original = open(npz, 'rb').read()
  os.symlink(npz, tmp_path / 'alias.npz')
  for out in (npz, os.path.join(str(tmp_path), '.', 'd.npz'), str(tmp_path / 'alias.npz')):
    with pytest.raises(errors.ConfigError) as e:
      pack.pack(npz, out, overwrite=True)
    _one_line(e, 'the input file itself')
  packed = str(tmp_path / 'd.packed.npz')
  pack.pack(npz, packed)
  with pytest.raises(errors.ConfigError) as e:
    pack.pack(npz, packed)
  _one_line(e, packed, 'exists', '--overwrite')
  with pytest.raises(errors.ConfigError) as e:
    pack.unpack_to_npz(packed, npz)  # --unpack over an existing npz
  _one_line(e, npz, 'exists', '--overwrite')
  with pytest.raises(errors.ConfigError) as e:
    pack.unpack_to_npz(packed, packed, overwrite=True)
  _one_line(e, 'the input file itself')
  assert open(npz, 'rb').read() == original
  pack.unpack_to_npz(packed, npz, overwrite=True)  # asked for: replaced
  assert np.load(npz)['x_train'].shape == (4, 8, 8, 1)
  # A write that fails half-way (a full disk) leaves the existing file as it was.
  before = open(packed, 'rb').read()

  def half_then_full(f, **arrays):
    f.write(b'PK\x03\x04 half a zip')
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(np, 'savez', half_then_full)
  with pytest.raises(errors.StorageError) as e:
    pack.pack(npz, packed, overwrite=True)
  _one_line(e, packed, 'No space left on device')
  assert open(packed, 'rb').read() == before
  assert sorted(os.listdir(tmp_path)) == ['alias.npz', 'd.npz', 'd.packed.npz']  # no .tmp left


def test_the_pack_launcher_refuses_to_replace_its_input_in_one_line(tmp_path):
  npz = _tiny_npz(tmp_path / 'd.npz')
  original = open(npz, 'rb').read()
  done = subprocess.run([sys.executable, '-m', 'experiments.pack', f'--npz={npz}',
                         f'--packed={npz}'], cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 2, done.stderr
  assert done.stderr.strip().count('\n') == 0 and 'the input file itself' in done.stderr
  assert open(npz, 'rb').read() == original


# ---- 4. Bounds checked against the data, before anything is compiled or written ----

def _config(**fields):
  config = config_lib.defaults()
  config.update(dict(model='lenet5', dataset='digits', num_train_steps=2, batch_size=8), **fields)
  return config


def test_eval_batch_size_and_crop_padding_are_bounded_by_the_data():
  """An eval batch beyond the test split would only be padding: the plan's is at most the split."""
  (x_train, y_train), (x_test, y_test) = digits.arrays()
  data = sources.Dataset('digits', sources.Split(x_train, y_train), sources.Split(x_test, y_test),
                         10)
  for asked, used in ((len(x_test) - 10, len(x_test) - 10), (10**9, len(x_test)), (0, 8)):
    assert build.make_plan(_config(eval_batch_size=asked), data).eval_batch_size == used, asked
  config_lib.validate(_config(augment='crop', crop_padding=31))
  config_lib.validate(_config(augment='none', crop_padding=32))  # no crop: the padding is unused
  for fields in (dict(augment='crop', crop_padding=32), dict(augment='crop_flip', crop_padding=40),
                 dict(augment='crop', image_size=16, crop_padding=16)):
    with pytest.raises(errors.ConfigError) as e:
      config_lib.validate(_config(**fields))
    _one_line(e, f'crop_padding={fields["crop_padding"]}', 'smaller than')


def test_fewer_than_two_classes_are_refused_before_anything_is_written(tmp_path):
  x = np.zeros((16, 8, 8, 1), np.uint8)
  npz = tmp_path / 'one.npz'
  np.savez(npz, x_train=x, y_train=np.zeros(16, np.int64), x_test=x[:8], y_test=np.zeros(8, np.int64))
  folder = _folder(tmp_path / 'one_folder', {'only': {f'{i}.png': _png_bytes(GREY)
                                                      for i in range(16)}})
  for dataset in (f'npz:{npz}', folder):
    workdir = tmp_path / f'run_{len(dataset)}'
    with pytest.raises(errors.DataError) as e:
      loop.train_and_evaluate(_config(dataset=dataset), str(workdir))
    _one_line(e, '1 class', 'at least 2')
    assert not workdir.exists()
  with pytest.raises(errors.ConfigError) as e:
    config_lib.validate(_config(num_classes=1))
  _one_line(e, 'num_classes=1', 'at least 2')


# ---- 5. State dict files: headers and values checked, one line naming the tensor ----

def _safetensors(path, header: dict, data: bytes) -> str:
  text = json.dumps(header).encode()
  path.write_bytes(struct.pack('<Q', len(text)) + text + data)
  return str(path)


MALFORMED = {  # name -> (header, data, what the error names)
    'negative shape': ({'w': {'dtype': 'F32', 'shape': [-2, -2], 'data_offsets': [0, 16]}},
                       16, 'shape [-2, -2]'),
    'float shape': ({'w': {'dtype': 'F32', 'shape': [2.0], 'data_offsets': [0, 8]}}, 8,
                    'shape [2.0]'),
    'bool shape': ({'w': {'dtype': 'F32', 'shape': [True], 'data_offsets': [0, 4]}}, 4,
                   'shape [True]'),
    'huge shape': ({'w': {'dtype': 'F32', 'shape': [2**40, 2**40], 'data_offsets': [0, 0]}}, 0,
                   "'w' has 0 bytes"),
    'offsets not a multiple of the dtype': (
        {'w': {'dtype': 'F32', 'shape': [3], 'data_offsets': [0, 10]}}, 12, '10 bytes'),
    'offsets of strings': ({'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': ['0', '4']}}, 4,
                           'data_offsets'),
    'overlapping tensors': ({'a': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]},
                             'b': {'dtype': 'F32', 'shape': [2], 'data_offsets': [4, 12]}}, 12,
                            'overlap'),
    'a dtype that is not a name': ({'w': {'dtype': ['F32'], 'shape': [1],
                                          'data_offsets': [0, 4]}}, 4, "dtype ['F32']"),
    'an entry that is not an object': ({'w': [1, 2]}, 4, "'w' has no dtype"),
}


def test_malformed_safetensors_headers_are_one_line_naming_the_tensor(tmp_path):
  for i, (case, (header, size, needle)) in enumerate(MALFORMED.items()):
    path = _safetensors(tmp_path / f'{i}.safetensors', header, b'\0' * size)
    with pytest.raises(errors.DataError) as e:
      state_dict_files.read(path)
    assert '\n' not in str(e.value) and needle in str(e.value), (case, str(e.value))
  text = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {}}'
  path = tmp_path / 'twice.safetensors'
  path.write_bytes(struct.pack('<Q', len(text)) + text + b'\0' * 4)
  with pytest.raises(errors.DataError) as e:
    state_dict_files.read(str(path))
  _one_line(e, "'w' appears twice")
  good = _safetensors(tmp_path / 'good.safetensors',
                      {'a': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]},
                       'b': {'dtype': 'I64', 'shape': [], 'data_offsets': [8, 16]},
                       'c': {'dtype': 'F32', 'shape': [0, 3], 'data_offsets': [16, 16]}},
                      np.float32([1, 2]).tobytes() + np.int64(5).tobytes())
  state = state_dict_files.read(good)
  assert state['a'].tolist() == [1, 2] and int(state['b']) == 5 and state['c'].shape == (0, 3)


def test_non_finite_or_non_numeric_weights_are_refused_naming_the_key(tmp_path):
  weights = np.ones((2, 3), np.float32)
  weights[1, 2] = np.nan
  state_dict_files.write({'conv1.weight': weights, 'fc.bias': np.zeros(3, np.float32)},
              str(tmp_path / 'nan.safetensors'))
  np.savez(tmp_path / 'inf.npz', **{'fc.weight': np.float32([1, np.inf, -np.inf])})
  np.savez(tmp_path / 'text.npz', **{'fc.weight': np.array(['1.0', '2.0'])})
  cases = [('nan.safetensors', "'conv1.weight' holds 1 NaN or infinite value(s) of 6"),
           ('inf.npz', "'fc.weight' holds 2 NaN or infinite"),
           ('text.npz', "'fc.weight' holds <U3 values, not numbers")]
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch.save({'bn.running_var': torch.tensor([1.0, float('inf')])}, tmp_path / 'inf.pth')
    cases.append(('inf.pth', "'bn.running_var' holds 1 NaN or infinite"))
  except ImportError:
    pass
  for name, needle in cases:
    with pytest.raises(errors.DataError) as e:
      state_dict_files.read(str(tmp_path / name))
    _one_line(e, str(tmp_path / name), needle)
