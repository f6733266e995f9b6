#!/usr/bin/env bash
# GPU checks of the NF4 kernels, in one go on the GPU machine (see /work/shared/GPU.md):
#   1. builds the torch side (no gRPC there) with the benchmark,
#   2. runs the CUDA-vs-CPU-reference gtests and the CPU unit tests of the kernels,
#   3. runs the Python tests (torch.ops.load_library, torch.compile fullgraph, bitsandbytes parity
#      when bitsandbytes is importable, e.g. from a carried wheel on PYTHONPATH),
#   4. runs compute-sanitizer (memcheck, racecheck) on the kernels,
#   5. runs bench/nf4 and, with bitsandbytes, bench/nf4/bnb_side_by_side.py,
#   6. runs bench/loss/loss_bench.py (Liger Kernel and Cut Cross-Entropy side by side when they
#      are importable, e.g. from carried wheels on PYTHONPATH).
# Usage: tests/gpu/run.sh [OUT_DIR]   (results and logs are written there; default ./gpu-out)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-$ROOT/gpu-out}"
BUILD="$ROOT/build-gpu"
mkdir -p "$OUT"
PY="$(command -v python3)"
status=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
fail() { echo "FAILED: $*"; status=1; }

step "configure + build"
# The GPU machine has no PCRE2 headers (the trainer's tokenizer needs them). Carry the Debian -dev
# package: `mkdir -p .whl/debs && (cd .whl/debs && apt-get download libpcre2-dev)` here, `.whl/debs`
# in the call's carry. Only headers, the .pc file and .so links land in /: the runtime library
# (the same 10.42) is already there.
for deb in "$ROOT"/.whl/debs/*.deb; do [ -e "$deb" ] && dpkg -x "$deb" /; done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DQLORAD_WITH_SERVICE=OFF -DQLORAD_CUDA_ARCHS=90 -DQLORAD_PYTHON="$PY" \
  -DQLORAD_BUILD_BENCH=ON -DCMAKE_BUILD_TYPE=Release -DQLORAD_WERROR=OFF > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
ninja -C "$BUILD" -j "$(nproc)" qlorad_ops nf4_cuda_test nf4_ref_test nf4_ops_test nf4_bench > "$OUT/build.log" 2>&1 \
  || { grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 1; }

step "gtest: CUDA against the CPU reference, and the CPU tests"
"$BUILD/bin/nf4_cuda_test" --gtest_brief=1 2>&1 | tail -25 || fail nf4_cuda_test
"$BUILD/bin/nf4_ref_test" --gtest_brief=1 2>&1 | tail -5 || fail nf4_ref_test
"$BUILD/bin/nf4_ops_test" --gtest_brief=1 2>&1 | tail -5 || fail nf4_ops_test

step "pytest: load_library, torch.compile(fullgraph=True), bitsandbytes parity"
# Each file in its own process, -X faulthandler, full log kept: a crash names its test and frames.
python3 -c "import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)" 2>/dev/null \
  || echo "bitsandbytes not importable: parity tests skip"
for t in test_nf4_ops test_nf4_bnb_parity test_ce_ops test_ce_online; do
  QLORAD_OPS_LIB="$BUILD/kernels/libqlorad_ops.so" python3 -X faulthandler -m pytest -v -p no:cacheprovider \
    "$ROOT/tests/gpu/$t.py" > "$OUT/$t.log" 2>&1
  rc=$?
  grep -E "PASSED|FAILED|SKIPPED|ERROR| passed| failed|skipped" "$OUT/$t.log" | grep -v "^tests/gpu.*PASSED" | tail -15
  if [ "$rc" != 0 ]; then
    grep -E "Fatal Python error|test_nf4|File .*nf4" "$OUT/$t.log" | head -20
    fail "pytest $t (rc $rc)"
  fi
done

step "compute-sanitizer"
SAN="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
if [ -x "$SAN" ]; then
  FILTER='NF4Cuda.DequantizeEqualsTheReferenceInEveryFormat:NF4Cuda.UnalignedPointers*:NF4Cuda.QuantizeEqualsTheReference:NF4Cuda.ManyEquals*'
  for tool in memcheck racecheck; do
    "$SAN" --tool "$tool" --error-exitcode 9 "$BUILD/bin/nf4_cuda_test" --gtest_filter="$FILTER" --gtest_brief=1 \
      > "$OUT/sanitizer-$tool.log" 2>&1 && echo "$tool: clean" || { tail -20 "$OUT/sanitizer-$tool.log"; fail "$tool"; }
  done
else
  fail "compute-sanitizer not found"
fi

step "bench/nf4"
"$BUILD/bin/nf4_bench" --json "$OUT/nf4_bench.json" || fail nf4_bench
if python3 -c "import bitsandbytes" 2>/dev/null; then
  QLORAD_OPS_LIB="$BUILD/kernels/libqlorad_ops.so" python3 "$ROOT/bench/nf4/bnb_side_by_side.py" \
    --json "$OUT/nf4_vs_bnb.json" || fail bnb_side_by_side
fi
step "bench/loss: lm_head + cross-entropy, naive / ours generic / ours fused / ours online / Liger / CCE"
QLORAD_OPS_LIB="$BUILD/kernels/libqlorad_ops.so" python3 "$ROOT/bench/loss/loss_bench.py" --out "$OUT" \
  > "$OUT/loss_bench.log" 2>&1 || { tail -20 "$OUT/loss_bench.log"; fail loss_bench; }
grep -E "ratios|memory" "$OUT/loss_bench.log"
step "trainer: the demo job on the GPU (NF4 through the CUDA kernels)"
if ninja -C "$BUILD" -j "$(nproc)" qlorad-train >> "$OUT/build.log" 2>&1; then
  TRAIN_DIR="$OUT/trainer"
  mkdir -p "$TRAIN_DIR"
  "$BUILD/bin/qlorad-train" make-tiny-model --out "$TRAIN_DIR/model" > /dev/null
  sed -e "s|runs/demo/model|$TRAIN_DIR/model|" -e "s|runs/demo/out|$TRAIN_DIR/out|" \
    -e "s|examples/data|$ROOT/examples/data|" "$ROOT/examples/demo.yaml" > "$TRAIN_DIR/demo.yaml"
  "$BUILD/bin/qlorad-train" run "$TRAIN_DIR/demo.yaml" --device cuda --json > "$TRAIN_DIR/events.jsonl" 2> "$TRAIN_DIR/stderr.log"
  rc=$?
  grep '"event":"metrics"' "$TRAIN_DIR/events.jsonl" | sed -n '1p;$p'
  grep '"event":"done"' "$TRAIN_DIR/events.jsonl" || { tail -5 "$TRAIN_DIR/stderr.log"; fail "trainer on cuda (rc $rc)"; }
else
  fail "building qlorad-train"
fi

echo
[ "$status" = 0 ] && echo "ALL GPU CHECKS PASSED" || echo "SOME GPU CHECKS FAILED"
exit "$status"
