#!/usr/bin/env bash
# The GPU check of issue 13, for a machine with one (or two) NVIDIA GPUs; prints ONE table at the end
# and exits 1 if a required stage failed, timed out or was skipped for lack of time (else 0).
#
#   benchmarks/gpu_check.sh            # on the GPU machine, from anywhere; at most 8 minutes in all
#   benchmarks/gpu_check.sh --cpu      # the same stages on the CPU at toy sizes: checks the script itself
#
# Stages, in this order, each with its own time limit (a stage gets min(its limit, what is left of the
# 480-s budget); one with under 20 s left is skipped and says so). The limits add up to the budget:
# setup ~20 s + 70 + 110 + 70 + cls_comp + 60 (ddp_nccl) = 480 s leaves cls_comp at least 150 s, and
# cls_comp gets all the time the stages before it leave unused (less ddp_nccl's 60 s if that runs).
#   setup      $PY if set, else .venv/bin/python if present, else a python3 that imports torch and
#              nasnet_det, else `make install-test` (needs network: offline, it fails and says so)
#   tests      (70 s) the few tests that really run on the GPU there (CUDA_TESTS below), not grep's pick
#   det_train  (110 s) 20 Faster R-CNN iterations with AMP at the Mobile config's size (600x600,
#              configs/nasnet_a_mobile_frcnn.yaml) on synthetic shapes (tools/make_synthetic_dataset.py)
#   cls_eager  (70 s) classifier inference, timm nasnetalarge vs ours (plain; ours_fast = BN folded +
#              channels_last; ours_bf16 = bf16 autocast), batch 16 @331
#   cls_comp   (the rest) the same with optimize_for_inference(compile=True) (inductor; compile time
#              reported apart), on nasnet_a_mobile @224, batch 16: a cold inductor compile of Large
#              takes minutes and would not fit; timm has no Mobile, so it compares with ours plain
#   ddp_nccl   (60 s) 2-process pretraining smoke test, torchrun + NCCL, on a tiny generated ImageFolder,
#              if the machine has 2 GPUs; otherwise skipped with a message (not a failure)
# fp32 in the classifier stages is fp32: NVIDIA_TF32_OVERRIDE=0 turns off the TF32 convolutions that
# cuDNN would otherwise use on an A100/H100 (torch.backends.cudnn.allow_tf32 is True by default).
# Logs and outputs: $GPU_CHECK_OUT/run (default /tmp/nasnet_gpu_check/run), emptied at the start of
# each run (so that a rerun with the same $GPU_CHECK_OUT starts fresh), one <stage>.log per stage.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
[[ "${1:-}" == "--cpu" ]] && DEVICE=cpu
BUDGET=${GPU_CHECK_BUDGET:-480}
OUT=${GPU_CHECK_OUT:-/tmp/nasnet_gpu_check}
# Every output of a run lives in $RUN, emptied first: a rerun must not meet the last run's datasets,
# checkpoints or locked output folders (tools refuse or resume those).
RUN=$OUT/run
rm -rf -- "$RUN" && mkdir -p "$RUN" || { echo "gpu_check: cannot empty $RUN" >&2; exit 1; }
START=$(date +%s)
ROWS=()
FAILED=0  # 1 once a required stage failed, timed out or was skipped for lack of time: the exit status

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# image_folder DIR CLASSES TRAIN_PER_CLASS VAL_PER_CLASS: random 32x32 PNGs in DIR/{train,val}/<class>/
image_folder() {
  "$PY" - "$@" <<'EOF' >"$RUN/imagefolder_$(basename "$1").log" 2>&1
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

# run_stage NAME LIMIT_S DETAIL_CMD -- COMMAND...: runs COMMAND with its log in $RUN/NAME.log;
# DETAIL_CMD (a shell snippet reading that log) gives the table's detail column. Every stage run
# through here is required: a failure, a timeout or a skip for lack of time sets FAILED.
run_stage() {
  local name=$1 limit=$2 detail=$3; shift 4
  local avail; avail=$(left)
  (( avail < limit )) && limit=$avail
  if (( limit < 20 )); then
    ROWS+=("$name|skipped|0|under 20 s of the ${BUDGET}-s budget left"); FAILED=1; return
  fi
  local t0=$(date +%s) rc
  timeout --kill-after=10 "$limit" "$@" >"$RUN/$name.log" 2>&1; rc=$?
  local secs=$(( $(date +%s) - t0 )) status=ok
  if (( rc == 124 || rc == 137 )); then status="timeout (${limit} s)"; elif (( rc != 0 )); then status="FAILED rc=$rc"; fi
  [[ $status == ok ]] || FAILED=1
  [[ $status == ok ]] || detail="$detail; tail -n 1 \"\$LOG\""  # a failure says why (its last log line)
  ROWS+=("$name|$status|$secs|$(LOG="$RUN/$name.log" bash -c "$detail" 2>/dev/null | tr '|\n' '/ ' | cut -c1-240)")
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
if ! "$PY" -c "import torch, nasnet_det, timm" >"$RUN/setup_check.log" 2>&1; then
  SETUP="FAILED|$PY cannot import torch, nasnet_det and timm (see $RUN/setup_check.log)"; DEVICE=none
elif [[ $DEVICE == cuda ]]; then
  GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
  if (( GPUS < 1 )); then SETUP="FAILED|torch sees no CUDA device (--cpu checks the script without one)"; DEVICE=none
  else SETUP="ok|$PY, $GPUS GPU(s): $(nvidia-smi -L 2>/dev/null | head -n 2 | cut -c1-60 | tr '\n' ' ')"; fi
else
  SETUP="ok|$PY, --cpu: toy sizes on the CPU"
fi
ROWS+=("setup|${SETUP%%|*}|$(( $(date +%s) - START ))|${SETUP#*|}")
[[ ${SETUP%%|*} == ok ]] || FAILED=1

if [[ $DEVICE != none ]]; then
  if [[ $DEVICE == cuda ]]; then
    SIZE=(INPUT.FIXED_SIZE_TRAIN "(600, 600)" INPUT.FIXED_SIZE_TEST "(600, 600)")
    DET_DEVICE=(MODEL.DEVICE cuda SOLVER.AMP.ENABLED True SOLVER.MAX_ITER 20 SOLVER.IMS_PER_BATCH 2)
    CLS=(--models nasnet_a_large --batches 16 --iters 5 --check-images 16 --bf16)
    CLS_COMP=(--models nasnet_a_mobile --batches 16 --iters 5 --check-images 16)
    CLS_NOTE="fp32 without TF32: "
    # (no single quote in these notes: they go into the detail snippet's quotes)
    COMP_NOTE="nasnet_a_mobile b16 @224 (Large: compile too long; no timm Mobile), $CLS_NOTE"
    DDP_DEVICE=(train.device cuda)
  else  # the script's own check: toy sizes; detectron2's AMPTrainer needs CUDA
    SIZE=(INPUT.FIXED_SIZE_TRAIN "(128, 128)" INPUT.FIXED_SIZE_TEST "(128, 128)" MODEL.NASNET.NUM_CELLS 3
          MODEL.NASNET.PENULTIMATE_FILTERS 96)
    DET_DEVICE=(MODEL.DEVICE cpu SOLVER.AMP.ENABLED False SOLVER.MAX_ITER 2 SOLVER.IMS_PER_BATCH 1)
    CLS=(--models nasnet_a_mobile --batches 1 --iters 1 --check-images 1 --threads 1)
    CLS_COMP=("${CLS[@]}")
    CLS_NOTE="" COMP_NOTE="nasnet_a_mobile b1 @224: "
    DDP_DEVICE=(train.device cpu)
  fi
  # ddp_nccl runs last and keeps its 60 s: cls_comp, before it, may not eat them
  DDP_RESERVE=60
  [[ $DEVICE == cuda ]] && (( GPUS < 2 )) && DDP_RESERVE=0

  # --- the tests that run on the GPU there -------------------------------------------------------
  # Curated: of the test files, only these put tensors on a GPU when one is present (read from
  # `grep -n cuda tests/*.py` and the configs' device "auto"); grep -il cuda picked files that merely
  # name "cuda" (e.g. as a bad config value). Left out on purpose: test_pretrain_run.py's bit-exact
  # kill/resume (an exactness contract of the CPU, not of cuDNN) and its 2-process test (ddp_nccl
  # below does that on GPUs; with device auto on 1 GPU its second rank would ask for GPU 1).
  CUDA_TESTS=(
    # the supernet against the stand-alone network; its [True-cuda-projection] case runs on the GPU
    tests/test_search_weight_sharing.py::test_subnetwork_equals_standalone_network_with_the_shared_weights
    # a weight-sharing search end to end (supernet, PPO, cost front) on child.device auto = the GPU
    tests/test_search_weight_sharing.py::test_cost_limit_and_front_in_weight_sharing_mode
    # pretraining with AMP (fp16 + GradScaler on CUDA) and channels_last, train.device auto = the GPU
    tests/test_pretrain_run.py::test_amp_bf16_and_channels_last_run
  )
  run_stage tests 70 'tail -n 1 "$LOG"' -- "$PY" -m pytest -q -p no:cacheprovider -rs "${CUDA_TESTS[@]}"
  ROWS[-1]="${ROWS[-1]} (${#CUDA_TESTS[@]} GPU-path tests, CUDA_TESTS in the script)"

  # --- detector training, AMP --------------------------------------------------------------------
  DATA=$RUN/synthetic
  if ! "$PY" tools/make_synthetic_dataset.py --output "$DATA" --num-train 16 --num-val 4 >"$RUN/data.log" 2>&1; then
    ROWS+=("det_train|FAILED|0|tools/make_synthetic_dataset.py failed: see $RUN/data.log"); FAILED=1
  else
    run_stage det_train 110 'grep -o "iter: [0-9]*  total_loss: [0-9.]*" "$LOG" | tail -n 1; grep -o "Overall training speed.*" "$LOG"' \
      -- "$PY" tools/train_net.py --config-file configs/nasnet_a_mobile_frcnn.yaml \
         --dataset-json "$DATA/annotations/train.json" --image-root "$DATA/train" \
         --test-json "$DATA/annotations/val.json" --test-image-root "$DATA/val" \
         "${DET_DEVICE[@]}" "${SIZE[@]}" MODEL.ROI_HEADS.NUM_CLASSES 5 MODEL.WEIGHTS "" \
         SOLVER.CHECKPOINT_PERIOD 100000 SOLVER.WARMUP_ITERS 5 TEST.EVAL_PERIOD 0 DATALOADER.NUM_WORKERS 2 \
         OUTPUT_DIR "$RUN/det_train"
  fi

  # --- classifier inference, timm vs ours ----------------------------------------------------------
  # NVIDIA_TF32_OVERRIDE=0: the fp32 rows are fp32 (cuDNN would use TF32 for them on an A100/H100;
  # classifier_inference.py leaves torch.backends.cudnn.allow_tf32 at its default, True)
  CLS_ENV=(env NVIDIA_TF32_OVERRIDE=0)
  # detail: "<contender> <images/s>[, <speed-up>x timm]; ..." from its printed table (images/s: ms/image
  # has no decimals, too coarse on a GPU)
  CLS_AWK='{ gsub(/ /, ""); printf "%s %s img/s%s; ", $3, $7, ($8 == "-" ? "" : ", " $8 "x timm") }'
  CLS_DETAIL="grep -E '^\\| [a-z_]+ \\| (timm|ours)' \"\$LOG\" | awk -F'|' '$CLS_AWK'"
  run_stage cls_eager 70 "echo -n '$CLS_NOTE'; $CLS_DETAIL" \
    -- "${CLS_ENV[@]}" "$PY" -m benchmarks.classifier_inference "${CLS[@]}" --device "$DEVICE" \
       --no-memory --out "$RUN" --tag _gpu_eager
  # all the time left but ddp_nccl's
  run_stage cls_comp $(( $(left) - DDP_RESERVE )) \
    "echo -n '$COMP_NOTE'; $CLS_DETAIL; grep -o 'first call (compilation) [0-9.]* s' \"\$LOG\"" \
    -- "${CLS_ENV[@]}" "$PY" -m benchmarks.classifier_inference "${CLS_COMP[@]}" --device "$DEVICE" --compile \
       --no-memory --out "$RUN" --tag _gpu_compiled

  # --- 2-process pretraining over NCCL -------------------------------------------------------------
  if [[ $DEVICE == cuda ]] && (( GPUS < 2 )); then
    ROWS+=("ddp_nccl|skipped|0|this machine has $GPUS GPU; the NCCL smoke test needs 2")
  else
    IMAGES=$RUN/imagefolder
    image_folder "$IMAGES" 2 16 4
    TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc_per_node 2)
    run_stage ddp_nccl 60 'grep -iE "step|loss|error" "$LOG" | tail -n 1' \
      -- "${TORCHRUN[@]}" tools/pretrain.py --config-file configs/pretrain/cifar10_small.yaml \
         data.train_dir "$IMAGES/train" data.val_dir "$IMAGES/val" train.output_dir "$RUN/pretrain" \
         train.max_steps 4 train.batch_size 8 train.resume never "${DDP_DEVICE[@]}"
    [[ $DEVICE == cpu ]] && ROWS[-1]="${ROWS[-1]} (--cpu: gloo, not NCCL)"
  fi
fi

echo
echo "GPU check ($DEVICE), $(date -u '+%Y-%m-%d %H:%M UTC'), $(( $(date +%s) - START )) s of a ${BUDGET}-s budget; logs in $RUN"
echo "| stage | result | seconds | detail |"
echo "|---|---|---|---|"
for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
(( FAILED )) && echo "gpu_check: a required stage failed, timed out or was skipped for lack of time (exit 1)"
exit "$FAILED"
