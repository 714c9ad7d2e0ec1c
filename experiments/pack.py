"""A dataset as one compact file of JPEGs (to carry to another machine), and back to an npz.

  python -m experiments.pack --npz=../shared/data/cifar10.npz --packed=cifar10.jpeg.npz
  python -m experiments.pack --unpack --packed=cifar10.jpeg.npz --npz=/tmp/cifar10.npz

The output is never the input, and an existing output file is replaced only with --overwrite.
"""

import json

from absl import app, flags

from cnn_zoo import cli
from cnn_zoo.data import pack

_NPZ = flags.DEFINE_string('npz', None, 'The npz dataset (x_train, y_train, x_test, y_test).')
_PACKED = flags.DEFINE_string('packed', None, 'The packed file.')
_UNPACK = flags.DEFINE_bool('unpack', False, 'Decode --packed into --npz instead.')
_QUALITY = flags.DEFINE_integer('quality', 75, 'JPEG quality (1..95).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace the output file if it exists.')
flags.mark_flags_as_required(['npz', 'packed'])


def _pack(npz, packed, unpack, quality, overwrite):
  if unpack:
    pack.unpack_to_npz(packed, npz, overwrite)
    print(f'{packed} -> {npz}')
  else:
    print(json.dumps(pack.pack(npz, packed, quality, overwrite), indent=2))


def main(argv):
  del argv
  cli.run(_pack, _NPZ.value, _PACKED.value, _UNPACK.value, _QUALITY.value, _OVERWRITE.value)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
