#!/usr/bin/env python3
"""Condenses a Kineto trace the trainer wrote (QLORAD_PROFILE=<prefix>, see
worker/trainer/runtime/step_profiler.h) into where the GPU's time went, per profiled step:

  - per CUDA stream: busy time (the union of its kernels and copies) and kernel count;
  - the compute stream (the busiest): idle time inside the window, in gaps of each size class,
    and the largest gaps with the kernels on either side (a gap is time the GPU had nothing to do
    on that stream: waiting for a collective, for the host, or for a copy);
  - NCCL time, and how much of it ran while the compute stream was busy (overlap);
  - the compute stream's time by kernel family and its top kernels;
  - with --by-op, the compute stream's time per CPU op and input shape that launched it (the
    innermost op: Kineto gives a kernel its launching op's "External id"), with TFLOP/s for the
    matrix products. Shapes are in the trace only when it was recorded with
    QLORAD_PROFILE_SHAPES=1. With --callers as well, each row also names the nearest enclosing op
    that is not an aten:: op (an autograd node's backward, a qlorad op, a Function's forward):
    which part of the model launched a fill or a copy.

usage: trace_summary.py TRACE.json [--steps N] [--top K] [--by-op [--callers]]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

GPU_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def overlap_length(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Length of the intersection of two interval unions."""
    def merged(intervals):
        out = []
        for start, stop in sorted(intervals):
            if out and start <= out[-1][1]:
                out[-1][1] = max(out[-1][1], stop)
            else:
                out.append([start, stop])
        return out
    a, b = merged(a), merged(b)
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0.0, hi - lo)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def family(name: str) -> str:
    lower = name.lower()
    if "nccl" in lower:
        return "nccl"
    if "nf4" in lower or "qlorad" in lower:
        return "ours (qlorad kernels)"
    if "cross_entropy" in lower or "online_lse" in lower or lower.startswith("ce_"):
        return "loss (ours)"
    if any(k in lower for k in ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "sm80_")):
        return "matmul"
    if "flash" in lower or "attention" in lower or "fmha" in lower:
        return "attention"
    if "memcpy" in lower or "copy" in lower:
        return "copy"
    if "reduce" in lower:
        return "reduction"
    if "elementwise" in lower or "vectorized" in lower or "unrolled" in lower:
        return "elementwise"
    return "other"


def matmul_flops(op: str, dims: list) -> float:
    """FLOPs of one matrix product from its input shapes, 0 when the op is not one."""
    shapes = [d for d in dims if isinstance(d, list)]
    try:
        if op in ("aten::mm", "aten::matmul") and len(shapes) >= 2 and len(shapes[0]) == 2:
            (m, k), n = shapes[0], shapes[1][1]
            return 2.0 * m * k * n
        if op in ("aten::addmm", "aten::addmm_") and len(shapes) >= 3 and len(shapes[1]) == 2:
            (m, k), n = shapes[1], shapes[2][1]
            return 2.0 * m * k * n
    except (IndexError, TypeError):
        pass
    return 0.0


def short_op_name(name: str) -> str:
    """An enclosing op's name without the namespaces: "bwd X" for autograd's evaluation of node X,
    a C++ Function's node (torch::autograd::CppNode<ns::(anonymous namespace)::F>) as F."""
    name = name.replace("autograd::engine::evaluate_function: ", "bwd ")
    if "CppNode<" in name:
        inner = name[name.index("CppNode<") + len("CppNode<"):].rstrip(">")
        name = name[:name.index("torch::autograd::CppNode<")] + inner.split("::")[-1]
    return name


def callers(events: list[dict]) -> dict:
    """External id -> the name of the nearest enclosing CPU op or annotation on the same thread
    whose name does not start with aten:: (nesting read from the intervals)."""
    by_thread: dict = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "user_annotation"):
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    out = {}
    for evs in by_thread.values():
        # Outer before inner where two start together: the longer one encloses.
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[dict] = []
        for e in evs:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                stack.pop()
            ext = e.get("args", {}).get("External id")
            if ext is not None:
                outer = next((a["name"] for a in reversed(stack) if not a["name"].startswith("aten::")), "")
                out[ext] = short_op_name(outer)
            stack.append(e)
    return out


def print_by_op(events: list[dict], compute_events: list[dict], per: float, top: int,
                with_callers: bool = False) -> None:
    caller = callers(events) if with_callers else {}
    ops = {}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == "cpu_op":
            ext = e.get("args", {}).get("External id")
            if ext is not None:
                ops[ext] = (e["name"], caller.get(ext, ""), e.get("args", {}).get("Input Dims", []))
    # Keyed by (op, enclosing op, shapes as JSON).
    time: dict[tuple[str, str, str], float] = collections.Counter()
    kernels: dict[tuple[str, str, str], int] = collections.Counter()
    launches: dict[tuple[str, str, str], set] = collections.defaultdict(set)
    for e in compute_events:
        ext = e.get("args", {}).get("External id")
        name, where, dims = ops.get(ext, ("(no op)", "", []))
        key = (name, where, json.dumps(dims))
        time[key] += e["dur"]
        kernels[key] += 1
        launches[key].add(ext)
    print("compute stream by launching op and input shapes (ms/step, kernels/step, TFLOP/s of products):")
    for key, total in sorted(time.items(), key=lambda kv: -kv[1])[:top]:
        # An op's FLOPs once per call, however many kernels (a split-K reduce) it launched.
        name, where, dims = key
        flops = matmul_flops(name, json.loads(dims)) * len(launches[key])
        tflops = f"{flops / total / 1e6:7.1f}" if flops > 0 else ""
        label = f"{name} in {where[:50]}" if where else name
        print(f"  {total / per:8.2f} {kernels[key] * 1000 / per:6.0f} {tflops:>7}  {label} {dims[:90]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace")
    parser.add_argument("--steps", type=int, default=3, help="steps the trace covers")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--by-op", action="store_true", help="GPU time per launching op and shape")
    parser.add_argument("--callers", action="store_true",
                        help="with --by-op: name each op's nearest enclosing non-aten op")
    args = parser.parse_args()
    with open(args.trace) as f:
        events = json.load(f)["traceEvents"]
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in GPU_CATEGORIES]
    if not gpu:
        print(f"{args.trace}: no GPU events (a CPU run, or CUPTI was unavailable)")
        return 1
    per = 1000.0 * args.steps  # us -> ms per step
    by_stream: dict[int, list[dict]] = collections.defaultdict(list)
    for e in gpu:
        by_stream[int(e.get("args", {}).get("stream", e.get("tid", 0)))].append(e)
    window = (min(e["ts"] for e in gpu), max(e["ts"] + e["dur"] for e in gpu))
    print(f"{args.trace}: {len(gpu)} GPU events over {(window[1] - window[0]) / per:.2f} ms/step "
          f"({args.steps} steps)")
    busy = {s: union_length([(e["ts"], e["ts"] + e["dur"]) for e in es]) for s, es in by_stream.items()}
    compute = max(busy, key=busy.get)
    for stream, es in sorted(by_stream.items(), key=lambda kv: -busy[kv[0]]):
        nccl = sum(e["dur"] for e in es if "nccl" in e["name"].lower())
        print(f"  stream {stream:>3}: busy {busy[stream] / per:8.2f} ms/step, {len(es) / args.steps:7.0f} "
              f"events/step, nccl {nccl / per:6.2f} ms/step" + ("   <- compute" if stream == compute else ""))

    ce = sorted(by_stream[compute], key=lambda e: e["ts"])
    gaps = []
    for before, after in zip(ce, ce[1:]):
        gap = after["ts"] - (before["ts"] + before["dur"])
        if gap > 0:
            gaps.append((gap, before["name"], after["name"], after["ts"]))
    classes = [(0, 10), (10, 50), (50, 200), (200, 1000), (1000, float("inf"))]
    print(f"compute stream idle inside the window: {sum(g[0] for g in gaps) / per:.2f} ms/step")
    for lo, hi in classes:
        sel = [g[0] for g in gaps if lo <= g[0] < hi]
        label = f"{lo}-{hi} us" if hi != float("inf") else f">= {lo} us"
        print(f"  gaps {label:>12}: {len(sel) / args.steps:7.1f}/step, {sum(sel) / per:7.2f} ms/step")
    print("  largest gaps (us, kernel before -> kernel after):")
    for gap, before, after, _ in sorted(gaps, reverse=True)[: args.top]:
        print(f"    {gap:8.1f}  {before[:60]} -> {after[:60]}")

    compute_iv = [(e["ts"], e["ts"] + e["dur"]) for e in by_stream[compute]]
    nccl_iv = [(e["ts"], e["ts"] + e["dur"]) for e in gpu if "nccl" in e["name"].lower()]
    if nccl_iv:
        nccl_total = union_length(nccl_iv)
        hidden = overlap_length(nccl_iv, compute_iv)
        print(f"nccl: {nccl_total / per:.2f} ms/step, {hidden / per:.2f} of it under compute "
              f"({100 * hidden / max(nccl_total, 1e-9):.0f}%)")

    families: dict[str, float] = collections.Counter()
    kernels: dict[str, list[float]] = collections.defaultdict(list)
    for e in by_stream[compute]:
        families[family(e["name"])] += e["dur"]
        kernels[e["name"]].append(e["dur"])
    print("compute stream by family (ms/step): " +
          ", ".join(f"{k} {v / per:.2f}" for k, v in sorted(families.items(), key=lambda kv: -kv[1])))
    print("top kernels on the compute stream (ms/step, calls/step, name):")
    for name, durs in sorted(kernels.items(), key=lambda kv: -sum(kv[1]))[: args.top]:
        print(f"  {sum(durs) / per:8.2f} {len(durs) / args.steps:6.0f}  {name[:110]}")
    if args.by_op:
        print_by_op(events, by_stream[compute], per, 3 * args.top, args.callers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
