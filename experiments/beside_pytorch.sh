#!/usr/bin/env bash
# One accelerator call for a reproduction: a CIFAR recipe of cnn_zoo and the PyTorch reference
# (torch_train.py, the recipe as the PyTorch reimplementation writes it) on the same pixels and
# the same GPU at once, then the reproduction table (each side's test error over its seeds beside
# the paper's) in OUT_DIR/runs/reproduction.md.
#
#   bash experiments/beside_pytorch.sh OUT_DIR BUDGET_S TORCH_TRAIN CONFIG [--config.FIELD=VALUE ...]
#
# CONFIG is a cnn_zoo recipe such as configs/cifar10_resnet.py:resnet20 (its seeds: the config's,
# e.g. --config.seeds=0,1,2 for replicas); TORCH_TRAIN the reference script's path inside the
# tree that travels. TORCH_MODEL (default: CONFIG's model after the colon), TORCH_SEEDS (default
# "0", run one after another), TORCH_FLAGS (default "--tf32": TF32 as JAX's default precision
# allows; --compile, --channels-last) and TORCH_ARGS (e.g. "--steps 200 --device cpu" for a smoke
# run) are passed to it. Data, wheels and the budget work as in experiments/accelerator.sh: the
# packed dataset NAME.jpeg.npz is unpacked to OUT_DIR/data/NAME.npz, which both sides read
# (KIT_DATASET, default cifar10).
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: bash experiments/beside_pytorch.sh OUT_DIR BUDGET_S TORCH_TRAIN CONFIG [overrides]" >&2
  exit 2
fi
out=$(realpath -m "$1"); budget=$2; torch_train=$(realpath -m "$3"); config=$4; shift 4
if [ ! -f "$torch_train" ]; then
  echo "beside_pytorch: TORCH_TRAIN not found: $torch_train (copy ../shared/bench/torch_train.py into the tree)" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
npz="$out/data/${KIT_DATASET:-cifar10}.npz"
model=${TORCH_MODEL:-${config##*:}}
mkdir -p "$out/torch"
# Both frameworks on one GPU: JAX takes what it needs rather than 75% of the memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
runs=""
for seed in ${TORCH_SEEDS:-0}; do
  runs+="$python $torch_train --npz $npz --model $model --seed $seed ${TORCH_FLAGS:-"--tf32"} \
${TORCH_ARGS:-} --json $out/torch/${model}_s$seed.json; "
done
status=0
KIT_BESIDE="$runs" bash experiments/accelerator.sh "$out" "$budget" "$config" \
    --config.dataset="npz:$npz" ${@+"$@"} || status=$?
shopt -s nullglob
results=("$out"/torch/*.json)
if [ ${#results[@]} -gt 0 ]; then
  "$python" -m experiments.compare --workdir="$out/runs" \
      --torch_results="$(IFS=,; echo "${results[*]}")" || status=$?
else
  echo "beside_pytorch: no PyTorch result came back (see $out/beside.log)" >&2
  [ "$status" -ne 0 ] || status=1
fi
exit $status
