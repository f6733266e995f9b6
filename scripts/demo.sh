#!/usr/bin/env bash
# The demo: a coordinator and one worker (GPU 0 if there is one, else the CPU) on loopback,
# a deterministic tiny Llama made by qlorad-train, and examples/demo.yaml submitted with
# qloractl, whose progress bar shows the loss live. Ends by printing where the adapter is.
# Usage: scripts/demo.sh BUILD_DIR
set -euo pipefail
BUILD="${1:-build}"
cd "$(dirname "$0")/.."
BIN="$PWD/$BUILD/bin"
RUN="$PWD/runs/demo"
mkdir -p "$RUN"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

echo "== making the tiny model at runs/demo/model"
"$BIN/qlorad-train" make-tiny-model --out "$RUN/model" >/dev/null

# Port 0: the coordinator picks free ports and prints them, so the demo never collides.
rm -f "$RUN"/qlorad.db*
# --insecure-local: loopback only, no tokens (README "Security" shows a coordinator with them).
"$BIN/qlorad" --listen 127.0.0.1:0 --http 127.0.0.1:0 --db "$RUN/qlorad.db" --insecure-local \
  >"$RUN/qlorad.log" 2>&1 &
pids+=($!)
addr=""
for _ in $(seq 1 100); do
  addr=$(grep -oE 'listening on [0-9.]+:[0-9]+' "$RUN/qlorad.log" | head -1 | awk '{print $3}' || true)
  [[ -n "$addr" ]] && break
  sleep 0.1
done
[[ -n "$addr" ]] || { echo "the coordinator did not start; see $RUN/qlorad.log" >&2; exit 1; }
http=$(grep -oE '\(http [0-9.]+:[0-9]+\)' "$RUN/qlorad.log" | head -1 | tr -d '()' | awk '{print $2}' || true)
echo "== coordinator on $addr${http:+ (dashboard: http://$http/)}"

device="--cpu"
if nvidia-smi -L >/dev/null 2>&1; then device="--gpu 0"; fi
# The worker runs trainers in the repository root, where the demo spec's relative paths point.
"$BIN/qlorad-worker" --coordinator "$addr" $device --work-dir "$PWD" >"$RUN/worker.log" 2>&1 &
pids+=($!)
echo "== worker started ($device); submitting examples/demo.yaml"

"$BIN/qloractl" --server "$addr" submit examples/demo.yaml --follow
