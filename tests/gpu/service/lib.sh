# Shared by demo.sh and gang.sh: set up a run, start a coordinator and workers in the background,
# stop them. Source it after setting ROOT (the repository), then call setup_run.

step() { echo "=== $* ($(date -u +%H:%M:%S))"; }

# setup_run [BUILD_DIR] [RUN_DIR] NAME: sets BUILD (default ROOT/build-gpu-svc), BIN and RUN
# (default BUILD/NAME, emptied), takes the build's environment (deps-env.sh, from build.sh) and
# stops the daemons on exit.
setup_run() {
  BUILD="$(realpath -m "${1:-$ROOT/build-gpu-svc}")"
  RUN="$(realpath -m "${2:-$BUILD/$3}")"
  BIN="$BUILD/bin"
  # shellcheck source=/dev/null
  [[ -f "$BUILD/deps-env.sh" ]] && source "$BUILD/deps-env.sh"
  rm -rf "$RUN"
  mkdir -p "$RUN"
  trap stop_all EXIT
}

pids=()
stop_all() {  # workers first (they stop their trainers), the coordinator last
  local i rc
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || continue
    for _ in $(seq 1 100); do kill -0 "${pids[i]}" 2>/dev/null || break; sleep 0.1; done
    kill -0 "${pids[i]}" 2>/dev/null && { echo "pid ${pids[i]} ignored SIGTERM for 10 s"; kill -KILL "${pids[i]}"; }
    wait "${pids[i]}"
    rc=$?
    echo "stopped pid ${pids[i]}: exit $rc"
  done
  pids=()
}

# Starts the coordinator on a free port; sets addr (host:port).
start_coordinator() {
  "$BIN/qlorad" --listen 127.0.0.1:0 --http 127.0.0.1:0 --db "$RUN/qlorad.db" --insecure-local \
    > "$RUN/qlorad.log" 2>&1 &
  pids=($!)
  addr=""
  for _ in $(seq 1 100); do
    addr=$(grep -oE 'listening on [0-9.]+:[0-9]+' "$RUN/qlorad.log" | head -1 | awk '{print $3}')
    [[ -n "$addr" ]] && break
    sleep 0.1
  done
  [[ -n "$addr" ]] || { cat "$RUN/qlorad.log"; return 1; }
  echo "coordinator on $addr"
}

# start_workers N GPUS: N workers, worker i on GPU i (--gpu i: it sets CUDA_VISIBLE_DEVICES=i for
# its trainers), or on the CPU when GPUS is 0. Each needs a name of its own.
start_workers() {
  local n="$1" gpus="$2" i device
  for ((i = 0; i < n; i++)); do
    device=(--gpu "$i" --name "$(hostname)-gpu$i")
    ((gpus == 0)) && device=(--cpu --name "$(hostname)-cpu$i")
    mkdir -p "$RUN/worker-$i"
    "$BIN/qlorad-worker" --coordinator "$addr" "${device[@]}" --work-dir "$RUN/worker-$i" \
      > "$RUN/worker-$i.log" 2>&1 &
    pids+=($!)
    echo "worker $i: ${device[*]}"
  done
}
