#!/usr/bin/env bash
# Issue #7's checks on a machine with 2 or more GPUs, in one go (after tests/gpu/service/fetch_debs.sh
# here; see tests/gpu/README.md): builds the whole service there, runs a 2-GPU job through it
# (gang.sh: gang-scheduled, a rank killed, the retry resumed), then bench/parallel (one process
# against ddp and fsdp on N GPUs, Llama-3.2-1B shapes, 60 steps) and, while the build is there, the
# GPU tests that need only libqlorad_ops.so.
# Usage: tests/gpu/multi_gpu.sh OUT_DIR [SVC_DEBS]   (SVC_DEBS: the fetched .whl/svc folder)
# Environment: QLORAD_MULTI_GPU_PARTS (default "build gang ops offload parallel"; a device call is limited
#              to 10 minutes, so a run may be split: "build gang ops", then "parallel" on the same
#              warm machine, which keeps the build), QLORAD_PARALLEL_PRECISIONS (default "bf16 fp32").
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$(realpath -m "$1")"
DEBS="${2:-$ROOT/.whl/svc}"
BUILD="$ROOT/build-gpu-svc"
NGPU=$(nvidia-smi -L | wc -l)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
status=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
PARTS=" ${QLORAD_MULTI_GPU_PARTS:-build gang ops offload parallel} "
want() { [[ "$PARTS" == *" $1 "* ]]; }
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader

if want build; then
  step "build the service and the trainer"
  QLORAD_SVC_DEBS="$DEBS" "$ROOT/tests/gpu/service/build.sh" "$BUILD" /tmp/build-logs > "$OUT/build.log" 2>&1 \
    || { tail -n 40 "$OUT/build.log"; exit 1; }
  tail -n 2 "$OUT/build.log"
fi
# shellcheck source=/dev/null
source "$BUILD/deps-env.sh"

if want gang; then
  step "service: a job asking for $NGPU GPUs, one rank killed"
  QLORAD_GANG_GPUS="$NGPU" "$ROOT/tests/gpu/service/gang.sh" "$BUILD" /tmp/gang > "$OUT/gang.log" 2>&1 || status=1
  grep -E "attempt|final job|GANG|SIGKILL|PASSED|FAILED" "$OUT/gang.log"
fi

if want ops; then
  step "GPU tests of the ops (fused cross-entropy, bitsandbytes parity)"
  for t in test_ce_ops test_nf4_bnb_parity; do
    QLORAD_OPS_LIB="$BUILD/kernels/libqlorad_ops.so" timeout 180 python3 -X faulthandler -m pytest -v \
      -p no:cacheprovider "$ROOT/tests/gpu/$t.py" > "/tmp/$t.log" 2>&1 || status=1
    grep -E "FAILED|ERROR|Fatal|File \"/.*tests/gpu| passed| failed" "/tmp/$t.log" | head -n 12
  done
  cat /tmp/test_ce_ops.log /tmp/test_nf4_bnb_parity.log > "$OUT/gpu_tests.log"
fi

if want offload; then
  step "GPU memory: the load peak, fsdp with parallel.cpu_offload on 1 and 2 GPUs (tests/gpu/test_gpu_memory.py)"
  QLORAD_BIN_DIR="$BUILD/bin" timeout 400 python3 -m pytest -v -s -p no:cacheprovider \
    "$ROOT/tests/gpu/test_gpu_memory.py" > "$OUT/test_gpu_memory.log" 2>&1 || status=1
  grep -E "PASSED|FAILED|ERROR|peak| passed| failed" "$OUT/test_gpu_memory.log" | head -n 8
fi

# bf16 (the loss-parity bound is 1e-2 relative), then fp32 (1e-4), both 60 steps.
want parallel && for precision in ${QLORAD_PARALLEL_PRECISIONS:-bf16 fp32}; do
  step "bench/parallel: single vs ddp vs fsdp on $NGPU GPUs, $precision"
  timeout "${QLORAD_PARALLEL_TIMEOUT_S:-330}" python3 "$ROOT/bench/parallel/parallel_bench.py" --bin "$BUILD/bin" \
    --nproc "$NGPU" --precision "$precision" --out "/tmp/parallel-$precision" > "$OUT/parallel-$precision.log" 2>&1 \
    || { status=1; echo "parallel_bench $precision failed"; }
  tail -n 12 "$OUT/parallel-$precision.log"
  cp "/tmp/parallel-$precision/parallel_bench.json" "$OUT/parallel_bench-$precision.json" 2>/dev/null
done
[[ "$status" == 0 ]] && echo "MULTI-GPU CHECKS PASSED" || echo "MULTI-GPU CHECKS FAILED"
exit $status
