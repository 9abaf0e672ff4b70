#!/usr/bin/env bash
# The timed benchmark runs behind docs/benchmarks.md, in the order and with the iteration counts used there
# (sized to finish in ~15 minutes on 2 cores). Memory is measured separately (run_all.sh memory), since peak
# RSS does not depend on machine load and the subprocesses take long. `run_all.sh deploy`: the deployment runtimes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-2}  # THREADS=1 on a shared box: 2 OpenMP threads next to a busy neighbour measure the neighbour
if [[ "${1:-timing}" == "deploy" ]]; then  # issue 13: ONNX Runtime / OpenVINO / compiled contenders, per-op profile
  for t in 1 2; do
    OMP_NUM_THREADS=$t $PY -m benchmarks.classifier_inference --models nasnet_a_large --batches 1 --threads $t \
        --iters 3 --check-images 2 --runtimes onnxruntime openvino --compile --onednn --bf16 --no-memory \
        --tag _deploy_t$t
    OMP_NUM_THREADS=$t $PY -m benchmarks.classifier_inference --models nasnet_a_large --batches 16 --threads $t \
        --iters 2 --check-images 16 --runtimes onnxruntime openvino --onednn --no-memory --tag _onednn_b16_t$t
  done
  $PY -m benchmarks.detector_latency --which mobile --iters 3 --no-memory --threads $THREADS \
      --runtimes onnxruntime openvino --bf16 --tag _deploy
  $PY -m benchmarks.profile_ops --threads $THREADS
  exit 0
fi
if [[ "${1:-timing}" == "memory" ]]; then
  $PY -m benchmarks.training_step --memory-only --batch 2 --tag _memory_b2
  $PY -m benchmarks.training_step --memory-only --batch 8 --tag _memory_b8
  $PY -m benchmarks.merge_results training_step_memory _b2 _b8
  $PY -m benchmarks.classifier_inference --models nasnet_a_large --batches 1 16 --memory-only --tag _memory_large
  $PY -m benchmarks.detector_latency --which mobile --memory-only --tag _memory_mobile
  $PY -m benchmarks.classifier_inference --models pnasnet5_large nasnet_a_mobile --batches 1 16 --memory-only \
      --tag _memory_others
  $PY -m benchmarks.detector_latency --which large --memory-only --tag _memory_large
  $PY -m benchmarks.merge_results classifier_inference_memory _large _others
  $PY -m benchmarks.merge_results detector_latency_memory _mobile _large
  exit 0
fi
$PY -m benchmarks.classifier_inference --models nasnet_a_large --batches 1 --iters 8 --no-memory --threads $THREADS --tag _large_b1
$PY -m benchmarks.classifier_inference --models nasnet_a_large --batches 16 --iters 2 --no-memory --threads $THREADS --tag _large_b16
$PY -m benchmarks.training_step --batch 2 --iters 2 --no-memory --threads $THREADS
$PY -m benchmarks.detector_latency --which mobile --iters 3 --no-memory --threads $THREADS --tag _mobile
$PY -m benchmarks.classifier_inference --models pnasnet5_large nasnet_a_mobile --batches 1 16 --iters 2 --no-memory --threads $THREADS --tag _others
$PY -m benchmarks.merge_results classifier_inference _large_b1 _large_b16 _others
$PY -m benchmarks.mac_efficiency --threads $THREADS
$PY -m benchmarks.detector_latency --which large --iters 2 --no-memory --threads $THREADS --tag _large
$PY -m benchmarks.classifier_inference --models nasnet_a_large --batches 1 16 --iters 2 --bf16 --no-memory --threads $THREADS --tag _bf16
$PY -m benchmarks.merge_results detector_latency _mobile _large
$PY -m benchmarks.report --write
