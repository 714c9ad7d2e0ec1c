#!/usr/bin/env bash
# The shared step against the PyTorch reference on the same GPU: experiments.benchmark and
# torch_ref.py for the same models at batch 128 (inference 256, as the reference), float32 (TF32
# allowed on both sides) and bfloat16. One JSON file per framework and dtype in OUT_DIR, each
# written after every model, so a run cut short keeps what it measured.
#
#   bash experiments/gpu_table.sh OUT_DIR TORCH_REF [MODELS] [DTYPES]
#
# TORCH_REF is the reference script's path; MODELS defaults to the issue's five, DTYPES to
# "float32 bfloat16". The table is then `python -m experiments.benchmark --side_by_side=OUT_DIR`.
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash experiments/gpu_table.sh OUT_DIR TORCH_REF [MODELS] [DTYPES]" >&2
  exit 2
fi
out=$1; torch_ref=$2
models=${3:-resnet20,resnet56,vgg11_bn_cifar,densenet_bc_100,resnet50}
dtypes=${4:-float32 bfloat16}
python=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$out"
status=0
for dtype in $dtypes; do
  tf32=(); [ "$dtype" = float32 ] && tf32=(--tf32)
  "$python" "$torch_ref" --device cuda --dtype "$dtype" ${tf32[@]+"${tf32[@]}"} --batch 128 \
      --min-time 2 --models "$models" --json "$out/torch_$dtype.json" || status=$?
  "$python" -m experiments.benchmark --nopeak --batch_size=128 --infer_batch_size=256 \
      --dtype="$dtype" --models="$models" --json="$out/jax_$dtype.json" || status=$?
done
exit $status
