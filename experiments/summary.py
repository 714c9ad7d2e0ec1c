"""Prints a model's per-layer table: output shapes, parameters and MACs, with the totals.

  python -m experiments.summary --model=resnet20
  python -m experiments.summary --model=alexnet --image_size=224
  python -m experiments.summary --list   # every registered model, by family
"""

from absl import app, flags

from cnn_zoo import cli, models
from cnn_zoo.models import summary

_MODEL = flags.DEFINE_string('model', 'lenet5', 'A registered model name.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 0, 'Input height and width (0: canonical).')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 0, 'Number of classes (0: the default).')
_LIST = flags.DEFINE_bool('list', False, 'List every registered model with its family and input.')


def _list():
  specs = [models.spec(name) for name in models.names()]
  width = max(len(s.name) for s in specs)
  for s in sorted(specs, key=lambda s: (s.family, s.input_shape[0] < 100, s.name)):
    shape = 'x'.join(map(str, s.input_shape))
    print(f'{s.name:<{width}}  {s.family:<10} {shape:<11} {s.description}'.rstrip())


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
  cli.run(_list if _LIST.value else _summarize)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
