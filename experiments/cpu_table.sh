#!/usr/bin/env bash
# The shared step against the PyTorch reference on this CPU, each side one process per model so
# that each model's peak memory is its own: experiments.torch_side (torch_ref.py per model) and
# experiments.benchmark, at each model's default batch (128 for 32x32 inputs, 16 for 224x224),
# float32. One JSON per side in OUT_DIR (torch_cpu.json, jax_cpu.json), each written after every
# model, so a run cut short keeps what it measured; then the table is printed.
#
#   bash experiments/cpu_table.sh OUT_DIR TORCH_PYTHON TORCH_REF [MODELS] [REMAT]
#
# TORCH_PYTHON is the interpreter that has torch, TORCH_REF the reference script's path; MODELS
# defaults to the seven of docs/performance.md's CPU table, REMAT (JAX side) to none (blocks or
# dots only for models with blocks: ResNets, Inception, DenseNets; others are refused). Extra
# arguments for torch_ref.py: TORCH_ARGS="--min-time 2"; for experiments.benchmark:
# JAX_ARGS="--steps=20".
# The table alone again: `python -m experiments.benchmark --side_by_side=OUT_DIR`.
set -uo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash experiments/cpu_table.sh OUT_DIR TORCH_PYTHON TORCH_REF [MODELS] [REMAT]" >&2
  exit 2
fi
out=$1; torch_python=$2; torch_ref=$3
models=${4:-lenet5,resnet20,resnet56,vgg11_bn_cifar,densenet_bc_100,alexnet,resnet18}
remat=${5:-none}
python=${PYTHON:-python3}
case $out in /*) ;; *) out=$PWD/$out ;; esac  # the paths hold after the cd below
case $torch_ref in /*) ;; *) torch_ref=$PWD/$torch_ref ;; esac
case $torch_python in */*) case $torch_python in /*) ;; *) torch_python=$PWD/$torch_python ;; esac ;; esac
cd "$(dirname "$0")/.."
mkdir -p "$out"
status=0
"$python" -m experiments.torch_side --torch_python="$torch_python" --torch_ref="$torch_ref" \
    --models="$models" --torch_args="${TORCH_ARGS:-}" --json="$out/torch_cpu.json" || status=$?
# shellcheck disable=SC2086  # JAX_ARGS is a list of flags
"$python" -m experiments.benchmark --models="$models" --remat="$remat" ${JAX_ARGS:-} \
    --json="$out/jax_cpu.json" || status=$?
"$python" -m experiments.benchmark --side_by_side="$out" || status=$?
exit $status
