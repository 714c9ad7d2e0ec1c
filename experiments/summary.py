"""Prints a model's per-layer table: output shapes, parameters and MACs, with the totals.

  python -m experiments.summary --model=resnet20
  python -m experiments.summary --model=alexnet --image_size=224
"""

from absl import app, flags

from cnn_zoo import cli, models
from cnn_zoo.models import summary

_MODEL = flags.DEFINE_string('model', 'lenet5', 'A registered model name.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 0, 'Input height and width (0: canonical).')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 0, 'Number of classes (0: the default).')


def _summarize():
  spec = models.spec(_MODEL.value)
  size = _IMAGE_SIZE.value or spec.input_shape[0]
  shape = (size, size, spec.input_shape[2])
  models.check_input_shape(spec.name, shape)
  model = models.get(spec.name, num_classes=_NUM_CLASSES.value or None)
  print(f'{spec.name}: {spec.description}; input {"x".join(map(str, shape))}')
  print(summary.summarize(model, shape).table())


def main(argv):
  del argv
  cli.run(_summarize)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
