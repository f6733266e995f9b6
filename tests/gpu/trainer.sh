#!/usr/bin/env bash
# The trainer's GPU tests, in one go on the GPU machine: builds the torch side (qlorad-train and
# the kernels' operator library, no gRPC there), then runs each trainer test of tests/gpu against
# it (eval against transformers, LoRA dropout on lm_head, load and offload memory, activation
# recompute) and the operator tests of the kernels the trainer calls. run.sh is the kernels' and
# benchmarks' counterpart.
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
# PCRE2 headers for the tokenizer: see run.sh (carry .whl/debs).
for deb in "$ROOT"/.whl/debs/*.deb; do [ -e "$deb" ] && dpkg -x "$deb" /; done
# ICU (the tokenizer's NFC normalizer): the GPU machine has ICU's library but no headers or
# pkg-config file. Carry Debian's ICU headers (libicu-dev's usr/include/unicode, into
# .whl/icu/include); their symbol version is set to the installed library's (the C and C++ API
# the normalizer uses is the same across these versions), and a pkg-config file describes both.
if ! pkg-config --exists icu-uc 2>/dev/null; then
  icu_lib="$(ls /usr/lib/x86_64-linux-gnu/libicuuc.so.[0-9]* 2>/dev/null | sort | head -1)"
  icu_major="$(basename "$icu_lib" | sed -E 's/libicuuc\.so\.([0-9]+).*/\1/')"
  if [ -n "$icu_lib" ] && [ -d "$ROOT/.whl/icu/include/unicode" ]; then
    rm -rf "$OUT/icu" && mkdir -p "$OUT/icu/pkgconfig" && cp -r "$ROOT/.whl/icu/include" "$OUT/icu/"
    sed -i -E "s/^#define U_ICU_VERSION_MAJOR_NUM [0-9]+/#define U_ICU_VERSION_MAJOR_NUM $icu_major/; \
               s/^#define U_ICU_VERSION_SUFFIX _[0-9]+/#define U_ICU_VERSION_SUFFIX _$icu_major/" \
      "$OUT/icu/include/unicode/uvernum.h"
    # -L/-l rather than the library's path: CMake would pass a path as a link option, ahead of
    # the objects, where --as-needed drops it.
    mkdir -p "$OUT/icu/lib" && ln -sf "$icu_lib" "$OUT/icu/lib/libicuuc.so"
    printf 'Name: icu-uc\nDescription: ICU (described by trainer.sh)\nVersion: %s\nCflags: -isystem %s\nLibs: -L%s -licuuc\n' \
      "$icu_major" "$OUT/icu/include" "$OUT/icu/lib" > "$OUT/icu/pkgconfig/icu-uc.pc"
    export PKG_CONFIG_PATH="$OUT/icu/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  else
    echo "no ICU headers (carry .whl/icu/include) or library here: the tokenizer cannot build"
  fi
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DQLORAD_WITH_SERVICE=OFF -DQLORAD_CUDA_ARCHS=90 \
  -DQLORAD_PYTHON="$(command -v python3)" -DCMAKE_BUILD_TYPE=Release -DQLORAD_WERROR=OFF \
  > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
ninja -C "$BUILD" -j "$(nproc)" qlorad-train qlorad_ops > "$OUT/build.log" 2>&1 \
  || { grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 1; }

step "pytest: the trainer on CUDA, and the operators it calls"
export QLORAD_BIN_DIR="$BUILD/bin" QLORAD_OPS_LIB="$BUILD/kernels/libqlorad_ops.so"
TESTS="${QLORAD_GPU_TESTS:-test_eval_cuda test_lm_head_dropout_cuda test_gpu_memory \
  test_activation_checkpointing test_nf4_ops test_ce_ops test_ce_online test_rope_swiglu_ops}"
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
