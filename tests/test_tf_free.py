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
