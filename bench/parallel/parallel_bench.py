"""Data-parallel QLoRA training, side by side in one run: one process against ddp and fsdp on N ranks.

Writes a Llama-3.2-1B-shaped model (random bf16 weights, Hugging Face layout) and a random-token
dataset, then trains the same job (same global batch, same seed) with
  single  1 rank                       (micro_batch_size m, grad_accum N)
  ddp     N ranks, replicated model    (micro_batch_size m, grad_accum 1 on each rank)
  fsdp    N ranks, sharded model       (same)
through `qlorad-train launch --nproc N`, and prints per-step loss agreement with the single run,
time per step, tokens/s (total and per GPU, with the scaling efficiency), per-rank peak memory, and
the bytes an fsdp step gathers as packed NF4 against what bf16 FSDP would move for the same weights
(computed from the shapes). Writes JSON to --out.

  python3 bench/parallel/parallel_bench.py --bin build-gpu/bin --nproc 2 --out OUT [--device cuda]
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import torch

# The model, data and job writers are shared with the other benchmarks (bench/common).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "common"))
from qlorad_job import parse_events, write_spec  # noqa: E402
from random_llama import LLAMA_1B, make_data, make_model, nf4_bytes, projection_shapes  # noqa: E402


def run(bin_dir, spec, nproc, device, log, phase_timing, profile):
    cmd = [str(bin_dir / "qlorad-train"), "launch", "--nproc", str(nproc), str(spec), "--json", "--device", device]
    started = time.time()
    env = dict(os.environ, QLORAD_PHASE_TIMING="1" if phase_timing else "0")
    if profile:
        env.update(QLORAD_PROFILE=str(profile), QLORAD_PROFILE_FIRST="5", QLORAD_PROFILE_STEPS="3")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    log.write_text(proc.stdout + "\n--- stderr\n" + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}); last stderr:\n" + "\n".join(proc.stderr.splitlines()[-20:]))
    metrics, comm, phases = parse_events(proc.stdout, proc.stderr)
    return metrics, comm, phases, time.time() - started


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, type=pathlib.Path)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--micro", type=int, default=2, help="rows per rank per micro-batch")
    ap.add_argument("--accum", type=int, default=1, help="micro-batches per rank per step (single runs N times as many)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=None, help="fewer layers than the 1B model (for CPU tries)")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--strategies", default="ddp,fsdp",
                    help="comma-separated; fsdp+offload is fsdp with parallel.cpu_offload: true")
    ap.add_argument("--activation-checkpointing", choices=["true", "false"], default="true",
                    help="train.activation_checkpointing (the trainer's default: true)")
    ap.add_argument("--lora-precision", default="auto", help="lora.compute_precision (auto: the training precision; or fp32)")
    ap.add_argument("--profile", action="store_true",
                    help="record a Kineto trace of steps 5-7 of every run and print trace_summary.py's reading of rank 0's "
                         "(the later steps run slower: time without it)")
    ap.add_argument("--phase-timing", action="store_true",
                    help="also print where a step's time goes (the trainer syncs the GPU per phase: slower)")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    gen_device = "cuda" if torch.cuda.is_available() else "cpu"
    config = make_model(work / "model", LLAMA_1B, gen_device, args.layers)
    n, steps = args.nproc, args.steps
    rows_per_step = n * args.micro * args.accum
    make_data(work / "data.jsonl", config["vocab_size"], rows=rows_per_step * steps, seq_len=args.seq_len)
    tokens_per_step = rows_per_step * args.seq_len

    runs = [("single", 1, n * args.accum)] + [(s, n, args.accum) for s in args.strategies.split(",")]
    results = {}
    for strategy, nproc, accum in runs:
        spec = work / f"{strategy}.yaml"
        write_spec(spec, work / "model", work / "data.jsonl", work / f"out-{strategy}", strategy=strategy.split("+")[0],
                   nproc=nproc, micro=args.micro, accum=accum, steps=steps, seq_len=args.seq_len,
                   precision=args.precision, lora_precision=args.lora_precision,
                   cpu_offload=strategy.endswith("+offload"),
                   activation_checkpointing=args.activation_checkpointing == "true")
        profile = out / f"trace-{strategy}" if args.profile else None
        metrics, comm, phases, wall = run(args.bin.resolve(), spec, nproc, args.device, out / f"{strategy}.log",
                                          args.phase_timing, profile)
        rank0 = metrics.get(0, [])
        if len(rank0) != steps:
            sys.exit(f"{strategy}: expected {steps} metrics from rank 0, got {len(rank0)}")
        step_times = [b["wall_time_s"] - a["wall_time_s"] for a, b in zip(rank0, rank0[1:])]
        step_s = statistics.median(step_times[len(step_times) // 4:])  # past the warm-up steps
        results[strategy] = dict(nproc=nproc, wall_s=wall, comm_bytes_per_step=comm, losses=[m["loss"] for m in rank0], step_s=step_s,
                                 tokens_per_s=tokens_per_step / step_s,
                                 peak_bytes={r: max(m.get("vram_peak_bytes", 0) for m in ms) for r, ms in metrics.items()})
        print(f"{strategy}: {nproc} rank(s), {step_s * 1e3:.0f} ms/step, final loss {rank0[-1]['loss']:.4f}", flush=True)
        if phases:
            print(f"  rank 0 {phases}", flush=True)
        trace = out / f"trace-{strategy}-rank0.json"
        if profile and trace.exists():
            summary = subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name("trace_summary.py")),
                                      str(trace), "--steps", "3"], capture_output=True, text=True)
            print("\n".join("  " + l for l in (summary.stdout + summary.stderr).splitlines()), flush=True)

    base = results["single"]
    print(f"\nLlama-3.2-1B shapes{' (%d layers)' % args.layers if args.layers else ''}, global batch "
          f"{rows_per_step} x {args.seq_len} tokens ({args.accum} micro-batch(es) of {args.micro} rows per rank), {steps} steps, {args.precision} (LoRA computes in {args.lora_precision}), activation checkpointing {args.activation_checkpointing}, device {args.device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if torch.cuda.is_available() else ''}")
    print(f"{'run':12} {'ranks':>5} {'ms/step':>8} {'tok/s':>8} {'tok/s/GPU':>9} {'scaling':>8} "
          f"{'peak GiB/rank':>14} {'max rel loss diff':>18}")
    for name, r in results.items():
        diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(r["losses"], base["losses"]))
        r["max_rel_loss_diff_vs_single"] = diff
        per_gpu = r["tokens_per_s"] / r["nproc"]
        r["scaling_vs_single"] = per_gpu / base["tokens_per_s"]
        peaks = "/".join(f"{v / 2**30:.1f}" for _, v in sorted(r["peak_bytes"].items()))
        print(f"{name:12} {r['nproc']:5d} {r['step_s'] * 1e3:8.0f} {r['tokens_per_s']:8.0f} {per_gpu:9.0f} "
              f"{r['scaling_vs_single']:7.2f}x {peaks:>14} {diff:18.2e}")

    # What one fsdp step gathers per rank (forward + backward regather, reshard_after_forward true).
    per_layer = {k: a * b for k, (a, b) in projection_shapes(config).items()}
    layers = config["num_hidden_layers"]
    nf4 = layers * sum(nf4_bytes(v) for v in per_layer.values())
    bf16 = layers * sum(2 * v for v in per_layer.values())
    share = (n - 1) / n  # the part of each gathered tensor that comes from other ranks
    gathered = 2 * nf4 * share
    print(f"\nfsdp frozen-weight traffic per rank per step (computed, fwd + bwd regather): packed NF4 "
          f"{gathered / 2**20:.0f} MiB vs bf16 FSDP {2 * bf16 * share / 2**20:.0f} MiB ({bf16 / nf4:.2f}x less)")
    for name, r in results.items():
        if r["comm_bytes_per_step"] is not None:
            print(f"{name}: measured {r['comm_bytes_per_step'] / 2**20:.1f} MiB received per rank per step "
                  f"(every collective: gathers, gradient reductions, bookkeeping)")
    summary = dict(config=config, nproc=n, steps=steps, micro=args.micro, accum=args.accum, seq_len=args.seq_len,
                   precision=args.precision, lora_precision=args.lora_precision, runs=results,
                   fsdp_gather_bytes_per_rank_step=gathered, bf16_fsdp_gather_bytes_per_rank_step=2 * bf16 * share)
    (out / "parallel_bench.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
