#!/usr/bin/env bash
# Usage: bash bench/context/run.sh OUT [context_bench.py options, e.g. --contexts 131072 --systems qlorad]
# On the GPU machine, with .whl/debs .whl/icu .whl/e2e carried (bench/e2e/README.md): builds
# qlorad-train into build-gpu, puts the reference libraries on PYTHONPATH and runs
# bench/context/context_bench.py, which writes context_bench.json and its logs to OUT. The model is
# bench/e2e's, kept in runs/e2e for the next call.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:?usage: bash bench/context/run.sh OUT [context_bench.py options]}"
shift
mkdir -p "$OUT"
bash "$ROOT/bench/e2e/run.sh" "$OUT" --build-only || exit 1
source "$ROOT/bench/e2e/refs_env.sh"

echo "=== context_bench ($(date -u +%H:%M:%S))"
python3 "$ROOT/bench/context/context_bench.py" --bin "$ROOT/build-gpu/bin" --out "$OUT" "$@"
