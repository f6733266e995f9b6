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
BUILD_LOGS="$ROOT/runs/e2e/build-logs"  # not in OUT: the ICU headers copied there would come back too

echo "=== build qlorad-train ($(date -u +%H:%M:%S))"
bash "$ROOT/tests/gpu/build_torch_side.sh" "$BUILD_LOGS" qlorad-train \
  || { cp "$BUILD_LOGS"/*.log "$OUT"/ 2>/dev/null; exit 1; }
[ "${1:-}" = --build-only ] && exit 0

echo "=== reference libraries ($(date -u +%H:%M:%S))"
REFS="$(mktemp -d)"
trap 'rm -rf "$REFS"' EXIT
if [ -f "$ROOT/.whl/e2e/refs.tar.gz" ]; then
  tar -C "$REFS" -xzf "$ROOT/.whl/e2e/refs.tar.gz"
  # First on the path: the carried pydantic and pydantic-core (and the rest) come as a matched set.
  export PYTHONPATH="$REFS${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no .whl/e2e/refs.tar.gz (run bench/e2e/fetch_refs.sh and carry .whl/e2e): Unsloth and bitsandbytes will fail"
fi
# What the carried set takes from the machine rather than carrying (pyarrow alone is over 40 MB):
# a missing one fails Unsloth's import, and this line says which.
python3 -c "import importlib.util as u; m = [n for n in ('requests', 'pandas', 'pyarrow', 'xxhash', 'accelerate')
if not u.find_spec(n)]; print('not on this machine (Unsloth needs them):', m) if m else None"
# No registry or hub there: everything loads from local folders, and Unsloth sends no statistics.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 \
  TOKENIZERS_PARALLELISM=false

echo "=== e2e_bench ($(date -u +%H:%M:%S))"
python3 "$ROOT/bench/e2e/e2e_bench.py" --bin "$ROOT/build-gpu/bin" --out "$OUT" "$@"
