#!/bin/sh
# Rewrites this fixture with the code of commit e286f77 (before runs recorded dataset.json): a
# LeNet-5 run of 3 steps on the embedded digits, and the probabilities that code computed for the
# first 16 test images. tests/test_standalone_runs.py checks that today's code restores the run and
# computes the same. Run from the repository root:  sh tests/data/legacy_e286f77/make_fixture.sh
set -eu
PYTHON=${PYTHON:-python}
here=$(cd "$(dirname "$0")" && pwd)
old=$(mktemp -d)
git archive e286f77 | tar -x -C "$old"
rm -rf "$here/lenet5_digits" "$here/predictions.json"
cd "$old"
CNN_ZOO_CONV_AUTO=fixed "$PYTHON" -m experiments.train --config=configs/default.py:smoke \
  --config.num_train_steps=3 --config.log_every_steps=3 --config.batch_size=32 \
  --workdir="$here/lenet5_digits"
rm -f "$here/lenet5_digits/.lock"
CNN_ZOO_CONV_AUTO=fixed "$PYTHON" - "$here" <<'PY'
import json, os, sys
from cnn_zoo import predict
from cnn_zoo.data import sources
from cnn_zoo.train import inference
here = sys.argv[1]
run = inference.load(os.path.join(here, 'lenet5_digits'))
probabilities = run.probabilities(sources.load('digits').test.images[:16])
with open(os.path.join(here, 'predictions.json'), 'w', encoding='utf-8') as f:
  json.dump({'commit': 'e286f77', 'step': run.step, 'class_names': predict.class_names(run),
             'probabilities': probabilities.tolist()}, f, indent=1)
PY
rm -rf "$old"
