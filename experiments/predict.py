"""The class probabilities of one image under a trained run, as a ranked list that sums to 1.

  python -m experiments.predict --workdir=/tmp/lenet5_digits --image=digit.png --top_k=5
"""

from absl import app, flags

from cnn_zoo import cli, predict

_WORKDIR = flags.DEFINE_string('workdir', None, 'The workdir of a trained run.')
_IMAGE = flags.DEFINE_string('image', None, 'An image file: PNG, JPEG, GIF, BMP or WebP, any size, '
                             'grey or colour.')
_TOP_K = flags.DEFINE_integer('top_k', 5, 'How many classes to list; the rest are summed in one '
                              'line.')
flags.mark_flags_as_required(['workdir', 'image'])


def _predict(workdir, image, top_k):
  ranking = predict.predict(workdir, image, top_k=None)
  print(f'{image} under the run in {workdir}:')
  print(predict.format_ranking(ranking, top_k))


def main(argv):
  del argv
  cli.run(_predict, _WORKDIR.value, _IMAGE.value, _TOP_K.value)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
