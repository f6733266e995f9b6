#!/usr/bin/env bash
# The README's demo through the whole service on the GPU machine, after build.sh: a coordinator,
# one qlorad-worker per GPU (--gpu i: the worker sets CUDA_VISIBLE_DEVICES=i for its trainers), the
# deterministic tiny Llama, and examples/demo.yaml submitted with `qloractl --json submit --follow`.
# With N workers it submits N copies of the job (demo-0 .. demo-N-1), so every GPU trains one.
# Checks, per job, from what reached the client: every step's metrics arrived, the loss fell, the
# VRAM figures are there (GPU runs), the final state is COMPLETED and the adapter exists. Then it
# stops the workers and the coordinator (SIGTERM) and reports how they exited.
#
# Usage: tests/gpu/service/demo.sh [BUILD_DIR] [OUT_DIR]   (defaults: build-gpu-svc, BUILD_DIR/demo)
# Environment: QLORAD_DEMO_GPUS (workers, one per GPU 0..N-1; default 1; 0: one CPU worker, for a
#              try on a machine without a GPU), QLORAD_DEMO_TIMEOUT_S (default 300).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
# shellcheck source=lib.sh
source "$ROOT/tests/gpu/service/lib.sh"
setup_run "${1:-}" "${2:-}" demo
GPUS="${QLORAD_DEMO_GPUS:-1}"

step "tiny model"
"$BIN/qlorad-train" make-tiny-model --out "$RUN/model" > /dev/null || exit 1

step "coordinator"
start_coordinator || exit 1

nworkers=$((GPUS > 0 ? GPUS : ${QLORAD_DEMO_CPU_WORKERS:-1}))
start_workers "$nworkers" "$GPUS"

# One spec per worker; paths made absolute, so the workers' folders do not matter.
for ((i = 0; i < nworkers; i++)); do
  sed -e "s|^name: demo|name: demo-$i|" -e "s|runs/demo/model|$RUN/model|" \
    -e "s|runs/demo/out|$RUN/out-$i|" -e "s|examples/data|$ROOT/examples/data|" \
    -e "s|quantization: {type: nf4|quantization: {type: ${QLORAD_DEMO_QUANT:-nf4}|" \
    -e "s|max_steps: 80,|max_steps: ${QLORAD_DEMO_STEPS:-80},|" \
    "$ROOT/examples/demo.yaml" > "$RUN/demo-$i.yaml"
done

step "qloractl submit --follow ($nworkers job(s))"
status=0
t0=$(date +%s)
for ((i = 1; i < nworkers; i++)); do
  "$BIN/qloractl" --server "$addr" --json submit "$RUN/demo-$i.yaml" > "$RUN/client-$i.jsonl" || status=1
done
timeout "${QLORAD_DEMO_TIMEOUT_S:-300}" "$BIN/qloractl" --server "$addr" --json submit "$RUN/demo-0.yaml" \
  --follow > "$RUN/client-0.jsonl" || { echo "qloractl submit --follow: exit $?"; status=1; }
for ((i = 1; i < nworkers; i++)); do  # the others, from their first step
  id=$(head -1 "$RUN/client-$i.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  timeout "${QLORAD_DEMO_TIMEOUT_S:-300}" "$BIN/qloractl" --server "$addr" --json watch "$id" \
    >> "$RUN/client-$i.jsonl" || { echo "qloractl watch $id: exit $?"; status=1; }
done
echo "all jobs ended after $(($(date +%s) - t0)) s"

step "what reached the client"
python3 - "$RUN" "$nworkers" "$GPUS" <<'EOF' || status=1
import json, os, sys
run, n, gpus = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = True
for i in range(n):
    lines = [json.loads(l) for l in open(f"{run}/client-{i}.jsonl") if l.strip()]
    steps = [l for l in lines if "loss" in l and "step" in l]
    job = [l for l in lines if "state" in l][-1]
    print(f"demo-{i} first metrics: {json.dumps(steps[0]) if steps else None}")
    print(f"demo-{i} last metrics:  {json.dumps(steps[-1]) if steps else None}")
    print(f"demo-{i} final job: {json.dumps({k: job.get(k) for k in ('id', 'state', 'worker_id', 'last_step', 'total_steps', 'last_loss', 'adapter_path', 'error')})}")
    problems = []
    if job.get("state") != "COMPLETED":
        problems.append(f"state {job.get('state')}")
    total = int(job.get("total_steps") or 0)
    if not steps or len({s["step"] for s in steps}) != total:
        problems.append(f"{len(steps)} metrics lines for {total} steps")
    elif not steps[-1]["loss"] < steps[0]["loss"]:
        problems.append("the loss did not fall")
    if gpus and not all(int(s.get("vram_peak_bytes", 0)) > 0 for s in steps):
        problems.append("metrics without VRAM figures")
    if not job.get("adapter_path") or not os.path.exists(job["adapter_path"]):
        problems.append(f"no adapter at {job.get('adapter_path')!r}")
    if steps:
        last = steps[-1]
        print(f"demo-{i}: {len(steps)} steps, loss {steps[0]['loss']:.4f} -> {last['loss']:.4f}, "
              f"vram peak {int(last.get('vram_peak_bytes', 0)) / 2**20:.1f} MiB, allocated "
              f"{int(last.get('vram_allocated_bytes', 0)) / 2**20:.1f} MiB, reserved "
              f"{int(last.get('vram_reserved_bytes', 0)) / 2**20:.1f} MiB, "
              f"{last.get('tokens_per_s', 0):.0f} tokens/s, {last.get('wall_time_s', 0):.1f} s")
    print(f"demo-{i}: " + ("OK" if not problems else "FAILED: " + "; ".join(problems)))
    ok = ok and not problems
workers = {json.loads(open(f"{run}/client-{i}.jsonl").readlines()[-1]).get("worker_id") for i in range(n)}
print(f"{n} job(s) ran on {len(workers)} worker(s)")
sys.exit(0 if ok else 1)
EOF

step "shutdown"
stop_all
grep -hiE "error|fatal" "$RUN"/qlorad.log "$RUN"/worker-*.log | head -10
[[ "$status" == 0 ]] && echo "SERVICE DEMO PASSED" || { echo "SERVICE DEMO FAILED (logs in $RUN)"; exit 1; }
