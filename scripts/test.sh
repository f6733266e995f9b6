#!/usr/bin/env bash
# Runs every test that needs no GPU: the unit tests (ctest), the process-level tests (pytest:
# real coordinator, worker and trainer processes on loopback) and the fuzzers for a bounded time
# (scripts/fuzz.sh, in BUILD_DIR-fuzz). Usage: scripts/test.sh BUILD_DIR
set -uo pipefail
BUILD="${1:-build}"
VENV="${QLORAD_VENV:-$HOME/.cache/qlorad/venv}"
cd "$(dirname "$0")/.."

status=0
echo "== unit tests (ctest)"
ctest --test-dir "$BUILD" --output-on-failure -j "$(nproc)" --timeout 600 || status=1

echo "== process-level tests (pytest)"
QLORAD_BIN_DIR="$PWD/$BUILD/bin" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/integration tests/python
rc=$?
# pytest exits 5 when it collected nothing: that is a broken suite here, not a pass.
[[ $rc -ne 0 ]] && status=1

echo "== fuzzers (libFuzzer, bounded time each)"
scripts/fuzz.sh "$BUILD-fuzz" || status=1

exit $status
