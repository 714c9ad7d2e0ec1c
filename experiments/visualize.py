"""Figures of how a ConvNet sees an image, computed with the ops the models use.

  python -m experiments.visualize convolution   # the textbook 5x5 example, printed step by step
  python -m experiments.visualize kernels [--image=FILE]
  python -m experiments.visualize relu
  python -m experiments.visualize pooling
  python -m experiments.visualize feature-maps --workdir=/tmp/lenet5_digits --index=0
  python -m experiments.visualize explorer --workdir=/tmp/lenet5_digits --out_dir=/tmp/explorer
      [--screenshots]   # a page to draw on; PNGs of it from headless Chromium
"""

from absl import app, flags

from cnn_zoo import errors
from cnn_zoo import cli, visualize

_OUT_DIR = flags.DEFINE_string('out_dir', 'figures', 'Directory the PNG figures (or explorer.html) are written to.')
_IMAGE = flags.DEFINE_string('image', None, 'An image file (PNG, JPEG) to use instead of the '
                             'bundled photograph (kernels, relu, pooling) or a test image '
                             '(feature-maps).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'feature-maps, explorer: the workdir of a trained run.')
_INDEX = flags.DEFINE_integer('index', None, 'feature-maps: which test image to show (default 0).')
_SCREENSHOTS = flags.DEFINE_bool('screenshots', False, 'explorer: also save PNG screenshots of '
                                 'the page in headless Chromium (a digit drawn; a pool pixel '
                                 'hovered).')


def _make(figures):
  if len(figures) != 1:
    raise errors.ConfigError(f'name one figure to draw: {", ".join(visualize.COMMANDS)}')
  text, written = visualize.make(figures[0], _OUT_DIR.value, image=_IMAGE.value,
                                 workdir=_WORKDIR.value, index=_INDEX.value,
                                 screenshots=_SCREENSHOTS.value)
  print(text)
  for path, size in written:
    print(f'wrote {path} ({size / 1024:.0f} KiB)')


def main(argv):
  cli.run(_make, argv[1:])


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
