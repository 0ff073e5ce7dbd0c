#!/usr/bin/env bash
# ML-1M next item on a lent GPU, in one call of the device tool (issue 25, item 4: ">= 0.19 when a GPU is
# lent"). Two steps:
#
#   here:   scripts/gpu_ml1m.sh prepare [DATA]   # ML-1M and the lightgbm wheel into var/device (git-ignored)
#   there:  the device tool's run, carry ["var/device"], command "bash scripts/gpu_ml1m.sh run"
#
# `run` trains the SETTINGS below side by side on the one GPU, each for the same time expressed as steps
# (each setting's step time is measured first over CALIBRATION_STEPS steps run side by side, so the learning
# rate still decays to 0 at the last step; max_seconds is only a safety net), the time being BUDGET_S or what
# is left before DEADLINE_S less EVAL_RESERVE_S, whichever is less; then it evaluates each checkpoint on the
# validation and test splits (`models.evaluate`, full ranking). The setting to report is the one with the
# best validation NDCG@10: that rule is fixed here, before any run. The summary table, the reports and each
# log's tail come back in $OUT (the logs even when the call is stopped at its limit). The device machine
# holds torch, pandas, scipy and scikit-learn but not lightgbm (its package list:
# /work/.library/device/KINDS.md), hence the wheel.
#
# a dry run on CPU (small validation sample; the evaluation is the full one, a few minutes):
# DEVICE=cpu THREADS=1 BUDGET_S=15 CALIBRATION_STEPS=10 DEADLINE_S=100000 EXTRA_SET=val_windows=300 \
#   OUT=/tmp/gpu_out scripts/gpu_ml1m.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=var/device
LIGHTGBM_VERSION=4.6.0  # any release with a manylinux wheel; models/ needs >= 4.0

# name | --set assignments on top of ML-1M's defaults (models/training/presets/datasets.toml)
SETTINGS=(
  "hour-cpu|item_loss=sampled sampled_negatives=1024 transition_prior=true"
  "wide-full|d_model=128 n_heads=4 batch_size=256 item_loss=full transition_prior=true"
  "deep-200|d_model=128 n_layers=4 n_heads=4 max_len=200 batch_size=128 lr=1e-3 item_loss=full transition_prior=true"
)

prepare() {
  local data=${1:-../shared/data}
  mkdir -p "$HERE/wheels"
  rm -rf "$HERE/ml-1m" && cp -r "$data/ml-1m" "$HERE/ml-1m"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$HERE/wheels" "lightgbm==$LIGHTGBM_VERSION"
  du -sh "$HERE"
  echo "now: the device tool's run with carry [\"$HERE\"] and command \"bash scripts/gpu_ml1m.sh run\""
}

train() {  # name, steps, eval_every, max_seconds, out, assignments...
  local name=$1 steps=$2 every=$3 seconds=$4 out=$5
  shift 5
  python3 -m models.train --dataset ml-1m --data "$HERE/ml-1m" --device "$DEVICE" --threads "$THREADS" --out "$out" \
    --set "$@" max_steps="$steps" eval_every="$every" max_seconds="$seconds" ${EXTRA_SET:-} >"$WORK/$name.log" 2>&1
}

seconds_per_step() {  # metrics.json of a calibration run -> seconds a step, evaluation included
  python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['train_seconds'] / m['steps'])" "$1"
}

copy_logs() {  # on exit, even when the device tool stops the command at its limit: each log's tail
  local entry name file
  cp "$WORK"/reports/*.md "$OUT/" 2>/dev/null || true
  for entry in "${SETTINGS[@]}"; do
    name=${entry%%|*}
    for file in "calibrate-$name" "$name" "eval-$name"; do
      echo "== $file"
      tail -c 1200 "$WORK/$file.log" 2>/dev/null || true
    done >"$OUT/train-$name.log"
  done
}

run() {
  : "${OUT:?OUT: where the reports go}"
  DEVICE=${DEVICE:-cuda} BUDGET_S=${BUDGET_S:-240} CALIBRATION_STEPS=${CALIBRATION_STEPS:-200} THREADS=${THREADS:-2}
  # the whole run ends by DEADLINE_S (the device tool's call is at most 600 s): training gets what is left
  # after calibration, less EVAL_RESERVE_S for loading, choosing the prior's weight, saving and evaluating
  DEADLINE_S=${DEADLINE_S:-540} EVAL_RESERVE_S=${EVAL_RESERVE_S:-150}
  local started=$SECONDS
  WORK=$(mktemp -d)
  mkdir -p "$WORK/reports" "$OUT"
  trap copy_logs EXIT
  trap "exit 143" TERM INT  # so that the EXIT trap runs when the call is stopped
  if compgen -G "$HERE/wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$HERE"/wheels/*.whl
    export PYTHONPATH=/tmp/site:$PWD
  else
    export PYTHONPATH=$PWD
  fi
  export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
  { date -u; python3 -V; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    python3 -c "import lightgbm; print('lightgbm', lightgbm.__version__)" 2>&1 | tail -1; } | tee "$OUT/summary.md"

  local entry name sets per_step steps budget
  for entry in "${SETTINGS[@]}"; do  # 1. the step time of each setting, all side by side as in 2.
    name=${entry%%|*} sets=${entry#*|}
    # shellcheck disable=SC2086
    train "calibrate-$name" "$CALIBRATION_STEPS" "$CALIBRATION_STEPS" 90 "$WORK/calibrate-$name" $sets &
  done
  wait
  budget=$((DEADLINE_S - (SECONDS - started) - EVAL_RESERVE_S))
  budget=$((budget < BUDGET_S ? budget : BUDGET_S))
  echo "training budget: $budget s each, side by side" | tee -a "$OUT/summary.md"
  for entry in "${SETTINGS[@]}"; do  # 2. the budget as steps, side by side
    name=${entry%%|*} sets=${entry#*|}
    per_step=$(seconds_per_step "$WORK/calibrate-$name/metrics.json") || { echo "$name: calibration failed" | tee -a "$OUT/summary.md"; continue; }
    # 0.85: the calibration ran one validation pass, the run ten
    steps=$(python3 -c "print(max(100, int(0.85 * $budget / $per_step)))")
    echo "$name: $per_step s a step, $steps steps" | tee -a "$OUT/summary.md"
    # shellcheck disable=SC2086
    train "$name" "$steps" $((steps / 10 + 1)) $((budget + 20)) "$WORK/ckpt-$name" $sets &
  done
  wait
  for entry in "${SETTINGS[@]}"; do  # 3. validation and test, side by side
    name=${entry%%|*}
    python3 -m models.evaluate --dataset ml-1m --data-dir "$HERE/ml-1m" --model "$WORK/ckpt-$name" \
      --device "$DEVICE" --threads "$THREADS" --out "$WORK/reports/ml1m_gpu_$name.md" >"$WORK/eval-$name.log" 2>&1 &
  done
  wait
  {
    echo
    echo "| setting | steps | stopped by | train s | val NDCG@10 | test NDCG@10 | test HR@10 |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    for entry in "${SETTINGS[@]}"; do
      name=${entry%%|*}
      python3 - "$name" "$WORK/ckpt-$name/metrics.json" "$WORK/reports/ml1m_gpu_$name.md" <<'PY' || echo "| $name | failed: see train-$name.log |"
import json, sys
name, metrics, report = sys.argv[1:]
m = json.load(open(metrics))
rows = {line.split("|")[2].strip(): line.split("|") for line in open(report) if line.startswith("| ") and "ckpt-" in line}
val, test = rows["val"], rows["test"]  # columns: model, split, HR@5, NDCG@5, HR@10, NDCG@10, ...
print(f"| {name} | {m['steps']} | {m['stopped_by']} | {m['train_seconds']:.0f} | {val[6].strip()} | {test[6].strip()} | {test[5].strip()} |")
PY
    done
    echo
    echo "$((SECONDS - started)) s in all"
  } | tee -a "$OUT/summary.md"
}

case ${1:-} in
  prepare) shift; prepare "$@" ;;
  run) run ;;
  *) echo "usage: $0 prepare [DATA] | run" >&2; exit 2 ;;
esac
