"""The compact JPEG pack of a dataset: a round trip within the error it reports."""

import numpy as np
import pytest

from cnn_zoo.data import pack
from cnn_zoo.errors import DataError


def _smooth_images(n, channels, seed=0):
  """Photographs are smooth; white noise is not what JPEG is for."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:32, 0:32] / 31.0
  phase = rng.uniform(0, 2 * np.pi, (n, 1, 1, 1))
  gain = np.linspace(100, 60, channels)  # colour channels that move together, as in photographs
  waves = np.sin(2 * np.pi * (x[None, ..., None] + y[None, ..., None] / 2) + phase)
  return np.round(127.5 + gain * waves).astype(np.uint8)


@pytest.mark.parametrize('channels', [1, 3])
def test_round_trip_within_the_reported_error(tmp_path, channels):
  arrays = {'x_train': _smooth_images(40, channels), 'y_train': np.arange(40, dtype=np.uint8) % 10,
            'x_test': _smooth_images(10, channels, 1), 'y_test': np.arange(10, dtype=np.uint8)}
  np.savez(tmp_path / 'd.npz', **arrays)
  stats = pack.pack(str(tmp_path / 'd.npz'), str(tmp_path / 'd.packed.npz'))
  assert stats['images'] == 50 and stats['quality'] == 75
  pack.unpack_to_npz(str(tmp_path / 'd.packed.npz'), str(tmp_path / 'back.npz'))
  back = np.load(tmp_path / 'back.npz')
  errors = []
  for split in ('train', 'test'):
    assert back[f'x_{split}'].dtype == np.uint8
    assert back[f'x_{split}'].shape == arrays[f'x_{split}'].shape
    np.testing.assert_array_equal(back[f'y_{split}'], arrays[f'y_{split}'])
    errors.append(np.abs(back[f'x_{split}'].astype(int) - arrays[f'x_{split}']))
  error = np.concatenate([e.ravel() for e in errors]).mean()
  assert error == pytest.approx(stats['mean_abs_pixel_error'])
  assert 0 < error < 2.0  # quality 75 on smooth images: about a grey level


def test_a_file_that_is_not_a_pack_is_refused(tmp_path):
  (tmp_path / 'x.npz').write_bytes(b'not a zip')
  with pytest.raises(DataError, match='not a packed dataset'):
    pack.unpack(str(tmp_path / 'x.npz'))
  with pytest.raises(DataError, match='cannot read it as an npz file'):
    pack.pack(str(tmp_path / 'x.npz'), str(tmp_path / 'y.npz'))
  with pytest.raises(DataError, match='quality=100 is out of range'):
    pack.pack(str(tmp_path / 'x.npz'), str(tmp_path / 'y.npz'), quality=100)
