"""The longest context a batch-1 QLoRA job trains on one GPU, qlorad against Unsloth, side by side.

For one shape (8b: Llama-3.1-8B; 1b; tiny for a harness check on the CPU), with activation
checkpointing on and the checkpoints offloaded to host memory (qlorad: train.activation_checkpointing
and activation_offload, --offload; Unsloth: its "unsloth" mode), each system trains rows of one context length and a try succeeds when its steps complete.
The search doubles the context from --start while tries succeed, then bisects between the longest
success and the shortest failure down to --granularity tokens. --contexts instead tries exactly the
lengths given (a GPU command may run 10 minutes; a step at 350K tokens of an 8B model takes
minutes). Every try runs in its own process, as bench/e2e does, on the same random-weight model
and random tokens.

Per try: whether it trained, ms/step and tokens/s (of the step after one warm-up step where
--timed-contexts names the length, else of the only step, warm-up included), the peak allocated
memory, and for qlorad the memory estimate (`qlorad-train estimate`) and its ratio to the measured
peak. The table ends with each system's maximum and qlorad's ratios to Unsloth at each length both
ran. context_bench.json goes to --out after every try, and --resume FILE continues from one.

  python3 bench/context/context_bench.py --out OUT [--shape 8b] [--systems qlorad,unsloth]
        [--start 32768] [--max 524288] [--granularity 8192] [--contexts 32768,360448]
  python3 bench/context/context_bench.py --out OUT --shape tiny --device cpu --start 256 --max 2048 \
        --granularity 256     (a check of the harness without a GPU)
"""
import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "e2e"))
sys.path.insert(0, str(HERE.parent / "common"))
import e2e_bench  # noqa: E402
from e2e_bench import GIB, LR, RANK, ALPHA, failure, git_commit, gpu_facts, log, prepare_model, run_child  # noqa: E402
from qlorad_job import parse_events, write_spec  # noqa: E402
from random_llama import PROJECTIONS, make_data  # noqa: E402

SYSTEMS = ("qlorad", "unsloth")
DEFAULT_TIMED = (32768, 65536, 131072)  # the issue's reporting points


def run_qlorad(job, args, log_path):
    """One try of qlorad-train; the estimate first (its refusal is not asked: the search measures)."""
    name = f"context-{job['shape']}-{job['seq']}"
    spec = args.work / f"{name}.yaml"
    total = job["warmup"] + job["steps"]
    write_spec(spec, job["model"], job["data"], args.work / f"out-{name}", strategy="single", nproc=1, micro=1,
               accum=1, steps=total, seq_len=job["seq"], precision="bf16", activation_checkpointing=True, lr=LR,
               quantization="nf4" if job["quant"] else "none", shuffle=False, name=name,
               activation_offload=args.offload, ignore_memory_estimate=True)
    estimate = subprocess.run([str(args.bin / "qlorad-train"), "estimate", str(spec), "--json"],
                              capture_output=True, text=True)
    predicted = json.loads(estimate.stdout)["peak_bytes"] if estimate.returncode == 0 else None
    cmd = [str(args.bin / "qlorad-train"), "run", str(spec), "--json", "--device", args.device]
    rc, out, err = run_child(cmd, log_path, args.timeout, args.work)
    metrics = parse_events(out, err)[0].get(0, [])
    if rc != 0 or len(metrics) != total:
        # The trainer's own error (an out-of-memory names the sequence length) is a JSON event.
        errors = [line for line in out.splitlines() if line.startswith('{"event":"error"')]
        return dict(failure(rc, err + "\n".join(errors) + f"\n{len(metrics)} of {total} steps reported"),
                    estimate_bytes=predicted)
    last = metrics[-1]
    peak = max(m.get("vram_peak_bytes", 0) for m in metrics) or None
    return dict(status="ok", step_s=job["seq"] / last["tokens_per_s"], peak_bytes=peak, estimate_bytes=predicted,
                losses=[m["loss"] for m in metrics])


def run_unsloth(job, args, log_path):
    job = dict(job, batch=1, ckpt=True, rank=RANK, alpha=ALPHA, lr=LR, target_modules=PROJECTIONS, system="unsloth")
    r = e2e_bench.run_torch_system("unsloth", job, args.work, log_path, args.timeout)
    if r["status"] == "ok":
        r["step_s"] = r["step_s"][-1]
    return r


def try_context(system, seq, args, model, vocab):
    timed = seq in args.timed_contexts
    data = args.work / f"data-context-{args.shape}-{seq}.jsonl"
    warmup = 1 if timed else 0
    if not data.exists():
        make_data(data, vocab, rows=warmup + 1, seq_len=seq)
    job = dict(shape=args.shape, model=str(model), data=str(data), seq=seq, warmup=warmup, steps=1,
               device="cuda:0" if args.device == "cuda" else "cpu", quant=not args.no_quant)
    log_path = args.out / "logs" / f"{args.shape}-{seq}-{system}.log"
    started = time.time()
    try:
        r = (run_qlorad if system == "qlorad" else run_unsloth)(job, args, log_path)
    except Exception:  # the harness's own fault with one try: the search goes on
        r = failure("harness", traceback.format_exc())
    r.update(system=system, seq=seq, timed=timed, wall_s=time.time() - started)
    if r["status"] == "ok":
        r["tokens_per_s"] = seq / r["step_s"]
        r["peak_gib"] = r["peak_bytes"] / GIB if r.get("peak_bytes") else None
    if r.get("estimate_bytes") and r.get("peak_bytes"):
        r["estimate_ratio"] = r["estimate_bytes"] / r["peak_bytes"]
    return r


def search(system, args, model, vocab, tries, save):
    """Doubles, then bisects; a length tried before (--resume) is not tried again."""
    def attempt(seq):
        for r in tries:
            if r["system"] == system and r["seq"] == seq:
                return r["status"] == "ok"
        log(f"{system} at {seq} tokens: starting")
        r = try_context(system, seq, args, model, vocab)
        tries.append(r)
        save()
        if r["status"] == "ok":
            log(f"{system} at {seq}: trained, {r['step_s'] * 1e3:.0f} ms/step, {r['tokens_per_s']:.0f} tok/s, "
                f"peak {e2e_bench.fmt(r['peak_gib'], '.2f')} GiB ({r['wall_s']:.0f} s)")
        else:
            log(f"{system} at {seq}: FAILED ({r['error']}): {(r['stderr_tail'] or [''])[-1]}")
        return r["status"] == "ok"

    if args.contexts:
        for seq in args.contexts:
            attempt(seq)
    else:
        double_then_bisect(attempt, args.start, args.max, args.granularity)


def double_then_bisect(attempt, start, most, granularity):
    """The longest length that attempt(length) -> bool accepts, to within granularity: doubles from
    start up to most, then bisects on multiples of granularity between the longest success and the
    shortest failure. None when start fails."""
    good, bad, seq = None, None, start
    while seq <= most:
        if not attempt(seq):
            bad = seq
            break
        good, seq = seq, seq * 2
    if good is None or bad is None:
        return good  # nothing trained, or everything up to `most` did
    while bad - good > granularity:
        mid = (good + bad) // 2 // granularity * granularity
        if mid <= good:
            break
        if attempt(mid):
            good = mid
        else:
            bad = mid
    return good


def longest(tries, system):
    ok = [r["seq"] for r in tries if r["system"] == system and r["status"] == "ok"]
    return max(ok) if ok else None


def print_table(tries, meta):
    base = "bf16 base weights (--no-quant)" if meta["args"]["no_quant"] else "NF4 double quant"
    print(f"\nBatch-1 QLoRA ({meta['shape']} shape, {base}, LoRA r={RANK} on 7 projections, bf16, "
          f"checkpointing on), {meta['gpu']}, commit {meta['commit']}{e2e_bench.switches_text(meta)}")
    print(f"{'context':>8} {'system':8} {'result':>7} {'ms/step':>9} {'tok/s':>7} {'peak GiB':>8} {'estimate':>8} "
          f"{'est/peak':>8}")
    by_seq = {}
    for r in sorted(tries, key=lambda r: (r["seq"], r["system"])):
        by_seq.setdefault(r["seq"], {})[r["system"]] = r
        ok = r["status"] == "ok"
        est = r.get("estimate_bytes")
        print(f"{r['seq']:>8} {r['system']:8} {'trained' if ok else 'failed':>7} "
              f"{(r['step_s'] * 1e3 if ok else 0):9.0f} {(r['tokens_per_s'] if ok else 0):7.0f} "
              f"{e2e_bench.fmt(r.get('peak_gib'), '8.2f'):>8} {e2e_bench.fmt(est and est / GIB, '8.2f'):>8} "
              f"{e2e_bench.fmt(r.get('estimate_ratio'), '8.3f'):>8}"
              f"{'' if r.get('timed') or not ok else '  (one step, warm-up included)'}")
    for seq, pair in by_seq.items():
        q, u = pair.get("qlorad"), pair.get("unsloth")
        if q and u and q["status"] == "ok" and u["status"] == "ok":
            print(f"{seq:>8} qlorad vs unsloth: tok/s {q['tokens_per_s'] / u['tokens_per_s']:.2f}x, "
                  f"peak {e2e_bench.ratio(q, u, 'peak_gib')}")
    for system in SYSTEMS:
        if any(r["system"] == system for r in tries):
            print(f"longest context trained, {system}: {longest(tries, system) or 'none'}")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=pathlib.Path, help="folder for context_bench.json and the logs")
    ap.add_argument("--bin", type=pathlib.Path, default=ROOT / "build-gpu" / "bin", help="folder with qlorad-train")
    ap.add_argument("--work", type=pathlib.Path, default=ROOT / "runs" / "e2e",
                    help="folder for the model (shared with bench/e2e: an 8B model is 16 GiB), data and outputs")
    ap.add_argument("--shape", default="8b", choices=sorted(e2e_bench.SHAPES))
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}")
    ap.add_argument("--start", type=int, default=32768, help="the first context of the doubling")
    ap.add_argument("--max", type=int, default=524288, help="the doubling stops here")
    ap.add_argument("--granularity", type=int, default=8192, help="the bisection stops at this gap")
    ap.add_argument("--contexts", default="", help="comma-separated: try exactly these, no search")
    ap.add_argument("--timed-contexts", default=",".join(map(str, DEFAULT_TIMED)),
                    help="lengths whose step is timed after a warm-up step")
    ap.add_argument("--offload", choices=["true", "auto", "false"], default="true",
                    help="qlorad's train.activation_offload (true: as Unsloth's checkpointing, which offloads)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--no-quant", action="store_true", help="bf16 base weights (a harness check on the CPU)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds one try may take")
    ap.add_argument("--resume", type=pathlib.Path, help="a context_bench.json whose tries count as done")
    ap.add_argument("--commit", default=os.environ.get("QLORAD_COMMIT"), help="qlorad's commit (default: git's HEAD)")
    args = ap.parse_args()
    args.systems = args.systems.split(",")
    for s in args.systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system '{s}' (expected one of {', '.join(SYSTEMS)})")
    to_ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
    args.contexts, args.timed_contexts = to_ints(args.contexts), set(to_ints(args.timed_contexts))
    if args.start < 1 or args.granularity < 1 or args.max < args.start:
        ap.error("--start and --granularity must be positive and --max at least --start")
    args.bin, args.out, args.work = args.bin.resolve(), args.out.resolve(), args.work.resolve()
    return args


def main():
    args = parse_args()
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    tries = json.loads(args.resume.read_text())["tries"] if args.resume else []
    meta = dict(gpu_facts(args.device), shape=args.shape, commit=git_commit(args.commit),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                args={k: str(v) if isinstance(v, (pathlib.Path, set)) else v for k, v in vars(args).items()},
                switches=e2e_bench.trainer_switches())

    def save():
        (args.out / "context_bench.json").write_text(json.dumps(dict(meta=meta, tries=tries), indent=1))

    model = prepare_model(args.work, args.shape, args.device)
    vocab = e2e_bench.SHAPES[args.shape][0]["vocab_size"]
    for system in args.systems:
        search(system, args, model, vocab, tries, save)
    save()
    print_table(tries, meta)
    log(f"wrote {args.out / 'context_bench.json'}")


if __name__ == "__main__":
    main()
