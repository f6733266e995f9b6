#!/usr/bin/env bash
# A job asking for N GPUs through the whole service, after build.sh:
# a coordinator and N workers (one per GPU), the demo job with resources.gpus N and parallel fsdp
# (sharded checkpoints: every rank writes its shard), gang-scheduled onto all N workers at once. Once it has passed its first checkpoint, one rank's
# trainer is SIGKILLed: the job must fail that attempt as a whole and the retry must resume from the
# checkpoint and complete. Checks from what reached the client: metrics of every rank, attempt 0
# and attempt 1 both seen, the resumed attempt starting after the checkpoint step, COMPLETED,
# adapter written. QLORAD_GANG_SIGNAL=STOP SIGSTOPs the rank instead (a hung rank: nothing closes,
# its peers fail after parallel.timeout_s, the worker SIGKILLs it after its grace period).
#
# Usage: tests/gpu/service/gang.sh [BUILD_DIR] [OUT_DIR]   (defaults: build-gpu-svc, BUILD_DIR/gang)
# Environment: QLORAD_GANG_GPUS (ranks = workers; default 2; 0: two CPU workers, for a try on a
#              machine without a GPU), QLORAD_GANG_STEPS (default 400), QLORAD_GANG_TIMEOUT_S (600),
#              QLORAD_GANG_STRATEGY (default fsdp), QLORAD_GANG_SIGNAL (KILL or STOP; default
#              KILL), QLORAD_GANG_PARALLEL_TIMEOUT_S (parallel.timeout_s; default 600, 20 with STOP).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
# shellcheck source=lib.sh
source "$ROOT/tests/gpu/service/lib.sh"
setup_run "${1:-}" "${2:-}" gang
GPUS="${QLORAD_GANG_GPUS:-2}"
RANKS=$((GPUS > 0 ? GPUS : 2))
STEPS="${QLORAD_GANG_STEPS:-400}"
SIGNAL="${QLORAD_GANG_SIGNAL:-KILL}"
PARALLEL_TIMEOUT_S="${QLORAD_GANG_PARALLEL_TIMEOUT_S:-$([[ $SIGNAL == STOP ]] && echo 20 || echo 600)}"
EVERY=50

step "tiny model, coordinator, $RANKS workers"
"$BIN/qlorad-train" make-tiny-model --out "$RUN/model" > /dev/null || exit 1
start_coordinator || exit 1
start_workers "$RANKS" "$GPUS"

sed -e "s|^name: demo|name: gang|" -e "s|runs/demo/model|$RUN/model|" \
  -e "s|runs/demo/out|$RUN/out|" -e "s|examples/data|$ROOT/examples/data|" \
  -e "s|max_steps: 80,|max_steps: $STEPS,|" -e "s|gpus: 1,|gpus: $RANKS,|" \
  -e "s|every_steps: 40,|every_steps: $EVERY,|" -e "s|max_restarts: 1|max_restarts: 2|" \
  "$ROOT/examples/demo.yaml" > "$RUN/gang.yaml"
echo "parallel: {strategy: ${QLORAD_GANG_STRATEGY:-fsdp}, reshard_after_forward: true," \
  "timeout_s: $PARALLEL_TIMEOUT_S}" >> "$RUN/gang.yaml"
grep -E "resources|parallel|checkpoint" "$RUN/gang.yaml"

step "submit ($RANKS ranks) and watch"
"$BIN/qloractl" --server "$addr" --json submit "$RUN/gang.yaml" > "$RUN/submit.json" || exit 1
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$RUN/submit.json")
timeout "${QLORAD_GANG_TIMEOUT_S:-600}" "$BIN/qloractl" --server "$addr" --json watch "$id" \
  > "$RUN/client.jsonl" &
watcher=$!

# Kill (or stop) the last rank's trainer once a step past the first checkpoint has been reported.
victim=$((RANKS - 1))
killed=""
for _ in $(seq 1 1200); do
  if python3 - "$RUN/client.jsonl" "$EVERY" <<'PY'; then
import json, sys
steps = [json.loads(l).get("step", 0) for l in open(sys.argv[1]) if '"loss"' in l]
sys.exit(0 if steps and max(steps) > int(sys.argv[2]) + 5 else 1)
PY
    pid=$(pgrep -f "qlorad-train run .*--rank $victim( |$)" | head -1)
    if [[ -n "$pid" ]]; then
      kill "-$SIGNAL" "$pid" && killed="$pid"
      echo "SIG$SIGNAL sent to rank $victim's trainer (pid $pid)"
      break
    fi
  fi
  kill -0 "$watcher" 2>/dev/null || break
  sleep 0.1
done
[[ -n "$killed" ]] || echo "never killed a rank (the job ended first or no trainer was found)"
wait "$watcher"
echo "watch exit $?"
"$BIN/qloractl" --server "$addr" --json status "$id" > "$RUN/status.json"

step "what reached the client"
status=0
python3 - "$RUN" "$RANKS" "$EVERY" "$GPUS" <<'PY' || status=1
import json, os, sys
run, ranks, every, gpus = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lines = [json.loads(l) for l in open(f"{run}/client.jsonl") if l.strip()]
metrics = [l for l in lines if "loss" in l and "step" in l]
job = json.load(open(f"{run}/status.json"))
print("final job:", json.dumps({k: job.get(k) for k in ("id", "state", "attempt", "max_restarts", "last_step",
                                                          "total_steps", "last_loss", "adapter_path", "error")}))
by_attempt = {}
for m in metrics:
    by_attempt.setdefault(int(m.get("attempt", 0)), []).append(m)
for attempt, ms in sorted(by_attempt.items()):
    ranks_seen = sorted({int(m.get("rank", 0)) for m in ms})
    steps = sorted({m["step"] for m in ms})
    print(f"attempt {attempt}: steps {steps[0]}..{steps[-1]}, ranks {ranks_seen}, "
          f"loss {ms[0]['loss']:.4f} -> {ms[-1]['loss']:.4f}, vram peak "
          f"{max(int(m.get('vram_peak_bytes', 0)) for m in ms) / 2**20:.1f} MiB")
problems = []
if job.get("state") != "COMPLETED":
    problems.append(f"state {job.get('state')}")
if len(by_attempt) < 2:
    problems.append(f"attempts seen: {sorted(by_attempt)} (expected a retry after the killed rank)")
else:
    first_resumed = min(m["step"] for m in by_attempt[max(by_attempt)])
    if first_resumed <= every or (first_resumed - 1) % every != 0:
        problems.append(f"the retry started at step {first_resumed}, not right after a checkpoint")
for attempt, ms in by_attempt.items():
    if {int(m.get("rank", 0)) for m in ms} != set(range(ranks)):
        problems.append(f"attempt {attempt}: metrics not from every rank")
if gpus and not all(int(m.get("vram_peak_bytes", 0)) > 0 for m in metrics):
    problems.append("metrics without VRAM figures")
if not job.get("adapter_path") or not os.path.exists(job["adapter_path"]):
    problems.append(f"no adapter at {job.get('adapter_path')!r}")
print("GANG JOB " + ("OK" if not problems else "FAILED: " + "; ".join(problems)))
sys.exit(0 if not problems else 1)
PY

step "shutdown"
stop_all
grep -hiE "error|fatal" "$RUN"/qlorad.log "$RUN"/worker-*.log | head -10
[[ "$status" == 0 ]] && echo "SERVICE GANG RUN PASSED" || { echo "SERVICE GANG RUN FAILED (logs in $RUN)"; exit 1; }
