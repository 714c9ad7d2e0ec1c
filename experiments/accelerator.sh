#!/usr/bin/env bash
# One call on an accelerator host that has JAX but no network, TensorFlow or ml_collections:
# installs the carried wheels it lacks, unpacks the carried data, trains one config within a
# wall-clock budget (stopping in time with a checkpoint and results marked incomplete), and writes
# the run (results.json, metrics.jsonl, TensorBoard events, checkpoints) and the comparison report.
#
#   bash experiments/accelerator.sh OUT_DIR BUDGET_SECONDS CONFIG [--config.FIELD=VALUE ...]
#
# Carried along with the repository: wheels in $KIT_WHEELS (default: wheels/; e.g. from
# `pip download ml_collections==1.1.0 --no-deps -d wheels`), datasets packed by experiments.pack in
# $KIT_DATA (default: data/; NAME.jpeg.npz is unpacked to OUT_DIR/data/NAME.npz, so pass
# --config.dataset=npz:OUT_DIR/data/NAME.npz). CONFIG, KIT_WHEELS and KIT_DATA are relative to the
# repository root, where the kit runs. Rerunning the same command resumes the run.
# KIT_BESIDE: a command run beside the training (e.g. the PyTorch reference on the same data),
# started once the data are unpacked, cut at the budget's end and waited for before the report;
# its output goes to OUT_DIR/beside.log.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash experiments/accelerator.sh OUT_DIR BUDGET_SECONDS CONFIG [--config.FIELD=VALUE ...]" >&2
  exit 2
fi
start=$(date +%s)
out=$(realpath -m "$1"); budget=$2; config=$3; shift 3
if ! [[ $budget =~ ^[0-9]+$ && ${KIT_RESERVE_S:-60} =~ ^[0-9]+$ ]]; then
  echo "kit: BUDGET_SECONDS ($budget) and KIT_RESERVE_S must be whole seconds" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
wheels=${KIT_WHEELS:-wheels}; data=${KIT_DATA:-data}
mkdir -p "$out/data" "$out/runs"
python=${PYTHON:-python3}

if ! "$python" -c 'import ml_collections' 2>/dev/null; then
  echo "kit: installing ml_collections from $wheels"
  "$python" -m pip install --quiet --no-index --find-links "$wheels" ml_collections
fi
shopt -s nullglob
for packed in "$data"/*.jpeg.npz; do
  npz="$out/data/$(basename "$packed" .jpeg.npz).npz"
  [ -e "$npz" ] || "$python" -m experiments.pack --unpack --packed="$packed" --npz="$npz"
done
# What is left for training, less a reserve for the final evaluation and the report.
reserve=${KIT_RESERVE_S:-60}
left=$(( budget - ($(date +%s) - start) - reserve ))
if [ "$left" -le 0 ]; then
  echo "kit: no time left for training (budget ${budget}s, reserve ${reserve}s)" >&2
  exit 2
fi
beside=""
if [ -n "${KIT_BESIDE:-}" ]; then
  echo "kit: beside the training: $KIT_BESIDE (log: $out/beside.log)"
  timeout --signal=TERM --kill-after=10 "$(( left + reserve / 2 ))" bash -c "$KIT_BESIDE" \
      >"$out/beside.log" 2>&1 &
  beside=$!
fi
echo "kit: training $config for at most ${left}s"
status=0
"$python" -m experiments.train --config="$config" --workdir="$out/runs/run" \
    --config.time_budget_s="$left" ${@+"$@"} || status=$?
if [ -n "$beside" ]; then
  beside_status=0; wait "$beside" || beside_status=$?
  echo "kit: the command beside ended with exit status $beside_status"
fi
"$python" -m experiments.compare --workdir="$out/runs" || true
echo "kit: done in $(( $(date +%s) - start ))s (train exit status $status)"
exit $status
