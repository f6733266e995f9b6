#!/usr/bin/env bash
# The trainer's GPU tests, in one go on the GPU machine: builds the torch side (qlorad-train and
# the kernels' operator library, no gRPC there), then runs each trainer test of tests/gpu against
# it (eval against transformers, LoRA dropout on lm_head, load and offload memory, activation
# recompute, a step retried after running out of memory) and the operator tests of the kernels
# the trainer calls. run.sh is the kernels' and benchmarks' counterpart.
# Usage: tests/gpu/trainer.sh [OUT_DIR]   (logs are written there; default ./gpu-out)
#        QLORAD_GPU_TESTS="test_eval_cuda ..." runs only those files of tests/gpu.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-$ROOT/gpu-out}"
BUILD="$ROOT/build-gpu"
mkdir -p "$OUT"
status=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
fail() { echo "FAILED: $*"; status=1; }

step "configure + build"
bash "$ROOT/tests/gpu/build_torch_side.sh" "$OUT" qlorad-train qlorad_ops || exit 1

step "pytest: the trainer on CUDA, and the operators it calls"
export QLORAD_BIN_DIR="$BUILD/bin" QLORAD_OPS_LIB="$BUILD/kernels/libqlorad_ops.so"
TESTS="${QLORAD_GPU_TESTS:-test_eval_cuda test_lm_head_dropout_cuda test_gpu_memory \
  test_activation_checkpointing test_nf4_ops test_ce_ops test_ce_online test_rope_swiglu_ops \
  test_rms_norm_ops test_train_cuda test_oom_resilience test_memory_estimate}"
for t in $TESTS; do
  # Each file in its own process, -X faulthandler, -s for the printed peaks; full log kept.
  python3 -X faulthandler -m pytest -v -s -p no:cacheprovider "$ROOT/tests/gpu/$t.py" \
    > "$OUT/$t.log" 2>&1
  rc=$?
  grep -E "peak|FAILED|SKIPPED|ERROR| passed| failed| skipped" "$OUT/$t.log" | tail -12
  [ "$rc" = 0 ] || fail "pytest $t (rc $rc)"
done

echo
[ "$status" = 0 ] && echo "ALL TRAINER GPU CHECKS PASSED" || echo "SOME TRAINER GPU CHECKS FAILED"
exit "$status"
