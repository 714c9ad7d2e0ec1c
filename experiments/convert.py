"""torchvision weights into a run directory of the zoo, and a run's weights out to torchvision.

  python -m experiments.convert --model=resnet50 --torchvision=resnet50.pth --workdir=runs/resnet50_tv
  python -m experiments.convert --workdir=runs/my_resnet50 --export=my_resnet50.safetensors

The first writes a run that experiments.predict and experiments.visualize take like a trained one
and that experiments.train starts from with --config.init_from=runs/resnet50_tv. `.pth` files need
PyTorch (`pip install torch==2.13.0`); `.safetensors` and `.npz` state dicts need nothing more.
"""

from absl import app, flags

from cnn_zoo import cli, errors
from cnn_zoo.pretrained import layout
from cnn_zoo.train import torchvision_weights as runs

_MODEL = flags.DEFINE_string('model', None, 'The zoo model the weights are for: '
                             + ', '.join(sorted(layout.TORCHVISION)))
_TORCHVISION = flags.DEFINE_string('torchvision', None, "A torchvision model's state dict: .pth, "
                                   '.pt, .safetensors or .npz.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory to write (with --torchvision) '
                               'or to read (with --export).')
_EXPORT = flags.DEFINE_string('export', None, "Write the run's weights as a torchvision state "
                              'dict to this file (.pth, .safetensors or .npz).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace a run already in --workdir.')
flags.mark_flags_as_required(['workdir'])


def _convert(model, torchvision, workdir, export, overwrite):
  if bool(torchvision) == bool(export):
    raise errors.ConfigError('give --model and --torchvision=FILE (to convert), or --export=FILE '
                             '(to write a run\'s weights for torchvision)')
  if export:
    done = runs.export(workdir, export)
    print(f'wrote {done["path"]}: {done["tensors"]} tensors, the state dict of torchvision\'s '
          f'{done["torchvision_model"]}(num_classes={done["num_classes"]})')
    return
  if not model:
    raise errors.ConfigError('--model is required with --torchvision; valid choices: '
                             + ', '.join(sorted(layout.TORCHVISION)))
  done = runs.convert(model, torchvision, workdir, overwrite=overwrite)
  print(f'{torchvision}: {done["tensors"]} tensors -> {model} ({done["params"]:,} parameters, '
        f'{done["num_classes"]} classes) in {workdir}; read in {done["read_s"]:.2f}s, converted in '
        f'{done["convert_s"]:.2f}s, {done["total_s"]:.2f}s in all')
  print(f'next: python -m experiments.predict --workdir={workdir} --image=PHOTO.jpg')


def main(argv):
  del argv
  cli.run(_convert, _MODEL.value, _TORCHVISION.value, _WORKDIR.value, _EXPORT.value,
          _OVERWRITE.value)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
