#!/usr/bin/env bash
# The GPU check of issue 13, for a machine with one (or two) NVIDIA GPUs; prints ONE table at the end.
#
#   benchmarks/gpu_check.sh            # on the GPU machine, from anywhere; at most 8 minutes in all
#   benchmarks/gpu_check.sh --cpu      # the same stages on the CPU at toy sizes: checks the script itself
#
# Stages (each has its own time limit, and none may run past the 8-minute budget: a stage gets
# min(its limit, what is left), a stage with under 20 s left is skipped and says so):
#   setup      $PY if set, else .venv/bin/python if present, else a python3 that imports torch and
#              nasnet_det, else `make install-test` (needs network: offline, it fails and says so)
#   tests      the test files that mention CUDA (grep -il cuda tests/test_*.py), not-slow tests
#   det_train  20 Faster R-CNN iterations with AMP at the Mobile config's size (600x600,
#              configs/nasnet_a_mobile_frcnn.yaml) on synthetic shapes (tools/make_synthetic_dataset.py)
#   ws_search  a weight-sharing search (supernet + PPO) on the device: 2 short passes over generated
#              32x32 images, the supernet's device path end to end
#   cls_eager  classifier inference, timm nasnetalarge vs ours (plain; ours_fast = BN folded +
#              channels_last; ours_bf16 = bf16 autocast), batch 16 @331
#   cls_comp   the same with optimize_for_inference(compile=True) (inductor; compile time reported apart)
#   ddp_nccl   2-process pretraining smoke test, torchrun + NCCL, on a tiny generated ImageFolder,
#              if the machine has 2 GPUs; otherwise skipped with a message
# Logs: $GPU_CHECK_OUT (default /tmp/nasnet_gpu_check), one <stage>.log each.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
[[ "${1:-}" == "--cpu" ]] && DEVICE=cpu
BUDGET=${GPU_CHECK_BUDGET:-480}
OUT=${GPU_CHECK_OUT:-/tmp/nasnet_gpu_check}
mkdir -p "$OUT"
START=$(date +%s)
ROWS=()

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# image_folder DIR CLASSES TRAIN_PER_CLASS VAL_PER_CLASS: random 32x32 PNGs in DIR/{train,val}/<class>/
image_folder() {
  "$PY" - "$@" <<'EOF' >"$OUT/imagefolder_$(basename "$1").log" 2>&1
import sys
from pathlib import Path

import numpy as np
from PIL import Image

root, classes, n_train, n_val = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
for split, n in (("train", n_train), ("val", n_val)):
    for cls in range(classes):
        folder = root / split / f"c{cls}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
EOF
}

# run_stage NAME LIMIT_S DETAIL_CMD -- COMMAND...: runs COMMAND with its log in $OUT/NAME.log;
# DETAIL_CMD (a shell snippet reading that log) gives the table's detail column.
run_stage() {
  local name=$1 limit=$2 detail=$3; shift 4
  local avail; avail=$(left)
  (( avail < limit )) && limit=$avail
  if (( limit < 20 )); then
    ROWS+=("$name|skipped|0|under 20 s of the ${BUDGET}-s budget left"); return
  fi
  local t0=$(date +%s) rc
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1; rc=$?
  local secs=$(( $(date +%s) - t0 )) status=ok
  if (( rc == 124 || rc == 137 )); then status="timeout (${limit} s)"; elif (( rc != 0 )); then status="FAILED rc=$rc"; fi
  ROWS+=("$name|$status|$secs|$(LOG="$OUT/$name.log" bash -c "$detail" 2>/dev/null | tr '|\n' '/ ' | cut -c1-150)")
}

# --- setup -----------------------------------------------------------------------------------------
# $PY if given, else the checkout's .venv, else a python3 that already has the project, else install it
if [[ -n "${PY:-}" ]]; then :
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
elif python3 -c "import torch, nasnet_det" 2>/dev/null; then PY=python3
else
  run_stage install 300 'tail -n 2 "$LOG"' -- make install-test
  PY=.venv/bin/python
fi
GPUS=0
if ! "$PY" -c "import torch, nasnet_det, timm" >"$OUT/setup_check.log" 2>&1; then
  SETUP="FAILED|$PY cannot import torch, nasnet_det and timm (see $OUT/setup_check.log)"; DEVICE=none
elif [[ $DEVICE == cuda ]]; then
  GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
  if (( GPUS < 1 )); then SETUP="FAILED|torch sees no CUDA device (--cpu checks the script without one)"; DEVICE=none
  else SETUP="ok|$PY, $GPUS GPU(s): $(nvidia-smi -L 2>/dev/null | head -n 2 | cut -c1-60 | tr '\n' ' ')"; fi
else
  SETUP="ok|$PY, --cpu: toy sizes on the CPU"
fi
ROWS+=("setup|${SETUP%%|*}|$(( $(date +%s) - START ))|${SETUP#*|}")

if [[ $DEVICE != none ]]; then
  if [[ $DEVICE == cuda ]]; then
    SIZE=(INPUT.FIXED_SIZE_TRAIN "(600, 600)" INPUT.FIXED_SIZE_TEST "(600, 600)")
    DET_DEVICE=(MODEL.DEVICE cuda SOLVER.AMP.ENABLED True SOLVER.MAX_ITER 20 SOLVER.IMS_PER_BATCH 2)
    CLS=(--models nasnet_a_large --batches 16 --iters 5 --check-images 16 --bf16)
    DDP_DEVICE=(train.device cuda)
    WS_DEVICE=(child.device cuda)
  else  # the script's own check: toy sizes; detectron2's AMPTrainer needs CUDA
    SIZE=(INPUT.FIXED_SIZE_TRAIN "(128, 128)" INPUT.FIXED_SIZE_TEST "(128, 128)" MODEL.NASNET.NUM_CELLS 3
          MODEL.NASNET.PENULTIMATE_FILTERS 96)
    DET_DEVICE=(MODEL.DEVICE cpu SOLVER.AMP.ENABLED False SOLVER.MAX_ITER 2 SOLVER.IMS_PER_BATCH 1)
    CLS=(--models nasnet_a_mobile --batches 1 --iters 1 --check-images 1 --threads 1)
    DDP_DEVICE=(train.device cpu)
    WS_DEVICE=(child.device cpu child.network.num_cells 1 child.network.num_conv_filters 8)
  fi

  # --- the CUDA-aware tests ------------------------------------------------------------------------
  mapfile -t CUDA_TESTS < <(grep -il cuda tests/test_*.py)
  if (( ${#CUDA_TESTS[@]} == 0 )); then ROWS+=("tests|skipped|0|no test file mentions cuda")
  else
    run_stage tests 150 'tail -n 1 "$LOG"' -- "$PY" -m pytest -q -m "not slow" -p no:cacheprovider "${CUDA_TESTS[@]}"
    ROWS[-1]="${ROWS[-1]} [${CUDA_TESTS[*]}]"
  fi

  # --- detector training, AMP --------------------------------------------------------------------
  DATA=$OUT/synthetic
  "$PY" tools/make_synthetic_dataset.py --output "$DATA" --num-train 16 --num-val 4 >"$OUT/data.log" 2>&1
  run_stage det_train 150 'grep -o "iter: [0-9]*  total_loss: [0-9.]*" "$LOG" | tail -n 1; grep -o "Overall training speed.*" "$LOG"' \
    -- "$PY" tools/train_net.py --config-file configs/nasnet_a_mobile_frcnn.yaml \
       --dataset-json "$DATA/annotations/train.json" --image-root "$DATA/train" \
       --test-json "$DATA/annotations/val.json" --test-image-root "$DATA/val" \
       "${DET_DEVICE[@]}" "${SIZE[@]}" MODEL.ROI_HEADS.NUM_CLASSES 5 MODEL.WEIGHTS "" \
       SOLVER.CHECKPOINT_PERIOD 100000 SOLVER.WARMUP_ITERS 5 TEST.EVAL_PERIOD 0 DATALOADER.NUM_WORKERS 2 \
       OUTPUT_DIR "$OUT/det_train"

  # --- weight-sharing search on the device (supernet, PPO controller, durable log) -----------------
  SEARCH_DATA=$OUT/search_images
  image_folder "$SEARCH_DATA" 10 64 0
  run_stage ws_search 60 'grep -E "^(search|error)" "$LOG" | tail -n 1; grep -o "\"device\": \"[a-z:0-9]*\"" "$OUT/ws_search/epochs.json" | head -n 1' \
    -- "$PY" tools/search.py --config-file configs/search/cifar10_weight_sharing.yaml --output "$OUT/ws_search" \
       --no-progress --no-report data.root "$SEARCH_DATA" data.val_size 128 weight_sharing.epochs 2 num_archs 10 \
       weight_sharing.final_archs 4 weight_sharing.eval_batch_size 64 "${WS_DEVICE[@]}"

  # --- classifier inference, timm vs ours ----------------------------------------------------------
  CLS_DETAIL='grep -E "^\| [a-z_]+ \| (timm|ours)" "$LOG" | awk -F"|" "{printf \"%s %s ms %sx timm; \", \$3, \$5, \$8}"'
  run_stage cls_eager 120 "$CLS_DETAIL" -- "$PY" -m benchmarks.classifier_inference "${CLS[@]}" --device "$DEVICE" \
    --no-memory --out "$OUT" --tag _gpu_eager
  run_stage cls_comp 150 "$CLS_DETAIL; grep -o 'first call (compilation) [0-9.]* s' \"\$LOG\"" \
    -- "$PY" -m benchmarks.classifier_inference "${CLS[@]}" --device "$DEVICE" --compile --no-memory --out "$OUT" \
       --tag _gpu_compiled

  # --- 2-process pretraining over NCCL -------------------------------------------------------------
  if [[ $DEVICE == cuda ]] && (( GPUS < 2 )); then
    ROWS+=("ddp_nccl|skipped|0|this machine has $GPUS GPU; the NCCL smoke test needs 2")
  else
    IMAGES=$OUT/imagefolder
    image_folder "$IMAGES" 2 16 4
    TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc_per_node 2)
    run_stage ddp_nccl 90 'grep -iE "step|loss|error" "$LOG" | tail -n 1' \
      -- "${TORCHRUN[@]}" tools/pretrain.py --config-file configs/pretrain/cifar10_small.yaml \
         data.train_dir "$IMAGES/train" data.val_dir "$IMAGES/val" train.output_dir "$OUT/pretrain" \
         train.max_steps 4 train.batch_size 8 train.resume never "${DDP_DEVICE[@]}"
    [[ $DEVICE == cpu ]] && ROWS[-1]="${ROWS[-1]} (--cpu: gloo, not NCCL)"
  fi
fi

echo
echo "GPU check ($DEVICE), $(date -u '+%Y-%m-%d %H:%M UTC'), $(( $(date +%s) - START )) s of a ${BUDGET}-s budget; logs in $OUT"
echo "| stage | result | seconds | detail |"
echo "|---|---|---|---|"
for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
