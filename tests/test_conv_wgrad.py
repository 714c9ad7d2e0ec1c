"""conv_impl='ffi_wgrad': the weight-gradient kernel (cnn_zoo/models/kernels/conv_wgrad.cc), built
here into the session's cache folder (tests/conftest.py), equals XLA's weight gradient on every
convolution shape of the zoo and in a train step, and falls back to XLA's where it cannot be used.

Where no kernel can be built (no g++, not x86-64 with AVX2) the tests that need it skip; CI sets
CNN_ZOO_REQUIRE_WGRAD_KERNEL=1, which makes that a failure instead.
"""

import functools
import json
import logging as std_logging
import os
import subprocess
import sys

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_zoo import models
from cnn_zoo.models import conv, conv_wgrad, registry
from cnn_zoo.train import autoconv
from cnn_zoo.train import build as build_lib
from cnn_zoo.train import state as state_lib
from cnn_zoo.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = sorted({registry.spec(name).family for name in registry.names()})


@pytest.fixture(scope='module')
def kernel():
  if not conv_wgrad.available():
    reason = conv_wgrad.unavailable_reason()
    if os.environ.get('CNN_ZOO_REQUIRE_WGRAD_KERNEL') == '1':
      pytest.fail(f'the weight-gradient kernel is required here: {reason}')
    pytest.skip(reason)


def zoo_convolutions(family):
  """{(kernel shape, strides, explicit padding, groups): the input's (H, W)} of every convolution
  in the registered models of `family`, found by tracing each model's init abstractly."""
  seen = {}

  def recording(_impl):
    def conv_general_dilated(lhs, rhs, strides, padding, *args, feature_group_count=1, **kwargs):
      pads = (lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
              if isinstance(padding, str) else padding)
      dilations = (kwargs.get('lhs_dilation') or ()) + (kwargs.get('rhs_dilation') or ())
      assert all(d == 1 for d in dilations), 'a dilated convolution: not covered by the kernel'
      key = (tuple(rhs.shape), tuple(strides), tuple(tuple(map(int, p)) for p in pads),
             feature_group_count)
      seen.setdefault(key, tuple(lhs.shape[1:3]))
      return lax.conv_general_dilated(lhs, rhs, strides, padding, *args,
                                      feature_group_count=feature_group_count, **kwargs)
    return functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(conv, 'conv_module', recording)
    for name in registry.names():
      if registry.spec(name).family == family:
        model = registry.get(name)
        x = jax.ShapeDtypeStruct((1, *registry.input_shape(name)), jnp.float32)
        jax.eval_shape(lambda x, m=model: m.init(jax.random.key(0), x, train=False), x)
  return seen


@pytest.mark.parametrize('family', FAMILIES)
def test_every_zoo_convolution_weight_gradient_equals_xlas(kernel, family):
  """Each distinct convolution (kernel size, channels, stride, padding, groups) of the family's
  registered models, on 2 images cut to a few strides beyond the kernel: the kernel's weight
  gradient equals XLA's within float32 rounding. All of a family's cases run in one jitted
  function (one compilation instead of one per shape)."""
  cases = zoo_convolutions(family)
  assert cases, family
  rng = np.random.default_rng(0)
  specs, operands = [], []
  for (shape, strides, pads, groups), (h, w) in sorted(cases.items()):
    kh, kw, cg, cout = shape
    small = (min(h, kh + 2 * strides[0]), min(w, kw + 2 * strides[1]))
    x = rng.standard_normal((2, *small, cg * groups), np.float32)
    out = jax.eval_shape(lambda x, s=shape, st=strides, p=pads, g=groups:
                         conv_wgrad._xla_conv(x, jnp.zeros(s), st, p, g, None), x)
    specs.append((shape, strides, pads, groups))
    operands.append((x, rng.standard_normal(out.shape, np.float32)))

  @jax.jit
  def errors(operands):
    out = []
    for (shape, strides, pads, groups), (x, dy) in zip(specs, operands):
      got = conv_wgrad.weight_grad(x, dy, shape, strides, pads, groups)
      want = conv_wgrad.reference_weight_grad(x, dy, shape, strides, pads, groups)
      out.append(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
    return jnp.stack(out)

  errs = np.asarray(errors(operands))
  bad = [(spec, float(e)) for spec, e in zip(specs, errs) if not e <= 1e-5]
  assert not bad, f'{len(bad)} of {len(specs)} shapes differ from XLA: {bad[:5]}'


def _resnet_step(conv_impl):
  """One ResNet-20 train step on 8 images of 16x16, compiled as a CPU train step is compiled."""
  model = models.get('resnet20', conv_impl=conv_impl)
  state = state_lib.create(model, optax.sgd(0.1, momentum=0.9), (16, 16, 3), seed=0)
  batch = {'image': jax.random.normal(jax.random.key(3), (8, 16, 16, 3)),
           'label': jnp.arange(8, dtype=jnp.int32)}
  lowered = jax.jit(step_lib.train_step).lower(state, batch)
  compiled = lowered.compile(compiler_options=build_lib.train_compiler_options('none', 'cpu'))
  new_state, metrics = compiled(state, batch)
  return lowered.as_text(), new_state, metrics


def test_a_train_step_with_the_kernel_equals_the_xla_step(kernel):
  text, state, metrics = _resnet_step('ffi_wgrad')
  ref_text, ref_state, ref_metrics = _resnet_step('xla')
  # Every one of ResNet-20's 19 convolutions takes its weight gradient from the kernel.
  assert text.count(conv_wgrad.TARGET) == 19 and conv_wgrad.TARGET not in ref_text
  np.testing.assert_allclose(metrics['loss'], ref_metrics['loss'], rtol=1e-5)
  for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)))


@pytest.fixture
def fresh_load(monkeypatch):
  """`conv_wgrad._load` forgets its answer before and after the test (the kernel's registration,
  which XLA keeps, stays)."""
  conv_wgrad._load.cache_clear()
  yield
  conv_wgrad._load.cache_clear()


def _falls_back(caplog, needle):
  with caplog.at_level(std_logging.WARNING):
    assert not conv_wgrad.available()
    assert conv.conv_module('ffi_wgrad').keywords['conv_general_dilated'] is conv.barrier_conv
  lines = [r.getMessage() for r in caplog.records if 'ffi_wgrad' in r.getMessage()]
  assert len(lines) == 1 and needle in lines[0], lines
  assert "XLA's weight gradient is used instead" in lines[0]


def test_without_a_compiler_it_falls_back_with_one_line(fresh_load, monkeypatch, caplog):
  monkeypatch.setenv('CXX', 'no-such-compiler-cnn-zoo')
  _falls_back(caplog, 'no C++ compiler (no-such-compiler-cnn-zoo)')


def test_a_failing_build_falls_back_with_one_line(fresh_load, monkeypatch, caplog, tmp_path):
  monkeypatch.setenv('CNN_ZOO_CACHE_DIR', str(tmp_path))  # no built library to find
  monkeypatch.setenv('CXX', 'false')  # a "compiler" that exits 1
  _falls_back(caplog, 'exited 1')
  assert not list((tmp_path / 'kernels').iterdir())  # nothing half-written left behind


def test_another_architecture_falls_back_with_one_line(fresh_load, monkeypatch, caplog):
  monkeypatch.setattr(conv_wgrad.platform, 'machine', lambda: 'aarch64')
  _falls_back(caplog, 'x86-64 CPUs, this is aarch64')


def test_a_kernel_that_fails_its_self_check_is_not_used(kernel, fresh_load, monkeypatch, caplog):
  wrong = conv_wgrad.reference_weight_grad
  monkeypatch.setattr(conv_wgrad, 'reference_weight_grad',
                      lambda *args: wrong(*args) * (1 + 1e-3))  # a reference 0.1% off
  _falls_back(caplog, 'the self-check failed')


def test_the_build_is_cached_by_source_flags_and_machine(kernel, monkeypatch):
  path = conv_wgrad.build()
  assert os.path.dirname(path) == os.path.join(os.environ['CNN_ZOO_CACHE_DIR'], 'kernels')
  stamp = os.stat(path).st_mtime_ns
  assert conv_wgrad.build() == path and os.stat(path).st_mtime_ns == stamp  # not rebuilt
  key = conv_wgrad.build_key(conv_wgrad.compiler())
  monkeypatch.setattr(conv_wgrad, 'FLAGS', conv_wgrad.FLAGS + ('-O2',))
  assert conv_wgrad.build_key(conv_wgrad.compiler()) != key
  monkeypatch.undo()
  monkeypatch.setattr(conv_wgrad, 'source_text', lambda: '// another kernel')
  assert conv_wgrad.build_key(conv_wgrad.compiler()) != key
  monkeypatch.undo()
  monkeypatch.setattr(conv_wgrad, '_cpu_flags', lambda: {'avx2', 'fma'})
  assert conv_wgrad.build_key(conv_wgrad.compiler()) != key


def test_auto_measures_it_for_the_train_step_on_one_device_only(kernel, monkeypatch):
  assert autoconv.candidates('train') == ('xla', 'im2col', 'ffi_wgrad')
  assert autoconv.candidates('eval') == ('xla', 'im2col')
  monkeypatch.setattr(jax, 'device_count', lambda: 2)
  assert autoconv.candidates('train') == ('xla', 'im2col')


_MESH_PROBE = '''
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from cnn_zoo import models, parallel
from cnn_zoo.models import conv_wgrad
assert conv_wgrad.available(), conv_wgrad.unavailable_reason()
x = jax.random.normal(jax.random.key(1), (8, *models.input_shape('lenet5')))
out = {}
for impl in ('ffi_wgrad', 'xla'):
  model = models.get('lenet5', conv_impl=impl)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  def loss(params, x):
    y = model.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'])[0]
    return jnp.sum(y ** 2)
  mesh = parallel.mesh()
  xs = jax.device_put(x, NamedSharding(mesh, P('data')))
  fn = jax.jit(jax.grad(loss))
  out['calls_' + impl] = fn.lower(variables['params'], xs).as_text().count(conv_wgrad.TARGET)
  out[impl] = [np.asarray(g).tolist() for g in jax.tree.leaves(fn(variables['params'], xs))]
print(json.dumps({'devices': jax.device_count(), 'mesh': int(mesh.devices.size), **out}))
'''


def test_over_a_mesh_of_two_devices_the_gradient_is_right(kernel):
  """Under jit over a 2-device mesh with the batch sharded, the kernel's call is gathered onto each
  device (an FFI call has no sharding rule) and LeNet-5's gradient equals XLA's."""
  proc = subprocess.run([sys.executable, '-c', _MESH_PROBE], cwd=ROOT, capture_output=True,
                        text=True, timeout=600,
                        env={**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  found = json.loads(proc.stdout.strip().splitlines()[-1])
  assert found['devices'] == found['mesh'] == 2
  assert found['calls_ffi_wgrad'] == 2 and found['calls_xla'] == 0  # LeNet-5's two convolutions
  assert len(found['xla']) == len(found['ffi_wgrad']) > 0
  for got, want in zip(found['ffi_wgrad'], found['xla']):
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-4, atol=1e-4)
