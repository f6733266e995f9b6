"""NF4 dequantization, ours (libqlorad_ops.so) against bitsandbytes, side by side in one run.

For each of the nine NF4-challenge weights and one large weight: bitsandbytes quantizes it, and
both libraries dequantize those same tensors (results checked equal first). Timed per call, median:
  bnb eager    F.dequantize_4bit (Python overhead and its absmax kernels included)
  bnb graph    the same call captured in a CUDA graph (its raw kernels, no Python)
  ours eager   torch.ops.qlorad.nf4_dequantize
  ours graph   nf4_dequantize.out captured in a CUDA graph
plus one pass over the nine weights each way, and also through nf4_dequantize_many (one call, one
launch per output format), and a device-to-device copy as the bandwidth reference. Inputs rotate over copies exceeding the L2 cache several times.
  QLORAD_OPS_LIB=build-gpu/kernels/libqlorad_ops.so python3 bench/nf4/bnb_side_by_side.py --json out.json
"""
import argparse
import json
import os
import statistics

import bitsandbytes
import bitsandbytes.functional as F
import torch

torch.ops.load_library(os.environ.get("QLORAD_OPS_LIB", "build-gpu/kernels/libqlorad_ops.so"))
ops = torch.ops.qlorad

WEIGHTS = [
    ("gate 8192x2048", (8192, 2048), torch.float16),
    ("up 8192x2048", (8192, 2048), torch.float16),
    ("down 2048x8192", (2048, 8192), torch.float16),
    ("gate 4096x1024", (4096, 1024), torch.bfloat16),
    ("up 4096x1024", (4096, 1024), torch.bfloat16),
    ("down 1024x4096", (1024, 4096), torch.bfloat16),
    ("gate 14336x4096", (14336, 4096), torch.bfloat16),
    ("up 14336x4096", (14336, 4096), torch.bfloat16),
    ("down 4096x14336", (4096, 14336), torch.bfloat16),
    ("large 28672x8192", (28672, 8192), torch.bfloat16),
]
L2_BYTES = 50 * 2**20


def median_us(fn, calls_per_sample, samples):
    """Median time per call in microseconds; fn() performs calls_per_sample calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(1000.0 * start.elapsed_time(stop) / calls_per_sample)
    return statistics.median(times)


def graph_of(fn):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()  # warm-up outside the capture (allocations, lazy init)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


class Weight:
    """One bnb-quantized weight, in enough copies to defeat the L2 cache."""

    def __init__(self, name, shape, dtype, seed):
        self.name, self.shape, self.dtype = name, shape, dtype
        gen = torch.Generator(device="cuda").manual_seed(seed)
        w = torch.randn(shape, generator=gen, device="cuda").mul_(0.02).to(dtype)
        packed, state = F.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
        numel = w.numel()
        self.bytes = packed.numel() + state.absmax.numel() + 4 * state.state2.absmax.numel() + 1024 + numel * w.element_size()
        copies = max(2, min(32, -(-4 * L2_BYTES // self.bytes)))
        self.sets = []
        for _ in range(copies):
            p = packed.clone()
            s = F.QuantState(absmax=state.absmax.clone(), shape=state.shape, code=state.code, blocksize=64,
                             quant_type="nf4", dtype=dtype, offset=state.offset.clone(),
                             state2=F.QuantState(absmax=state.state2.absmax.clone(), code=state.state2.code.clone(),
                                                 blocksize=state.state2.blocksize, dtype=torch.float32))
            out = torch.empty(shape, dtype=dtype, device="cuda")
            self.sets.append((p, s, out))

    def bnb(self, i):
        p, s, _ = self.sets[i]
        return F.dequantize_4bit(p, s)

    def bnb_out(self, i):
        p, s, out = self.sets[i]
        F.dequantize_4bit(p, s, out=out)

    def _args(self, i):
        p, s, _ = self.sets[i]
        return (p.view(-1), s.absmax, s.state2.absmax, s.state2.code, s.offset.reshape(()), list(self.shape), 64,
                self.dtype)

    def ours(self, i):
        return ops.nf4_dequantize(*self._args(i))

    def ours_out(self, i):
        ops.nf4_dequantize.out(*self._args(i), out=self.sets[i][2])


def ours_many_out(weights, i):
    """One nf4_dequantize_many call over the weights' set i: one launch per output format."""
    args = [w._args(i) for w in weights]
    ops.nf4_dequantize_many.out([a[0] for a in args], [a[1] for a in args], [a[2] for a in args],
                                [a[3] for a in args], [a[4] for a in args], [a[6] for a in args],
                                out=[w.sets[i][2] for w in weights])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    n = args.samples

    src = torch.empty(2**30, dtype=torch.uint8, device="cuda").fill_(1)
    dst = torch.empty_like(src)
    copy_us = median_us(lambda: dst.copy_(src), 1, n)
    copy_gbps = 2 * src.numel() / (copy_us * 1e3)
    del src, dst
    print(f"device {torch.cuda.get_device_name()}, bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__}, "
          f"copy {copy_gbps:.0f} GB/s")

    rows, weights = [], []
    header = f"{'weight':18} {'dtype':5} {'bnb eager':>10} {'bnb graph':>10} {'ours eager':>11} {'ours graph':>11} " \
             f"{'GB/s':>6} {'%copy':>6} {'x bnb graph':>11}"
    print(header)
    for seed, (name, shape, dtype) in enumerate(WEIGHTS):
        w = Weight(name, shape, dtype, seed)
        assert torch.equal(w.ours(0), w.bnb(0)), f"{name}: ours differs from bitsandbytes"
        k = len(w.sets)
        bnb_eager = median_us(lambda: [w.bnb(i) for i in range(k)], k, n)
        ours_eager = median_us(lambda: [w.ours(i) for i in range(k)], k, n)
        g_bnb = graph_of(lambda: [w.bnb_out(i) for i in range(k)])
        g_ours = graph_of(lambda: [w.ours_out(i) for i in range(k)])
        bnb_graph = median_us(g_bnb.replay, k, n)
        ours_graph = median_us(g_ours.replay, k, n)
        assert torch.equal(w.sets[0][2], w.bnb(0)), f"{name}: graph output differs"
        gbps = w.bytes / (ours_graph * 1e3)
        row = dict(name=name, dtype=str(dtype).split(".")[1], bytes=w.bytes, bnb_eager_us=bnb_eager,
                   bnb_graph_us=bnb_graph, ours_eager_us=ours_eager, ours_graph_us=ours_graph, ours_gbps=gbps,
                   ours_pct_copy=100 * gbps / copy_gbps, speedup_vs_bnb_graph=bnb_graph / ours_graph,
                   speedup_vs_bnb_eager=bnb_eager / ours_eager)
        rows.append(row)
        print(f"{name:18} {row['dtype']:5} {bnb_eager:10.1f} {bnb_graph:10.1f} {ours_eager:11.1f} {ours_graph:11.1f} "
              f"{gbps:6.0f} {row['ours_pct_copy']:5.1f}% {row['speedup_vs_bnb_graph']:10.2f}x")
        if len(weights) < 9:
            weights.append(w)
        else:
            del w
        del g_bnb, g_ours
        torch.cuda.empty_cache()

    nine_bnb = median_us(lambda: [w.bnb(0) for w in weights], 1, n)
    nine_ours = median_us(lambda: [w.ours(0) for w in weights], 1, n)
    g_nine = graph_of(lambda: [w.ours_out(0) for w in weights])
    nine_ours_graph = median_us(g_nine.replay, 1, n)
    for w in weights:
        w.sets[0][2].zero_()
    ours_many_out(weights, 0)
    for w in weights:
        assert torch.equal(w.sets[0][2], w.bnb(0)), f"{w.name}: grouped output differs from bitsandbytes"
    nine_many = median_us(lambda: ours_many_out(weights, 0), 1, n)
    g_many = graph_of(lambda: ours_many_out(weights, 0))
    nine_many_graph = median_us(g_many.replay, 1, n)
    nine_bytes = sum(w.bytes for w in weights)
    floor_us = nine_bytes / (copy_gbps * 1e3)
    print(f"nine-weight pass ({nine_bytes / 1e6:.0f} MB; {floor_us:.1f} us at copy bandwidth): "
          f"bnb dequantize_4bit x9 {nine_bnb:.1f} us")
    for label, us in [("ours nf4_dequantize x9, eager", nine_ours), ("ours nf4_dequantize.out x9, graph", nine_ours_graph),
                      ("ours nf4_dequantize_many, eager", nine_many), ("ours nf4_dequantize_many, graph", nine_many_graph)]:
        print(f"  {label:36} {us:7.1f} us  {nine_bnb / us:5.2f}x bnb  {100 * floor_us / us:5.1f}% of copy")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), bitsandbytes=bitsandbytes.__version__,
                           copy_gbps=copy_gbps, weights=rows, nine_pass_bytes=nine_bytes, nine_pass_bnb_us=nine_bnb,
                           nine_pass_ours_us=nine_ours, nine_pass_ours_graph_us=nine_ours_graph,
                           nine_pass_many_us=nine_many, nine_pass_many_graph_us=nine_many_graph), f, indent=1)


if __name__ == "__main__":
    main()
