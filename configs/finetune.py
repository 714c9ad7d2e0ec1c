"""Fine-tuning an ImageNet model from converted torchvision weights on a folder of your own images.

  python -m experiments.convert --model=resnet50 --torchvision=resnet50.pth --workdir=runs/resnet50_tv
  python -m experiments.train --config=configs/finetune.py:resnet50 \
      --config.init_from=runs/resnet50_tv --config.dataset=folder:my_photos --workdir=runs/my_photos

`config.init_from` is the converted run (or any run of the same model, or a state dict file); the
classifier starts afresh when the number of classes differs (the folder's classes), every other
weight and BatchNorm statistic starts from there. Inputs are normalised by the folder's own mean
and std, as in every run here. 224x224 inputs (images resized), SGD with momentum 0.9 at 0.01 with
cosine decay over 10 epochs, weight decay 1e-4 on every parameter, random flips: a common transfer
recipe, not one tuned here. The decay follows pytorch/vision references/classification/train.py,
whose `--wd` (default 1e-4) applies to every parameter unless `--norm-weight-decay` is given (its
default None passes `model.parameters()` to SGD); --config.weight_decay_on=kernels is its
`--norm-weight-decay 0` with the biases left undecayed as well.

Arguments (comma-separated): model= any registered model (default resnet50; a bare model name
also works, `:resnet50`); data= the dataset (default folder:my_photos); smoke: three
steps on the embedded digits at 32x32 (ResNet-18 unless a model is named), about half a minute on a
2-core CPU:

  python -m experiments.train --config=configs/finetune.py:smoke --workdir=/tmp/finetune_smoke

"""

from cnn_zoo import models
from cnn_zoo.train import config as config_lib


def get_config(arg: str | None = None):
  # `resnet50`, as the README's commands spell it, is short for model=resnet50.
  items = [f'model={a}' if a in models.names() else a for a in (arg or '').split(',') if a]
  a = config_lib.parse_arg(','.join(items), model='', data='folder:my_photos', smoke=False)
  c = config_lib.defaults()
  c.model = a.model or ('resnet18' if a.smoke else 'resnet50')
  c.dataset = a.data
  c.image_size = 224
  c.resize_mode = 'resize'
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_epochs = 10.0
  c.optimizer = 'sgd'
  c.learning_rate = 0.01
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.weight_decay_on = 'all'  # pytorch/vision references/classification/train.py's default
  c.schedule = 'cosine'
  c.augment = 'flip'
  c.log_every_steps = 10
  if a.smoke:
    c.dataset = 'digits'
    c.image_size = 32
    c.batch_size = 16
    c.eval_batch_size = 360
    c.num_train_steps = 3
    c.log_every_steps = 1
    c.eval_every_epochs = 0.0
  return c
