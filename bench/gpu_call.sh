#!/usr/bin/env bash
# One device call's worth of GPU checks and benchmarks, most important first, for sessions whose
# GPU time comes in a few calls of at most 10 minutes (and whose machines are often not there):
#   1. build (bench/e2e/run.sh --build-only: qlorad-train into build-gpu, about 2.5 min fresh);
#   2. the trainer's GPU tests named in QLORAD_GPU_TESTS (tests/gpu/trainer.sh; default: the
#      training against transformers, the NF4 ops, activation checkpointing);
#   3. bench/e2e at Llama-3.2-1B 4 x 2048, checkpointing off and on: qlorad, qlorad-offload and
#      Unsloth side by side, then qlorad with the switch in QLORAD_CALL_AB (default
#      QLORAD_FOLD_LORA=both: the LoRA folded in backward too, against forward only; several
#      variants separated by spaces, each NAME=VALUE[,NAME=VALUE]);
#   4. bench/context at 32K: qlorad, then with each variant of QLORAD_CALL_CONTEXT_AB (default
#      QLORAD_KEEP_MLP=0; space-separated as QLORAD_CALL_AB's; empty: none), about 2.5 minutes a
#      run (not in the default parts: build, tests and e2e take about 9 of a call's 10 minutes on
#      a fresh H100; run it in a second call, QLORAD_CALL_PARTS=context, on the warm machine);
#   5. bench/e2e at Llama-3.1-8B 1 x 2048 against Unsloth (part "e2e8b", not by default), and 200
#      steps of real text on the tiny and 1B shapes against Hugging Face (part "text");
#   6. a Kineto trace of an eager 1B step summarized op by op (part "trace", not by default;
#      QLORAD_CALL_TRACE_GRAPH=1: of the replayed step graph, for the idle time between kernels;
#      QLORAD_CALL_TRACE_SHAPE=8b: of the 8B shape at 1 x 2048); part "trace32k": the 8B 32K
#      step's trace (one step, about 3 minutes with the model written).
# Each part has its own time limit and copies its JSON and a summary to OUT the moment it ends, so
# a call cut at its limit still returns what it measured; at most 8 files land in OUT (a device
# call returns no more), none deeper than OUT itself.
# Usage (on the GPU machine, with .whl/debs .whl/icu .whl/e2e carried): bash bench/gpu_call.sh OUT
#        QLORAD_CALL_PARTS="e2e context" (any of tests, e2e, e2e8b, text, context, trace,
#        trace32k, in the order given after the build; default "tests e2e"); QLORAD_CALL_SYSTEMS
#        (bench/e2e's --systems), QLORAD_CALL_ROUNDS (its --rounds, default 2: Unsloth's steps
#        are erratic on some machines), QLORAD_CALL_TESTS_S (the tests' time limit, default
#        300 s); QLORAD_COMMIT (the commit the JSONs record: the device's copy of the tree may
#        carry a stale git HEAD)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:?usage: bash bench/gpu_call.sh OUT}"
PARTS="${QLORAD_CALL_PARTS:-tests e2e}"
AB="${QLORAD_CALL_AB:-QLORAD_FOLD_LORA=both}"
SYSTEMS="${QLORAD_CALL_SYSTEMS:-qlorad,qlorad-offload,unsloth}"
ROUNDS="${QLORAD_CALL_ROUNDS:-2}"
TESTS="${QLORAD_GPU_TESTS:-test_train_cuda test_nf4_ops test_activation_checkpointing}"
CONTEXT_AB="${QLORAD_CALL_CONTEXT_AB-QLORAD_KEEP_MLP=0}"
mkdir -p "$OUT"
LOG="$OUT/summary.txt"
WORK="$(mktemp -d)"
say() { echo "== $* ($(date -u +%H:%M:%S))" | tee -a "$LOG"; }
# Runs the command after the variant's variables (NAME=VALUE[,NAME=VALUE]) are set.
with_variant() {
  local variant="$1"
  shift
  # shellcheck disable=SC2046 # one word per variable
  env $(tr ',' ' ' <<< "$variant") "$@"
}
# One bench run per variant in VARIANTS (space-separated; a variant sets several variables with
# commas), each in its folder and with its JSON copied to OUT/NAME-abN.json:
#   run_variants VARIANTS LABEL TIMEOUT_S SCRIPT JSON NAME ARGS...
run_variants() {
  local variants="$1" label="$2" limit="$3" script="$4" json="$5" name="$6" n=0 variant
  shift 6
  for variant in $variants; do
    n=$((n + 1))
    say "$label: qlorad with $variant"
    with_variant "$variant" timeout "$limit" bash "$ROOT/$script" "$WORK/$name-ab$n" "$@" \
      > "$WORK/$name-ab$n.txt" 2>&1
    table < "$WORK/$name-ab$n.txt" >> "$LOG"
    cp "$WORK/$name-ab$n/$json" "$OUT/$name-ab$n.json" 2>/dev/null
  done
}
# The bench tables' data and ratio lines (their progress lines start with "[").
table() {
  grep -E "^(tiny|1b|8b) +[0-9]| vs |UNSTEADY|the median of|^ +[0-9]+ qlorad|^ +[0-9]+ unsloth" |
    grep -v "^\[" | tail -24
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee -a "$LOG"
echo "host: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"
say build
bash "$ROOT/bench/e2e/run.sh" "$WORK/build" --build-only > "$WORK/build.txt" 2>&1 ||
  { tail -40 "$WORK/build.txt" >> "$LOG"; exit 1; }

run_tests() {
  say "GPU tests: $TESTS"
  QLORAD_GPU_TESTS="$TESTS" timeout "${QLORAD_CALL_TESTS_S:-300}" \
    bash "$ROOT/tests/gpu/trainer.sh" "$WORK/tests" > "$WORK/tests.txt" 2>&1
  tail -40 "$WORK/tests.txt" >> "$LOG"
  cat "$WORK"/tests/*.log > "$OUT/tests.log" 2>/dev/null
}

run_e2e() {
  say "e2e 1b, ckpt off and on: $SYSTEMS, $ROUNDS round(s)"
  timeout $((120 + 120 * ROUNDS)) bash "$ROOT/bench/e2e/run.sh" "$WORK/e2e" --shapes 1b \
    --ckpt off,on --systems "$SYSTEMS" --rounds "$ROUNDS" --steps 8 --warmup 3 > "$WORK/e2e.txt" 2>&1
  table < "$WORK/e2e.txt" >> "$LOG"
  cp "$WORK/e2e/e2e_bench.json" "$OUT/e2e-1b.json" 2>/dev/null
  run_variants "$AB" "e2e 1b, ckpt off and on" 90 bench/e2e/run.sh e2e_bench.json e2e-1b \
    --shapes 1b --ckpt off,on --systems qlorad --steps 8 --warmup 3
}

# 200 steps of real text on the tiny and 1B shapes, qlorad against Hugging Face from the same
# LoRA initialization (hf runs first and saves it), for the loss curves' largest gap (about 2
# minutes with the model written).
run_text() {
  say "e2e text: tiny and 1b, 200 steps, qlorad against hf"
  timeout 330 bash "$ROOT/bench/e2e/run.sh" "$WORK/text" --shapes tiny,1b --ckpt off \
    --systems hf,qlorad --data text --steps 199 --warmup 1 > "$WORK/text.txt" 2>&1
  grep -E "^(tiny|1b) +[0-9]|loss curve|^Gap|^(qlorad|hf) " "$WORK/text.txt" >> "$LOG"
  cp "$WORK/text/e2e_bench.json" "$OUT/e2e-text.json" 2>/dev/null
}

# The 8B shape at 1 x 2048 against Unsloth, checkpointing off and on, one round (about 4 minutes
# with the model written).
run_e2e8b() {
  say "e2e 8b, ckpt off and on: qlorad, unsloth"
  timeout 330 bash "$ROOT/bench/e2e/run.sh" "$WORK/e2e8b" --shapes 8b --ckpt off,on \
    --systems qlorad,unsloth --rounds 1 --steps 8 --warmup 3 > "$WORK/e2e8b.txt" 2>&1
  table < "$WORK/e2e8b.txt" >> "$LOG"
  cp "$WORK/e2e8b/e2e_bench.json" "$OUT/e2e-8b.json" 2>/dev/null
}

run_context() {
  say "context 8b 32K: qlorad"
  timeout 170 bash "$ROOT/bench/context/run.sh" "$WORK/ctx" --contexts 32768 --systems qlorad \
    > "$WORK/ctx.txt" 2>&1
  table < "$WORK/ctx.txt" >> "$LOG"
  cp "$WORK/ctx/context_bench.json" "$OUT/ctx-32k.json" 2>/dev/null
  run_variants "$CONTEXT_AB" "context 8b 32K" 170 bench/context/run.sh context_bench.json ctx-32k \
    --contexts 32768 --systems qlorad
}

# Where an eager step's time goes, op by op (a replayed graph hides its kernels from the profiler).
# QLORAD_CALL_TRACE_GRAPH=1 keeps the step graph on: the by-op table then loses the replayed
# kernels' ops, but the idle time and the largest gaps are those of the timed steps.
run_trace() {
  local graph="${QLORAD_CALL_TRACE_GRAPH:-0}" shape="${QLORAD_CALL_TRACE_SHAPE:-1b}"
  local how=eager
  [[ "$graph" == 1 ]] && how=replayed
  say "trace: $shape ckpt off, $how, steps 6-8 by op"
  mkdir -p "$WORK/prof"
  QLORAD_CUDA_GRAPH="$graph" QLORAD_PROFILE="$WORK/prof/off" QLORAD_PROFILE_SHAPES=1 timeout 240 \
    bash "$ROOT/bench/e2e/run.sh" "$WORK/tr" --shapes "$shape" --ckpt off --systems qlorad \
    --steps 8 --warmup 3 > "$WORK/tr.txt" 2>&1
  python3 "$ROOT/bench/parallel/trace_summary.py" "$WORK/prof/off-rank0.json" --top 40 --by-op \
    --callers > "$OUT/trace-off.txt" 2>&1
  head -3 "$OUT/trace-off.txt" >> "$LOG"
}

# Where the 8B 32K step's time goes: its second (timed) step traced, by op with callers, and the
# compute stream's idle time (the offload's copies waited for show as gaps before kernels).
run_trace32k() {
  say "trace: 8b 32K, the timed step by op"
  mkdir -p "$WORK/prof"
  QLORAD_PROFILE="$WORK/prof/ctx" QLORAD_PROFILE_FIRST=1 QLORAD_PROFILE_STEPS=1 \
    QLORAD_PROFILE_SHAPES=1 timeout 200 bash "$ROOT/bench/context/run.sh" "$WORK/ctx-tr" \
    --contexts 32768 --systems qlorad > "$WORK/ctx-tr.txt" 2>&1
  table < "$WORK/ctx-tr.txt" >> "$LOG"
  python3 "$ROOT/bench/parallel/trace_summary.py" "$WORK/prof/ctx-rank0.json" --steps 1 --top 40 \
    --by-op --callers > "$OUT/trace-32k.txt" 2>&1
  head -3 "$OUT/trace-32k.txt" >> "$LOG"
}

# The parts in the order given.
for part in $PARTS; do
  case "$part" in
    tests) run_tests ;;
    e2e) run_e2e ;;
    e2e8b) run_e2e8b ;;
    text) run_text ;;
    context) run_context ;;
    trace) run_trace ;;
    trace32k) run_trace32k ;;
    *) say "unknown part: $part (expected tests, e2e, e2e8b, text, context, trace or trace32k)" ;;
  esac
done
say "done"
