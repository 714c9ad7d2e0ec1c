"""What runs without TensorFlow: the metrics writer's TensorBoard events among it."""

import os

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from cnn_zoo.train import writers


def test_tensorboard_events_hold_every_numeric_value(tmp_path):
  writer = writers.MetricWriter(str(tmp_path))
  writer.write(3, 'train', {'loss': np.float32(1.5), 'accuracy': 0.25, 'note': 'not a number'})
  writer.write(6, 'test', {'accuracy': 0.5})
  writer.close()
  events = event_accumulator.EventAccumulator(os.path.join(tmp_path, 'tensorboard'))
  events.Reload()
  read = {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                for e in events.Tensors(tag)] for tag in events.Tags()['tensors']}
  assert read == {'train/loss': [(3, 1.5)], 'train/accuracy': [(3, 0.25)],
                  'test/accuracy': [(6, 0.5)]}


_WITHOUT_TENSORFLOW = '''
import sys
sys.modules['tensorflow'] = None  # `import tensorflow` now fails, as on a host without it
sys.modules['tensorflow_datasets'] = None
import json, os
import numpy as np
from PIL import Image
from cnn_zoo.data import sources
from cnn_zoo.train import trained_run, loop
from configs import default
workdir, tmp = sys.argv[1], sys.argv[2]
config = default.get_config('smoke')
config.num_train_steps, config.batch_size, config.log_every_steps = 4, 32, 2
results = loop.train_and_evaluate(config, workdir)
run = trained_run.load(workdir)
probabilities = run.probabilities(run.dataset.test.images[:3])
from cnn_zoo import predict
Image.fromarray(run.dataset.test.images[0][..., 0]).save(os.path.join(tmp, 'digit.png'))
ranking = predict.predict(workdir, os.path.join(tmp, 'digit.png'), top_k=None)
rng = np.random.default_rng(0)
np.savez(os.path.join(tmp, 'd.npz'), x_train=rng.integers(0, 256, (20, 8, 8, 1), np.uint8),
         y_train=np.arange(20) % 2, x_test=rng.integers(0, 256, (4, 8, 8, 1), np.uint8),
         y_test=np.arange(4) % 2)
npz = sources.load('npz:' + os.path.join(tmp, 'd.npz'))
for split, n in (('train', 2), ('test', 1)):
  for label in ('a', 'b'):
    os.makedirs(os.path.join(tmp, 'f', split, label))
    for i in range(n):
      Image.fromarray(rng.integers(0, 256, (9, 9, 3), np.uint8)).save(
          os.path.join(tmp, 'f', split, label, f'{i}.png'))
folder = sources.load('folder:' + os.path.join(tmp, 'f'))
from cnn_zoo import errors
refused = []
for field, value in (('input_pipeline', 'tfdata'), ('dataset', 'cifar10')):
  config = default.get_config('smoke')
  config[field] = value
  try:
    loop.train_and_evaluate(config, os.path.join(tmp, field))
  except errors.UserError as e:
    refused.append(str(e))
print(json.dumps({'input_pipeline': results['input_pipeline'], 'steps': results['steps'],
                  'probability_sums': probabilities.sum(-1).tolist(),
                  'npz': [len(npz.train), len(npz.test)],
                  'folder': [len(folder.train), len(folder.test), folder.num_classes,
                             list(folder.image_shape)],
                  'refused': refused, 'predicted': sum(p for _, _, p in ranking),
                  'tensorflow_loaded': sys.modules['tensorflow'] is not None}))
'''


def test_training_inference_and_local_data_need_no_tensorflow(tmp_path):
  """In a process where `import tensorflow` fails: train on digits, reload the run, predict an
  image file, read npz and image-folder data."""
  import json
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, '-c', _WITHOUT_TENSORFLOW, str(tmp_path / 'run'),
                         str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out['input_pipeline'] == 'device' and out['steps'] == 4
  np.testing.assert_allclose(out['probability_sums'], 1.0, rtol=1e-5)
  assert out['npz'] == [20, 4] and out['folder'] == [4, 2, 2, [9, 9, 3]]
  assert not out['tensorflow_loaded'] and abs(out['predicted'] - 1) < 1e-5
  assert out['refused'][0].startswith('config.input_pipeline=tfdata needs TensorFlow')
  assert out['refused'][1].startswith("dataset 'cifar10' is read through TFDS, which needs")
  assert os.listdir(tmp_path / 'run' / 'tensorboard')
  assert os.path.exists(tmp_path / 'run' / 'results.json')
