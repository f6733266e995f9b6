#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang, ASan and UBSan in a torch-free build
# folder of their own, and runs each for a bounded time from its committed seed corpus
# (tests/fuzz/corpus/<target>). A crash, a leak or a hang (an input over 10 s) fails, and the
# input is kept in BUILD/crashes/<target>/: fix the reader, then commit the input to the corpus.
# Without clang++ it says so and passes (scripts/deps.sh installs clang).
# Usage: scripts/fuzz.sh [BUILD_DIR (build-fuzz)] [SECONDS per target (QLORAD_FUZZ_SECONDS, 25)]
set -uo pipefail
BUILD="${1:-build-fuzz}"
SECONDS_EACH="${2:-${QLORAD_FUZZ_SECONDS:-25}}"
TARGETS=(jobspec safetensors jsonl)
cd "$(dirname "$0")/.."

if ! command -v clang++ >/dev/null; then
  echo "== fuzzers: skipped, no clang++ on PATH"
  exit 0
fi
mkdir -p "$BUILD"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQLORAD_BUILD_FUZZERS=ON -DQLORAD_WITH_SERVICE=OFF \
  -DQLORAD_WITH_TORCH=OFF -DQLORAD_WITH_CUDA=OFF -DQLORAD_BUILD_TESTS=OFF -DQLORAD_WERROR=OFF \
  >"$BUILD/configure.log" 2>&1 || { cat "$BUILD/configure.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" --target "${TARGETS[@]/%/_fuzzer}" || exit 1

status=0
for t in "${TARGETS[@]}"; do
  echo "== fuzzing $t for ${SECONDS_EACH}s"
  # New inputs go to the first folder (the build's); the committed corpus is only read.
  mkdir -p "$BUILD/corpus/$t" "$BUILD/crashes/$t"
  "$BUILD/bin/${t}_fuzzer" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$BUILD/crashes/$t/" -print_final_stats=1 \
    "$BUILD/corpus/$t" "tests/fuzz/corpus/$t" >"$BUILD/$t.log" 2>&1
  rc=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$BUILD/$t.log"
  if [[ $rc -ne 0 ]]; then
    status=1
    tail -60 "$BUILD/$t.log"
    echo "== $t: the fuzzer failed (exit $rc); inputs in $BUILD/crashes/$t/"
  fi
done
exit $status
