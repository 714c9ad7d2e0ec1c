"""Trust, round three (issue 30), runs: a checkpoint that no longer fits the model is refused and
moves nothing, only unreadable steps are set aside (beside the real checkpoint directory, whatever
file system it is on), --overwrite never touches another tool's directory, run files that are
symbolic links are refused, and lines of metrics.jsonl that do not decode never block a resume."""

import hashlib
import json
import os
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_zoo import errors, run_files
from cnn_zoo.train import build as build_lib
from cnn_zoo.train import checkpoint, loop, workdir as workdir_lib, writers
from cnn_zoo.train.state import TrainState
from tests.test_user_errors import _refused


def _contents(workdir):
  """Every file's bytes (by digest) and every directory, links included as links."""
  found = {}
  for root, dirs, names in os.walk(workdir):
    for d in dirs:
      found[os.path.relpath(os.path.join(root, d), workdir) + '/'] = None
    for name in names:
      path = os.path.join(root, name)
      if os.path.islink(path):
        found[os.path.relpath(path, workdir)] = 'link:' + os.readlink(path)
      elif name != '.lock':
        with open(path, 'rb') as f:
          found[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return found


def _npz(path, classes):
  rng = np.random.default_rng(0)
  np.savez(path, x_train=rng.integers(0, 256, (44, 28, 28, 1), dtype=np.uint8),
           y_train=np.arange(44) % classes,
           x_test=rng.integers(0, 256, (11, 28, 28, 1), dtype=np.uint8),
           y_test=np.arange(11) % classes)
  return str(path)


# 1. A checkpoint that no longer fits the model --------------------------------------------------

def test_a_dataset_that_gained_a_class_is_refused_naming_it_and_nothing_moves(smoke_config,
                                                                             tmp_path, capsys,
                                                                             monkeypatch):
  data = _npz(tmp_path / 'data.npz', 10)
  smoke_config.dataset = f'npz:{data}'
  smoke_config.num_train_steps = smoke_config.checkpoint_every_steps = 2
  smoke_config.log_every_steps = 1
  smoke_config.batch_size, smoke_config.eval_batch_size = 4, 11
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(smoke_config, workdir)
  os.remove(os.path.join(workdir, 'results.json'))  # as if it had been stopped at its checkpoint
  before = _contents(workdir)
  _npz(tmp_path / 'data.npz', 11)  # the same config, a class more in its data
  # Known from shapes alone: refused before the train state is initialised (compiled).
  monkeypatch.setattr(build_lib.Built, 'init', lambda self: pytest.fail('compiled'))
  line = _refused(loop.train_and_evaluate, smoke_config, workdir, capsys=capsys)
  assert line.startswith(f'error: the checkpoint at step 2 in {workdir}/checkpoints does not fit '
                         f'the model: params/'), line
  assert line.endswith(' (84, 10) saved vs (84, 11) now: the class count changed (10 saved, 11 '
                       'now); nothing was moved: train it into another --workdir, or give it back '
                       'the model and data it was trained on'), line
  assert _contents(workdir) == before  # no step set aside, metrics.jsonl not cut


TX = optax.sgd(0.1)


def _state(params, step=1):
  return TrainState(step=jnp.asarray(step, jnp.int32), params=params, batch_stats={},
                    opt_state=TX.init(params), rng=jax.random.PRNGKey(0), apply_fn=None, tx=TX)


def test_a_checkpoint_of_another_tree_is_refused_naming_what_differs(tmp_path):
  workdir = str(tmp_path)
  ckpt = checkpoint.Checkpoints(workdir)
  ckpt.save(_state({'conv': {'kernel': jnp.zeros((3, 3, 1, 6))}, 'head': jnp.zeros((6, 10))}))
  ckpt.wait()
  ckpt.close()
  before = _contents(workdir)
  for params, message in (
      ({'conv': {'kernel': jnp.zeros((3, 3, 1, 6))}, 'head': jnp.zeros((6, 10)),
        'extra': jnp.zeros(2)}, 'it lacks params/extra'),
      ({'conv': {'kernel': jnp.zeros((3, 3, 1, 6))}}, 'it has params/head that the model lacks'),
      ({'conv': {'kernel': jnp.zeros((5, 5, 1, 6))}, 'head': jnp.zeros((6, 10))},
       'params/conv/kernel (3, 3, 1, 6) saved vs (5, 5, 1, 6) now;')):
    ckpt = checkpoint.Checkpoints(workdir)
    with pytest.raises(errors.WorkdirError) as e:
      ckpt.restore_latest(_state(params))
    ckpt.close()
    assert str(e.value).startswith(f'the checkpoint at step 1 in {workdir}/checkpoints does not '
                                   f'fit the model: {message}'), str(e.value)
    assert 'class count' not in str(e.value)
    assert _contents(workdir) == before


def _damage(directory, step):
  for root, _, files in os.walk(os.path.join(directory, str(step))):
    for f in files:
      if not f.startswith('_'):
        os.remove(os.path.join(root, f))


def test_an_unreadable_step_is_set_aside_beside_checkpoints_on_another_file_system(tmp_path):
  other = tempfile.mkdtemp(dir='/dev/shm') if os.path.isdir('/dev/shm') else None
  if other is None or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
    pytest.skip('needs a second file system (/dev/shm)')
  try:
    real = os.path.join(other, 'ckpts')
    os.makedirs(real)
    os.symlink(real, tmp_path / 'checkpoints')  # the run's checkpoints kept on another disk
    params = {'w': jnp.ones((2, 3))}
    ckpt = checkpoint.Checkpoints(str(tmp_path))
    for step in (1, 2):
      ckpt.save(_state(params, step))
    ckpt.wait()
    ckpt.close()
    _damage(real, 2)
    ckpt = checkpoint.Checkpoints(str(tmp_path))
    restored = ckpt.restore_latest(_state(params, 0))
    ckpt.close()
    assert int(restored.step) == 1
    assert ckpt.damaged_directory() == real + '.damaged'
    assert os.listdir(real + '.damaged') == ['2'] and sorted(os.listdir(real)) == ['1']
    assert not os.path.exists(tmp_path / checkpoint.DAMAGED)
  finally:
    shutil.rmtree(other)


# 2. --overwrite and directories that are not cnn_zoo runs ---------------------------------------

FOREIGN = {'architectures': ['BertModel'], 'hidden_size': 768, 'model_type': 'bert',
           'vocab_size': 30522}


@pytest.mark.parametrize('overwrite', [False, True])
def test_overwrite_never_touches_a_directory_that_is_not_a_cnn_zoo_run(smoke_config, tmp_path,
                                                                      capsys, overwrite):
  workdir = str(tmp_path / 'other_tool')
  for name in ('checkpoints/0001', 'tensorboard'):
    os.makedirs(os.path.join(workdir, name))
  with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(FOREIGN, f)
  before = _contents(workdir)
  line = _refused(loop.train_and_evaluate, smoke_config, workdir, overwrite=overwrite,
                  capsys=capsys)
  assert line == (f'error: workdir {workdir} is not a cnn_zoo run: its config.json is not a '
                  f'cnn_zoo config (fields: architectures, hidden_size, model_type, vocab_size); '
                  f'nothing in it is replaced or deleted: choose another --workdir')
  assert '--overwrite' not in line
  assert _contents(workdir) == before


# 3. Run files that are symbolic links ---------------------------------------------------------------

@pytest.mark.parametrize('name', ['.lock', 'config.json', 'config.json.tmp', 'metrics.jsonl',
                                  'metrics.jsonl.tmp', 'results.json', 'results.json.tmp',
                                  'conv_impl.json'])
def test_a_run_file_that_is_a_symbolic_link_is_refused_and_never_written_through(
    smoke_config, tmp_path, capsys, name):
  victim = tmp_path / 'precious.txt'
  victim.write_text('not yours\n')
  workdir = tmp_path / 'run'
  workdir.mkdir()
  os.symlink(victim, workdir / name)
  line = _refused(loop.train_and_evaluate, smoke_config, str(workdir), capsys=capsys)
  assert line == (f'error: {workdir / name} is a symbolic link (to {victim}); a run writes its '
                  f'files only as themselves, never through a link: remove the link, or choose '
                  f'another --workdir')
  assert victim.read_text() == 'not yours\n'
  assert sorted(os.listdir(workdir)) == [name]


def test_a_link_planted_after_the_check_is_refused_too(tmp_path):
  victim = tmp_path / 'precious.txt'
  victim.write_text('not yours\n')
  os.symlink(victim, tmp_path / '.lock')
  with pytest.raises(OSError):
    workdir_lib.Lock(str(tmp_path))
  os.symlink(victim, tmp_path / 'metrics.jsonl')
  with pytest.raises(errors.WorkdirError, match='is a symbolic link'):
    writers.MetricWriter(str(tmp_path))
  with pytest.raises(errors.WorkdirError, match='is a symbolic link'):
    run_files.open_own(str(tmp_path / 'metrics.jsonl'), 'a')
  assert victim.read_text() == 'not yours\n'


# 4. metrics.jsonl ---------------------------------------------------------------------------------

def test_lines_of_metrics_that_do_not_decode_are_dropped_like_torn_ones(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  good = [{'step': s, 'split': 'train', 'loss': 1.0 / s} for s in (1, 2, 3, 4)]
  lines = [json.dumps(good[0]).encode() + b'\n', b'\xff\xfe\x00 not utf-8\n',
           json.dumps(good[1]).encode() + b'\n', b'[1, 2]\n', b'{"step": "3"}\n', b'7\n',
           b'{"split": "train"}\n', json.dumps(good[2]).encode() + b'\n',
           json.dumps(good[3]).encode() + b'\n', b'{"step": 5, "spl']
  path.write_bytes(b''.join(lines))
  writer = writers.MetricWriter(str(tmp_path), resume_step=3)
  assert writer.kept == good[:3]
  assert writer.kept_record(2, 'train') == good[1]
  writer.close()
  assert path.read_text().splitlines() == [json.dumps(r) for r in good[:3]]


def test_overwrite_of_a_run_with_linked_checkpoints_empties_them_and_keeps_the_link(tmp_path):
  from cnn_zoo.train import config as config_lib
  workdir, disk = tmp_path / 'run', tmp_path / 'big_disk'
  (disk / 'ckpts' / '4').mkdir(parents=True)
  (disk / 'other_runs').mkdir()
  workdir.mkdir()
  os.symlink(disk / 'ckpts', workdir / 'checkpoints')
  config = json.loads(config_lib.defaults().to_json())
  (workdir / 'config.json').write_text(json.dumps({**config, 'seed': 7}))
  workdir_lib.check_same_run(str(workdir), json.dumps(config), overwrite=True)
  assert os.path.islink(workdir / 'checkpoints') and os.listdir(disk / 'ckpts') == []
  assert sorted(os.listdir(disk)) == ['ckpts', 'other_runs']
  assert sorted(os.listdir(workdir)) == ['checkpoints']


def test_convert_overwrite_never_touches_a_directory_that_is_not_a_cnn_zoo_run(tmp_path):
  from cnn_zoo.pretrained import state_dict_files, layout
  from cnn_zoo.train import torchvision_weights
  with open(os.path.join(os.path.dirname(layout.__file__), 'manifests', 'resnet18.json')) as f:
    manifest = json.load(f)
  source = str(tmp_path / 'resnet18.npz')
  np.savez(source, **{k: np.zeros((), np.int64) if k.endswith(layout.BATCHES_TRACKED)
                      else np.zeros(shape, np.float32) for k, shape in manifest.items()})
  assert state_dict_files.read(source)  # a state dict the converter takes
  workdir = str(tmp_path / 'other_tool')
  os.makedirs(os.path.join(workdir, 'checkpoints', '0001'))
  with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(FOREIGN, f)
  before = _contents(workdir)
  with pytest.raises(errors.WorkdirError, match=r'is not a cnn_zoo run: its config\.json'):
    torchvision_weights.convert('resnet18', source, workdir, overwrite=True)
  assert _contents(workdir) == before
