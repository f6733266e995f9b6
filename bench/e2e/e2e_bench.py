"""One QLoRA training step three ways, side by side in one run: Hugging Face (transformers + PEFT +
bitsandbytes), Unsloth and qlorad-train, on the same random-weight model and random tokens.

For each shape (tiny, 1b: Llama-3.2-1B at 4 x 2048, 8b: Llama-3.1-8B at 1 x 2048) it writes the
model once (bf16, Hugging Face layout, with a 4-token tokenizer so that Unsloth loads the
directory; kept in --work and reused) and a random-token data set, then, for activation
checkpointing off and on, trains the same job in each system, every one in its own process:
NF4 with double quantization, LoRA r=16 alpha=16 dropout 0 on all 7 projections, bf16, AdamW at a
constant lr 2e-4, gradient clipping at 1.0, training mode. Checkpointing is HF's
gradient_checkpointing (use_reentrant=False), Unsloth's "unsloth" mode (offloaded to host memory)
and qlorad's train.activation_checkpointing.

Per run: the median of the timed steps' wall times (after --warmup steps; HF and Unsloth
synchronize CUDA around each step, qlorad-train reports its own step times), tokens/s, peak
allocated GiB over the whole process (torch.cuda.max_memory_allocated; qlorad's vram_peak_bytes),
MFU, the first and last loss, and how steady the timed steps were: the spread of their middle half
(interquartile range over the median). A run whose steps spread more than UNSTEADY_SPREAD is marked
UNSTEADY, and its ratios "not to be quoted": stable runs of every system on H100s spread 0.5-5%,
while Unsloth on some machines spread 9-45% (with medians from 116.8 to 288.7 ms for one job on one
day, bench/results/2026-12-07-h100-c32a380-gpu_run.txt). A system that fails (an import error, an OOM, a timeout) is
reported with the last lines of its stderr and the others still run. The table comes last, with
qlorad's tokens/s and peak as ratios to Unsloth's and HF's; one JSON file goes to --out after
every run, so a run cut short still leaves what it measured.

MFU = model FLOPs per token * tokens/s / the GPU's dense bf16 peak. Per token, F = layers *
(sum over the 7 projections of [4 out in + 6 r (in + out)] + 6 seq heads head_dim) + 4 vocab hidden:
forward and the input gradient through each frozen weight, LoRA's forward and its three gradients,
causal attention forward and backward; recompute is not counted (flops.py has the derivation).

  python3 bench/e2e/e2e_bench.py --bin build-gpu/bin --out OUT [--shapes 1b,8b] [--ckpt off,on]
        [--systems hf,unsloth,qlorad[,qlorad-modules]] [--steps 10] [--warmup 3]
  python3 bench/e2e/e2e_bench.py --bin build/bin --out OUT --shapes tiny --device cpu --no-quant
        (a check of the harness without a GPU)
  python3 bench/e2e/e2e_bench.py --out OUT --merge A/e2e_bench.json B/e2e_bench.json   (one table of two calls)
"""
import argparse
import datetime
import itertools
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import time
import traceback

import torch

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "common"))
from flops import flops_per_token, peak_tflops  # noqa: E402
from qlorad_job import parse_events, write_spec  # noqa: E402
from random_llama import LLAMA_1B, LLAMA_8B, PROJECTIONS, make_data, make_model  # noqa: E402
from text_data import make_text_data  # noqa: E402

TINY = dict(LLAMA_1B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=512)
SHAPES = {"tiny": (TINY, 2, 64), "1b": (LLAMA_1B, 4, 2048), "8b": (LLAMA_8B, 1, 2048)}  # config, batch, seq
# qlorad-modules: qlorad-train with its fast paths off (QLORAD_FUSED=0), every layer module by
# module: what the fused kernels and the flash path earn, side by side. qlorad-packed: qlorad-train
# on rows that each pack PACKED_DOCS documents (attention kept within each), against the unpacked
# rows of the same length. qlorad-offload: checkpointing with the kept inputs in host memory
# (train.activation_offload: true; with --ckpt on only). None of these runs by default.
SYSTEMS = ("hf", "unsloth", "qlorad", "qlorad-modules", "qlorad-packed", "qlorad-offload")
PACKED_DOCS = 4
DEFAULT_SYSTEMS = ("hf", "unsloth", "qlorad")
RANK, ALPHA, LR = 16, 16, 2e-4
GIB = 2**30


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_tokenizer(path):
    """A 4-token WordLevel tokenizer: Unsloth loads a directory only with a tokenizer in it; the
    benchmark's data are token ids and never go through it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                            pad_token="<pad>").save_pretrained(str(path))


def prepare_model(work, shape, device):
    """The shape's model directory, written unless a complete one with the same config is there."""
    config = SHAPES[shape][0]
    path = work / f"model-{shape}"
    done = path / "complete.json"
    if done.exists() and json.loads(done.read_text()) == config:
        log(f"{shape}: reusing the model in {path}")
        return path
    log(f"{shape}: writing a random bf16 model to {path}")
    done.unlink(missing_ok=True)
    make_model(path, config, device)
    write_tokenizer(path)
    done.write_text(json.dumps(config))
    if device == "cuda":
        torch.cuda.empty_cache()  # the children need the memory; this process only drew weights
    log(f"{shape}: model written ({(path / 'model.safetensors').stat().st_size / GIB:.2f} GiB)")
    return path


def run_child(cmd, log_path, timeout_s, cwd, env=None):
    """Runs cmd in its own process group; returns (rc, stdout, stderr), all kept in log_path. The
    output goes through files, not pipes: a helper the child leaves behind (a compile worker) would
    hold a pipe open past the child's exit. The group is ended afterwards for the same reason."""
    out_path, err_path = log_path.with_suffix(".stdout"), log_path.with_suffix(".stderr")
    try:
        with open(out_path, "w") as out_file, open(err_path, "w") as err_file:
            proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, text=True, cwd=cwd,
                                    start_new_session=True, env=env)
    except OSError as e:
        log_path.write_text(" ".join(map(str, cmd)) + f"\n{e}\n")
        return "not started", "", str(e)
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        rc = "timeout"
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    out, err = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    out_path.unlink()
    err_path.unlink()
    if rc == "timeout":
        err += f"\ntimed out after {timeout_s} s"
    log_path.write_text(" ".join(map(str, cmd)) + "\n--- stdout\n" + out + "\n--- stderr\n" + err)
    return rc, out, err


def failure(rc, err):
    # Python 3.11+ underlines the failing expression with lines of ^ and ~: noise in a short tail.
    tail = [l for l in err.splitlines() if l.strip(" ^~")][-15:]
    return dict(status="failed", error=f"exit {rc}", stderr_tail=tail)


def run_torch_system(system, job, work, log_path, timeout_s):
    job_path = work / f"job-{system}.json"
    job_path.write_text(json.dumps(job))
    rc, out, err = run_child([sys.executable, str(HERE / "torch_step.py"), system, str(job_path)], log_path,
                             timeout_s, work)
    results = [l[len("E2E_RESULT "):] for l in out.splitlines() if l.startswith("E2E_RESULT ")]
    if rc != 0 or not results:
        return failure(rc, err)
    r = json.loads(results[-1])
    return dict(status="ok", step_s=r["step_s"][job["warmup"]:], losses=r["losses"], peak_bytes=r["peak_bytes"],
                versions=r["versions"], device_name=r["device_name"], warning=r["warning"],
                checkpointed_modules=r["checkpointed_modules"], quantized_modules=r["quantized_modules"],
                trainable_params=r["trainable_params"])


def run_qlorad(job, args, work, log_path):
    """The qlorad variants differ only in what job["system"] names (SYSTEMS' comment)."""
    # One name (spec, output folder) per system: no run finds another's output.
    name = f"e2e-{job['shape']}-ckpt-{'on' if job['ckpt'] else 'off'}-{job['system']}"
    spec = work / f"{name}.yaml"
    total = job["warmup"] + job["steps"]
    write_spec(spec, job["model"], job["data"], work / f"out-{name}", strategy="single", nproc=1,
               micro=job["batch"], accum=1, steps=total, seq_len=job["seq"], precision="bf16",
               activation_checkpointing=job["ckpt"], lr=LR, quantization="nf4" if job["quant"] else "none",
               shuffle=False, name=name,  # the rows in file order, as torch_step.py reads them
               init_from=job.get("init_from"),
               activation_offload="true" if job["system"] == "qlorad-offload" else "auto",
               loss_chunk_size=args.qlorad_loss_chunk)
    cmd = [str(args.bin / "qlorad-train"), "run", str(spec), "--json", "--device", args.device]
    # The fast paths as the trainer chooses (QLORAD_FUSED as the caller set it), or forced off.
    env = dict(os.environ, QLORAD_FUSED="0") if job["system"] == "qlorad-modules" else None
    rc, out, err = run_child(cmd, log_path, args.timeout, work, env)
    metrics = parse_events(out, err)[0].get(0, [])
    if rc != 0 or len(metrics) != total:
        return failure(rc, err + f"\n{len(metrics)} of {total} steps reported")
    # A step's time is the gap between its metrics and the previous step's.
    step_s = [b["wall_time_s"] - a["wall_time_s"] for a, b in zip(metrics, metrics[1:])][-job["steps"]:]
    peak = max(m.get("vram_peak_bytes", 0) for m in metrics)
    return dict(status="ok", step_s=step_s, losses=[m["loss"] for m in metrics], peak_bytes=peak or None)


# The timed steps' interquartile range over their median above which a run is unsteady.
UNSTEADY_SPREAD = 0.08


def spread(step_s):
    """Interquartile range over the median of the step times (None for fewer than 4 steps)."""
    if len(step_s) < 4:
        return None
    q1, _, q3 = statistics.quantiles(step_s, n=4)
    return (q3 - q1) / statistics.median(step_s)


def unsteady(r):
    return r.get("status") == "ok" and (r.get("spread") or 0) > UNSTEADY_SPREAD


def combine(rounds):
    """One system's runs of several rounds as one record, for its ratios: the round with the median
    time among its steady rounds (among all, and itself unsteady, when none was steady), with
    `rounds` saying how many rounds there were and how many were steady. One round: that run."""
    ok = [r for r in rounds if r["status"] == "ok"]
    if len(rounds) == 1 or not ok:
        return rounds[-1]
    steady = [r for r in ok if not unsteady(r)] or ok
    median = statistics.median_low(r["ms_per_step"] for r in steady)
    pick = next(r for r in steady if r["ms_per_step"] == median)
    return dict(pick, rounds=f"{sum(not unsteady(r) for r in ok)} of {len(rounds)} rounds steady")


def summarize(r, tokens_per_step, flops, peak):
    if r["status"] != "ok":
        return r
    step = statistics.median(r["step_s"])
    tokens_per_s = tokens_per_step / step
    return dict(r, ms_per_step=step * 1e3, tokens_per_s=tokens_per_s,
                peak_gib=r["peak_bytes"] / GIB if r["peak_bytes"] else None,
                mfu=flops * tokens_per_s / (peak * 1e12) if peak else None,
                loss_first=r["losses"][0], loss_last=r["losses"][-1], spread=spread(r["step_s"]))


def gpu_facts(device):
    if device != "cuda":
        return dict(gpu="cpu", driver=None)
    try:
        line = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader", "-i", "0"],
                              capture_output=True, text=True, check=True).stdout.strip()
        name, driver = [s.strip() for s in line.split(",")]
    except (OSError, subprocess.CalledProcessError, ValueError):
        name, driver = torch.cuda.get_device_name(0), None
    return dict(gpu=name, driver=driver)


def trainer_switches():
    """The QLORAD_* variables of this run (QLORAD_KEEP_ATTENTION=0, QLORAD_KEEP_MLP=1, ...): the
    trainers inherit them, so an A/B run's JSON and table say which side it was."""
    harness = {"QLORAD_COMMIT", "QLORAD_BIN_DIR"}  # the benchmark's own, not the trainer's
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("QLORAD_") and k not in harness}


def switches_text(meta):
    switches = meta.get("switches") or {}
    return "; " + " ".join(f"{k}={v}" for k, v in switches.items()) if switches else ""


def git_commit(given):
    if given:
        return given
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def ratio(a, b, key):
    if a.get("status") != "ok" or b.get("status") != "ok" or not a.get(key) or not b.get(key):
        return "-"
    return f"{a[key] / b[key]:.2f}x"


CURVE_WINDOW = 10  # steps per mean: one step's loss is mostly its batch's, a mean shows the trend


def window_means(losses):
    n = len(losses) // CURVE_WINDOW
    return [statistics.fmean(losses[i * CURVE_WINDOW:(i + 1) * CURVE_WINDOW]) for i in range(n)]


def print_curve_gaps(by_system):
    """With enough steps (--data text), how far each system's loss curve lies from hf's: the largest
    gap between means of CURVE_WINDOW steps, next to hf's own drop over the run. Two bf16
    implementations differ by rounding that compounds over steps; the gap between the two
    references (unsloth vs hf) is that noise, measured in the same run, to read qlorad's against."""
    hf = by_system.get("hf")
    if not hf or hf["status"] != "ok" or len(hf["losses"]) < 2 * CURVE_WINDOW:
        return
    ref = window_means(hf["losses"])
    for system, r in by_system.items():
        # qlorad-packed trains other rows (random packed documents): no curve to compare.
        if system in ("hf", "qlorad-packed") or r["status"] != "ok" or len(r["losses"]) != len(hf["losses"]):
            continue
        gap = max(abs(a - b) for a, b in zip(window_means(r["losses"]), ref))
        print(f"{'':34}{system} loss curve vs hf ({CURVE_WINDOW}-step means): max gap {gap:.4f} "
              f"(hf's drop {ref[0] - ref[-1]:.4f})")


def print_run(r, shape, ckpt, name):
    """One run's row of the table (`name`: the system, and its round when there are several)."""
    head = f"{shape:6} {r['batch']:>4} x {r['seq']:<4} {ckpt:>4} {name:14}"
    if r["status"] != "ok":
        print(f"{head} FAILED ({r['error']})")
        return
    mfu = fmt(r["mfu"] and 100 * r["mfu"], ".1f") + ("%" if r["mfu"] else "")
    note = f"  WARNING: {r['warning']}" if r.get("warning") else ""
    if unsteady(r):
        note += (f"  UNSTEADY: steps spread {100 * r['spread']:.1f}% (interquartile range over "
                 f"the median; steady runs: under {100 * UNSTEADY_SPREAD:.0f}%)")
    print(f"{head} {r['ms_per_step']:8.1f} {r['tokens_per_s']:8.0f} {fmt(r['peak_gib'], '8.2f'):>8} {mfu:>6} "
          f"{r['loss_first']:8.4f} -> {r['loss_last']:.4f}{note}")


def print_table(runs, meta):
    for r in runs:
        if r["status"] != "ok":
            print(f"\n{r['shape']} ckpt {r['ckpt']} {r['system']} FAILED ({r['error']}); last stderr lines:")
            print("\n".join("  " + l for l in r["stderr_tail"]))
    base = "bf16 base weights (--no-quant)" if meta["args"]["no_quant"] else "NF4 double quant"
    print(f"\nOne QLoRA step ({base}, LoRA r={RANK} on 7 projections, bf16, AdamW), median of "
          f"{meta['args']['steps']} steps after {meta['args']['warmup']} warm-up; {meta['gpu']}"
          f"{', driver ' + meta['driver'] if meta['driver'] else ''}, commit {meta['commit']}; MFU against "
          f"{fmt(meta['peak_tflops'], '.1f')} TFLOP/s{switches_text(meta)}")
    print(f"{'shape':6} {'batch x seq':>11} {'ckpt':>4} {'system':14} {'ms/step':>8} {'tok/s':>8} {'peak GiB':>8} "
          f"{'MFU':>6} {'loss first -> last':>19}")
    groups = {}
    for r in runs:
        groups.setdefault((r["shape"], r["ckpt"]), {}).setdefault(r["system"], []).append(r)
    for (shape, ckpt), rounds_by_system in groups.items():
        by_system = {system: combine(rounds) for system, rounds in rounds_by_system.items()}
        for system, rounds in rounds_by_system.items():
            for r in rounds:
                name = f"{system} r{r['round']}" if len(rounds) > 1 and "round" in r else system
                print_run(r, shape, ckpt, name)
            c = by_system[system]
            if len(rounds) > 1 and c["status"] == "ok":
                print(f"{'':34}{system}: {c['ms_per_step']:.1f} ms/step, the median of {c['rounds']}")
        q = by_system.get("qlorad")
        if q:
            parts = [f"vs {ref}: tok/s {ratio(q, by_system[ref], 'tokens_per_s')}, peak {ratio(q, by_system[ref], 'peak_gib')}"
                     + (" (a side is UNSTEADY: not to be quoted)" if unsteady(q) or unsteady(by_system[ref]) else "")
                     for ref in SYSTEMS if ref != "qlorad" and ref in by_system]
            if parts:
                print(f"{'':34}qlorad " + "; ".join(parts))
        print_curve_gaps(by_system)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=pathlib.Path, help="folder for e2e_bench.json and the logs")
    ap.add_argument("--bin", type=pathlib.Path, default=ROOT / "build-gpu" / "bin", help="folder with qlorad-train")
    ap.add_argument("--work", type=pathlib.Path, default=ROOT / "runs" / "e2e",
                    help="folder for the models (kept and reused: an 8B model is 16 GiB), data and qlorad's output")
    ap.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}")
    ap.add_argument("--shapes", default="1b,8b", help=f"comma-separated, of {', '.join(SHAPES)}")
    ap.add_argument("--ckpt", default="off,on", help="activation checkpointing settings to run: off, on or both")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--data", choices=["random", "text"], default="random",
                    help="random ids (timing), or real text as bytes (text_data.py): with a few hundred steps, "
                         "the loss curves are compared with hf's (bench/e2e/README.md)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (at least 1)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--no-quant", action="store_true", help="bf16 base weights (a harness check on the CPU)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak (default: by its name)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds each system's run may take")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of every system per shape and setting, interleaved (all systems, then all "
                         "again): a system whose steps were erratic in one round may be steady in another, "
                         "and the ratios take the median of its steady rounds")
    ap.add_argument("--qlorad-loss-chunk", default="auto",
                    help="qlorad's train.loss_chunk_size: the rows per tile of its online cross-entropy "
                         "(auto: the op's own sizes)")
    ap.add_argument("--commit", default=os.environ.get("QLORAD_COMMIT"), help="qlorad's commit (default: git's HEAD)")
    ap.add_argument("--merge", nargs="+", type=pathlib.Path, metavar="JSON",
                    help="run nothing: print one table of these e2e_bench.json files (calls of one session on one "
                         "GPU) and write them as one to --out")
    args = ap.parse_args()
    args.systems = args.systems.split(",")
    if "hf" in args.systems:  # first: with --data text the others start from its adapter
        args.systems = ["hf"] + [s for s in args.systems if s != "hf"]
    args.shapes = args.shapes.split(",")
    args.ckpt = args.ckpt.split(",")
    for values, allowed, what in ((args.systems, SYSTEMS, "system"), (args.shapes, SHAPES, "shape"),
                                  (args.ckpt, ("off", "on"), "ckpt")):
        for v in values:
            if v not in allowed:
                ap.error(f"unknown {what} '{v}' (expected one of {', '.join(allowed)})")
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be at least 1 (a step's time is measured from the one before)")
    args.bin, args.out, args.work = args.bin.resolve(), args.out.resolve(), args.work.resolve()
    return args


def merge(files, out):
    """One table and one JSON of several calls' results (a GPU command may run 10 minutes; an 8B
    shape takes a call of its own)."""
    parts = [json.loads(f.read_text()) for f in files]
    meta = dict(parts[0]["meta"], merged_from=[dict(file=str(f), **p["meta"]) for f, p in zip(files, parts)])
    for key in ("gpu", "commit"):
        if len({p["meta"][key] for p in parts}) > 1:
            print(f"WARNING: the files differ in {key}: {sorted({p['meta'][key] for p in parts})}")
    runs = [r for p in parts for r in p["runs"]]
    print_table(runs, meta)
    (out / "e2e_bench.json").write_text(json.dumps(dict(meta=meta, runs=runs), indent=1))


def main():
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        return merge(args.merge, args.out)
    (args.out / "logs").mkdir(exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    facts = gpu_facts(args.device)
    meta = dict(facts, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                commit=git_commit(args.commit), torch=torch.__version__, python=sys.version.split()[0],
                peak_tflops=(args.peak_tflops or peak_tflops(facts["gpu"])) if args.device == "cuda" else None,
                args={k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()},
                flops_per_token={}, versions={}, switches=trainer_switches())
    runs = []

    def save():
        (args.out / "e2e_bench.json").write_text(json.dumps(dict(meta=meta, runs=runs), indent=1))

    log(f"{meta['gpu']}, torch {meta['torch']}, commit {meta['commit']}; shapes {args.shapes}, ckpt {args.ckpt}, "
        f"systems {args.systems}")
    device = "cuda:0" if args.device == "cuda" else "cpu"
    for shape in args.shapes:
        config, batch, seq = SHAPES[shape]
        model = prepare_model(args.work, shape, args.device)
        data = args.work / f"data-{shape}-{args.data}.jsonl"
        if args.data == "text":
            make_text_data(data, rows=batch * (args.warmup + args.steps), seq_len=seq)
        else:
            make_data(data, config["vocab_size"], rows=batch * (args.warmup + args.steps), seq_len=seq)
        packed_data = args.work / f"data-{shape}-packed.jsonl"
        if "qlorad-packed" in args.systems:
            make_data(packed_data, config["vocab_size"], rows=batch * (args.warmup + args.steps), seq_len=seq,
                      docs_per_row=PACKED_DOCS)
        flops = flops_per_token(config, seq, RANK)
        meta["flops_per_token"][shape] = flops
        for ckpt, round_, system in itertools.product(args.ckpt, range(1, args.rounds + 1), args.systems):
            if round_ == 1 and system == args.systems[0]:
                hf_init = None  # the starting adapter hf saved for this shape and setting
            if system == "qlorad-offload" and ckpt == "off":
                continue  # offload keeps what checkpointing keeps
            job = dict(shape=shape, model=str(model), data=str(packed_data if system == "qlorad-packed" else data),
                       system=system, batch=batch, seq=seq, ckpt=ckpt == "on",
                       steps=args.steps, warmup=args.warmup, device=device, quant=not args.no_quant,
                       rank=RANK, alpha=ALPHA, lr=LR, target_modules=PROJECTIONS)
            # Real text compares loss curves: every system it can starts from the adapter hf
            # saved in this run (hf runs first), so the curves differ by numerics, not by LoRA
            # A's random draw; never from one an earlier call left in --work.
            if args.data == "text" and system == "hf":
                job["save_init"] = str(args.work / f"init-adapter-{shape}-ckpt-{ckpt}")
            if system.startswith("qlorad") and hf_init:
                job["init_from"] = hf_init
            tag = f" round {round_}" if args.rounds > 1 else ""
            log(f"{shape} ({batch} x {seq}) ckpt {ckpt} {system}{tag}: starting")
            log_path = args.out / "logs" / f"{shape}-ckpt-{ckpt}-{system}{tag.replace(' ', '-')}.log"
            started = time.time()
            try:
                if system.startswith("qlorad"):
                    r = run_qlorad(job, args, args.work, log_path)
                else:
                    r = run_torch_system(system, job, args.work, log_path, args.timeout)
            except Exception:  # the harness's own fault with one system: the others still run
                r = failure("harness", traceback.format_exc())
            r = summarize(r, batch * seq, flops, meta["peak_tflops"])
            r.update(shape=shape, batch=batch, seq=seq, ckpt=ckpt, system=system, round=round_,
                     wall_s=time.time() - started)
            meta["versions"].update(r.get("versions", {}))
            if system == "hf":
                hf_init = job.get("save_init") if r["status"] == "ok" else None
            runs.append(r)
            save()
            if r["status"] == "ok":
                log(f"{shape} ckpt {ckpt} {system}: {r['ms_per_step']:.1f} ms/step, {r['tokens_per_s']:.0f} tok/s, "
                    f"peak {fmt(r['peak_gib'], '.2f')} GiB, loss {r['loss_first']:.4f} -> {r['loss_last']:.4f} "
                    f"({r['wall_s']:.0f} s)")
            else:
                log(f"{shape} ckpt {ckpt} {system}: FAILED ({r['error']}, {r['wall_s']:.0f} s): "
                    f"{(r['stderr_tail'] or [''])[-1]}")
    print_table(runs, meta)
    log(f"wrote {args.out / 'e2e_bench.json'}")


if __name__ == "__main__":
    main()
