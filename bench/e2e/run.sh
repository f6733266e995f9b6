#!/usr/bin/env bash
# Usage: bash bench/e2e/run.sh OUT [e2e_bench.py options, e.g. --shapes 1b --ckpt off]
#        bash bench/e2e/run.sh OUT --build-only
# On the GPU machine, with .whl/debs .whl/icu .whl/e2e carried (bench/e2e/README.md): builds
# qlorad-train into build-gpu (incremental on a warm machine), puts the reference libraries of
# .whl/e2e/refs.tar.gz (bench/e2e/fetch_refs.sh) on PYTHONPATH and runs bench/e2e/e2e_bench.py,
# which writes e2e_bench.json and its logs to OUT. Models are kept in runs/e2e for the next call.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:?usage: bash bench/e2e/run.sh OUT [e2e_bench.py options] | --build-only}"
shift
mkdir -p "$OUT"
BUILD_LOGS="$ROOT/runs/e2e/build-logs"  # not in OUT: the logs come back only when the build fails

echo "=== build qlorad-train ($(date -u +%H:%M:%S))"
bash "$ROOT/tests/gpu/build_torch_side.sh" "$BUILD_LOGS" qlorad-train \
  || { cp "$BUILD_LOGS"/*.log "$OUT"/ 2>/dev/null; exit 1; }
[ "${1:-}" = --build-only ] && exit 0

source "$ROOT/bench/e2e/refs_env.sh"

echo "=== e2e_bench ($(date -u +%H:%M:%S))"
python3 "$ROOT/bench/e2e/e2e_bench.py" --bin "$ROOT/build-gpu/bin" --out "$OUT" "$@"
