"""conv_impl='auto' measures the candidates once per machine and step, picks the faster for training
and for evaluation separately, caches the choice, and a run records and keeps it."""

import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from cnn_zoo import errors
from cnn_zoo.train import autoconv, build as build_lib, config as config_lib, loop


def _config(model='lenet5', batch=8, conv_impl='auto'):
  config = config_lib.defaults()
  config.model, config.batch_size, config.conv_impl = model, batch, conv_impl
  return config


def _plan(config):
  return build_lib.fixed_plan(config, 10)


class FakeMeasure:
  """Times as given, and counts the calls."""

  def __init__(self, train, eval_):
    self.times = {'train': train, 'eval': eval_}
    self.calls = []

  def __call__(self, config, plan, kinds):
    self.calls.append(list(kinds))
    return {kind: self.times[kind] for kind in kinds}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
  """A cache of the test's own, and measuring on (the suite keeps the fixed rule elsewhere)."""
  monkeypatch.setenv('CNN_ZOO_CACHE_DIR', str(tmp_path / 'cache'))
  monkeypatch.setenv('CNN_ZOO_CONV_AUTO', 'measure')
  return tmp_path / 'cache'


def test_the_faster_implementation_wins_for_each_step_separately(cache_dir):
  config = _config()
  fake = FakeMeasure({'xla': 1.0, 'im2col': 2.0}, {'xla': 3.0, 'im2col': 1.0})
  assert autoconv.choose(config, _plan(config), fake) == autoconv.Choice('xla', 'im2col',
                                                                          'measured')
  # The other way round, on another batch size (its own cache entry).
  config = _config(batch=16)
  fake = FakeMeasure({'xla': 2.0, 'im2col': 1.0}, {'xla': 1.0, 'im2col': 3.0})
  assert autoconv.choose(config, _plan(config), fake).impls == ('im2col', 'xla')


def test_the_second_call_reads_the_cache_without_measuring(cache_dir):
  config = _config()
  fake = FakeMeasure({'xla': 1.0, 'im2col': 2.0}, {'xla': 1.0, 'im2col': 2.0})
  first = autoconv.choose(config, _plan(config), fake)
  again = autoconv.choose(config, _plan(config), fake)
  assert fake.calls == [['train', 'eval']]
  assert again == autoconv.Choice(first.train, first.eval, 'cache')
  entries = json.loads((cache_dir / 'conv_impl.json').read_text())
  key = json.loads(next(iter(entries)))
  assert key['model'] == 'lenet5' and key['batch_size'] == 8
  assert key['machine'] == autoconv.machine()
  # Another model, batch size or remat is another key: measured again.
  autoconv.choose(_config(batch=32), _plan(_config(batch=32)), fake)
  assert len(fake.calls) == 2


def test_a_change_to_the_implementations_code_measures_again(cache_dir, monkeypatch):
  config = _config()
  fake = FakeMeasure({'xla': 1.0, 'im2col': 2.0}, {'xla': 1.0, 'im2col': 2.0})
  autoconv.choose(config, _plan(config), fake)
  assert json.loads(next(iter(json.loads((cache_dir / 'conv_impl.json').read_text()))))[
      'conv_code'] == autoconv.code_digest()
  monkeypatch.setattr(autoconv, 'code_digest', lambda: 'edited')
  assert autoconv.choose(config, _plan(config), fake).source == 'measured'
  assert len(fake.calls) == 2


def test_a_corrupt_cache_is_ignored_with_a_warning_and_rewritten(cache_dir, caplog):
  cache_dir.mkdir()
  (cache_dir / 'conv_impl.json').write_text('{"half a file')
  config = _config()
  fake = FakeMeasure({'xla': 2.0, 'im2col': 1.0}, {'xla': 2.0, 'im2col': 1.0})
  with caplog.at_level(logging.WARNING):
    assert autoconv.choose(config, _plan(config), fake).impls == ('im2col', 'im2col')
  assert any('ignoring' in r.getMessage() and 'conv_impl.json' in r.getMessage()
             for r in caplog.records)
  assert len(json.loads((cache_dir / 'conv_impl.json').read_text())) == 2
  # An entry naming no implementation is measured again, not trusted.
  (cache_dir / 'conv_impl.json').write_text(json.dumps(
      {k: {'choice': 'fft'} for k in json.loads((cache_dir / 'conv_impl.json').read_text())}))
  assert autoconv.choose(config, _plan(config), fake).source == 'measured'


def test_explicit_choices_and_accelerators_never_measure(cache_dir, monkeypatch):
  def refuse(*args):
    raise AssertionError('measured')
  for impl in ('xla', 'im2col', 'im2col_bf16'):
    config = _config(conv_impl=impl)
    assert autoconv.choose(config, _plan(config), refuse) == autoconv.Choice(impl, impl, 'config')
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  config = _config()
  assert autoconv.choose(config, _plan(config), refuse).impls == ('xla', 'xla')
  assert not cache_dir.exists()


def test_fixed_keeps_the_rule_without_measuring_and_a_bad_mode_is_named(monkeypatch):
  def refuse(*args):
    raise AssertionError('measured')
  config = _config()
  monkeypatch.setenv('CNN_ZOO_CONV_AUTO', 'fixed')
  assert autoconv.choose(config, _plan(config), refuse).impls == ('im2col', 'im2col')
  monkeypatch.setenv('CNN_ZOO_CONV_AUTO', 'always')
  with pytest.raises(errors.ConfigError, match="CNN_ZOO_CONV_AUTO='always' is not valid; valid "
                                               "choices: measure, fixed"):
    autoconv.choose(config, _plan(config), refuse)


def test_the_measurement_times_both_candidates_for_each_step(cache_dir):
  config = _config(batch=4)
  times = autoconv.measure(config, _plan(config), ['train', 'eval'])
  assert set(times) == {'train', 'eval'}
  for kind in times:
    assert set(times[kind]) == set(autoconv.candidates(kind)) and min(times[kind].values()) > 0


def test_the_eval_step_computes_with_its_own_implementation():
  config = _config(batch=4)
  built = build_lib.build(config, _plan(config), conv_impls=('xla', 'im2col'))
  assert built.conv_impls == ('xla', 'im2col')
  state = built.init()
  has_conv = lambda compiled: 'convolution(' in compiled.as_text()
  assert has_conv(built.compile_train(state)) and not has_conv(built.compile_eval(state))
  # The eval step takes the train step's state; its result is the XLA model's, within rounding.
  batch = {'image': np.random.default_rng(0).normal(size=(4, 32, 32, 1)).astype(np.float32),
           'label': np.arange(4, dtype=np.int32), 'mask': np.ones(4, np.float32)}
  same = build_lib.build(config, _plan(config), conv_impls=('xla', 'xla'))
  other = same.init()  # the same parameters (the same seed)
  a, b = built.compile_eval(state)(state, batch), same.compile_eval(other)(other, batch)
  np.testing.assert_allclose(a['loss'], b['loss'], rtol=1e-5)


def _cut(workdir, to):
  """A copy of `workdir` as it stood at its first checkpoint (step 3 of 6)."""
  shutil.copytree(workdir, to)
  shutil.rmtree(to / 'checkpoints' / '6')
  os.remove(to / 'results.json')
  return str(to)


def test_a_run_records_its_choice_reruns_from_the_cache_and_resumes_with_its_own(
    smoke_config, tmp_path, cache_dir, monkeypatch):
  fake = FakeMeasure({'xla': 1.0, 'im2col': 2.0}, {'xla': 2.0, 'im2col': 1.0})
  monkeypatch.setattr(autoconv, 'measure', fake)
  smoke_config.conv_impl, smoke_config.checkpoint_every_steps = 'auto', 3
  first = loop.train_and_evaluate(smoke_config, str(tmp_path / 'a'))
  assert (first['conv_impl_train'], first['conv_impl_eval']) == ('xla', 'im2col')
  record = json.loads((tmp_path / 'a' / 'conv_impl.json').read_text())
  assert (record['conv_impl_train'], record['conv_impl_eval']) == ('xla', 'im2col')
  # A rerun on this machine reads the cache: no measurement, bit-identical weights.
  again = loop.train_and_evaluate(smoke_config, str(tmp_path / 'b'))
  assert len(fake.calls) == 1 and again['weights_sha256'] == first['weights_sha256']
  # A resumed run holds to its workdir's record, whatever the cache now says, and so ends as the
  # uninterrupted run did.
  (cache_dir / 'conv_impl.json').write_text(json.dumps(
      {k: {'choice': 'im2col'} for k in json.loads((cache_dir / 'conv_impl.json').read_text())}))
  resumed = loop.train_and_evaluate(smoke_config, _cut(tmp_path / 'a', tmp_path / 'cut'))
  assert resumed['resumed_from_step'] == 3
  assert (resumed['conv_impl_train'], resumed['conv_impl_eval']) == ('xla', 'im2col')
  assert resumed['weights_sha256'] == first['weights_sha256']
  fresh = loop.train_and_evaluate(smoke_config, str(tmp_path / 'c'))
  assert (fresh['conv_impl_train'], fresh['conv_impl_eval']) == ('im2col', 'im2col')
  assert fresh['weights_sha256'] != first['weights_sha256']  # the choice does reach the step


def test_a_run_from_before_the_record_resumes_with_the_fixed_rule(smoke_config, tmp_path,
                                                                  cache_dir, monkeypatch):
  monkeypatch.setattr(autoconv, 'measure', FakeMeasure({'xla': 1, 'im2col': 2},
                                                       {'xla': 1, 'im2col': 2}))
  smoke_config.conv_impl, smoke_config.checkpoint_every_steps = 'auto', 3
  loop.train_and_evaluate(smoke_config, str(tmp_path / 'a'))
  cut = _cut(tmp_path / 'a', tmp_path / 'cut')
  os.remove(os.path.join(cut, 'conv_impl.json'))  # as a run of the version before it wrote one
  resumed = loop.train_and_evaluate(smoke_config, cut)
  assert (resumed['conv_impl_train'], resumed['conv_impl_eval']) == ('im2col', 'im2col')


def test_a_reader_reloads_a_run_with_its_recorded_eval_implementation(tmp_path):
  assert autoconv.recorded_eval(str(tmp_path), 'auto') == 'auto'  # no record: the fixed rule
  (tmp_path / 'conv_impl.json').write_text(json.dumps(
      {'conv_impl': 'auto', 'conv_impl_train': 'im2col', 'conv_impl_eval': 'xla'}))
  assert autoconv.recorded_eval(str(tmp_path), 'auto') == 'xla'
  assert autoconv.recorded_eval(str(tmp_path), 'im2col') == 'im2col'  # explicit: as configured
  (tmp_path / 'conv_impl.json').write_text('[')
  assert autoconv.recorded_eval(str(tmp_path), 'auto') == 'auto'
