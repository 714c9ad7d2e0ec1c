"""The zoo against torchvision's own model code, on the same random weights (needs PyTorch).

  pip install torch==2.13.0 && pip install --no-deps torchvision
  python -m experiments.check_torchvision                    # every convertible model: the table
  python -m experiments.check_torchvision --models=resnet50,googlenet --json=check.json
  python -m experiments.check_torchvision --manifests        # rewrites cnn_zoo/pretrained/manifests/
"""

import json
import os

from absl import app, flags

from cnn_zoo import cli, errors
from cnn_zoo.pretrained import layout

_MODELS = flags.DEFINE_list('models', sorted(layout.TORCHVISION), 'Zoo models to check.')
_MANIFESTS = flags.DEFINE_bool('manifests', False, 'Write the key -> shape manifest of each '
                               "model's torchvision counterpart instead of checking logits.")
_JSON = flags.DEFINE_string('json', '', 'Also write the results to this JSON file.')
_BATCH = flags.DEFINE_integer('batch', 2, 'Images in the random batch.')


def _check(names, write_manifests, json_path, batch):
  for name in names:
    layout.check_convertible(name)
  try:
    from cnn_zoo.pretrained import torch_check  # pylint: disable=g-import-not-at-top
    torch_check.torchvision_models()
  except ImportError as e:
    raise errors.ConfigError(f'this check needs PyTorch and torchvision ({e}): pip install '
                             f'torch==2.13.0 && pip install --no-deps torchvision') from None
  if write_manifests:
    os.makedirs(torch_check.MANIFESTS, exist_ok=True)
    for name in names:
      path = os.path.join(torch_check.MANIFESTS, f'{name}.json')
      entries = torch_check.manifest(name)
      with open(path, 'w', encoding='utf-8') as f:
        f.write('{\n' + ',\n'.join(f'{json.dumps(k)}: {json.dumps(v)}' for k, v in entries.items())
                + '\n}\n')
      print(f'wrote {path} ({len(entries)} keys)')
    return
  rows = []
  print('| model | tensors | max abs logit | max abs diff | max rel diff | same top-1 | convert (s) |')
  print('|---|---:|---:|---:|---:|---|---:|')
  for name in names:
    r = torch_check.compare(name, batch=batch)
    rows.append(r)
    print(f'| {name} | {r["tensors"]} | {r["logit_scale"]:.3g} | {r["max_abs_diff"]:.2e} | '
          f'{r["max_rel_diff"]:.2e} | {"yes" if r["same_top1"] else "NO"} | '
          f'{r["convert_s"]:.2f} |', flush=True)
  if json_path:
    with open(json_path, 'w', encoding='utf-8') as f:
      json.dump(rows, f, indent=1)


def main(argv):
  del argv
  cli.run(_check, _MODELS.value, _MANIFESTS.value, _JSON.value, _BATCH.value)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
