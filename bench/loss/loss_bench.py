"""lm_head + cross-entropy, forward and backward, six ways side by side in one run:
  naive         logits = hidden @ W^T in bf16, upcast to fp32, F.cross_entropy (as transformers does)
  ours generic  chunked, per-chunk autograd (worker/trainer/loss/chunked_loss.cc's algorithm)
  ours fused    chunked, matmul + qlorad::ce_loss_grad_ (the CUDA kernel) + two matmuls per chunk
                (worker/trainer/loss/fused_linear_ce.cc's algorithm for a trainable W)
  ours online   qlorad::linear_ce_online: per chunk of rows, the vocabulary in tiles with an online
                softmax, never a [rows, V] buffer (the trainer's fused path for a frozen W); its
                automatic tile sizes, and with --online-tiles R:C ... also "ours_online_R_C"
                (rows R, columns C per tile). Not run with --train-weight (no gradient of W).
  liger         Liger Kernel's LigerFusedLinearCrossEntropyLoss
  cce           Apple's Cut Cross-Entropy, linear_cross_entropy
Our drivers are the trainer's C++ loops written again in Python around the same operators, so
that all six run in one process on the same tensors. Inputs: bf16 hidden [N, d] (requires grad),
bf16 lm_head W [V, d] (frozen, as in QLoRA; --train-weight makes it trainable), labels with ~5%
ignored. Per case: the peak of memory allocated during forward + backward above what the inputs
hold, and the median time of forward + backward (CUDA events). Each result is checked against the
naive loss and hidden gradient first.
  QLORAD_OPS_LIB=build-gpu/kernels/libqlorad_ops.so python3 bench/loss/loss_bench.py --out DIR \
      [--online-tiles 256:8192 128:16384 512:4096]
"""
import argparse
import json
import os
import statistics
import sys

import torch
import torch.nn.functional as F

IGNORE = -100


def load_ops():
    # Called by main() (so that --help needs no library); importers load the library themselves.
    torch.ops.load_library(os.environ.get("QLORAD_OPS_LIB", "build-gpu/kernels/libqlorad_ops.so"))


def chunk_rows_auto(vocab, budget=256 << 20):
    # ResolveLossChunkRows(0, V): the most rows whose fp32 logits fit 256 MiB.
    return max(1, budget // (vocab * 4))


def fused_chunk_rows_auto(tokens, dim, vocab):
    # FusedLossChunkRows(N, d, V) (chunked_loss.h): at least 256 rows (matmul efficiency), at most a
    # quarter of the hidden states' size in logits, never above the generic budget.
    return min(max(256, tokens * dim // 4 // vocab), chunk_rows_auto(vocab))


class GenericChunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, rows):
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        for s in range(0, hidden.shape[0], rows):
            logits = F.linear(hidden[s:s + rows], weight).float()
            total += F.cross_entropy(logits, labels[s:s + rows], ignore_index=IGNORE,
                                     reduction="sum").double()
        ctx.save_for_backward(hidden, weight, labels)
        ctx.rows = rows
        return total

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, labels = ctx.saved_tensors
        need_w = ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(hidden)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        w = weight.detach().requires_grad_(need_w)
        with torch.enable_grad():
            for s in range(0, hidden.shape[0], ctx.rows):
                h = hidden[s:s + ctx.rows].detach().requires_grad_(True)
                loss = F.cross_entropy(F.linear(h, w).float(), labels[s:s + ctx.rows],
                                       ignore_index=IGNORE, reduction="sum")
                inputs = [h, w] if need_w else [h]
                grads = torch.autograd.grad(loss, inputs, grad.float())
                grad_h[s:s + ctx.rows] = grads[0]
                if need_w:
                    grad_w += grads[1]
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None


class FusedChunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, rows):
        need_w = weight.requires_grad
        grad_h = torch.empty_like(hidden)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        for s in range(0, hidden.shape[0], rows):
            h = hidden[s:s + rows]
            logits = F.linear(h, weight)  # becomes d(loss)/d(logits)
            total += torch.ops.qlorad.ce_loss_grad_(logits, labels[s:s + rows], IGNORE).sum(dtype=torch.float64)
            torch.mm(logits, weight, out=grad_h[s:s + rows])
            if need_w:
                grad_w += logits.t() @ h
            # Free this chunk before the next one's matmul allocates its own (as the C++ loop's
            # scope does): otherwise two [rows, V] buffers are alive at once.
            del logits
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype) if need_w else None)
        return total

    @staticmethod
    def backward(ctx, grad):
        # Scaled in place (unpacking checks versions, so a second backward fails instead of scaling
        # twice); the saved tensors are released after this node and become the inputs' gradients.
        grad_h, grad_w = ctx.saved_tensors
        grad_h.mul_(grad.to(grad_h.dtype))
        if grad_w is not None:
            grad_w.mul_(grad.to(grad_w.dtype))
        return grad_h, grad_w, None, None


class FusedOnline(torch.autograd.Function):
    """qlorad::linear_ce_online for a frozen W: losses and d(loss)/d(hidden) in forward, like
    FusedChunked; rows, cols 0 are the op's automatic sizes."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, rows, cols):
        losses, grad_h = torch.ops.qlorad.linear_ce_online(hidden, weight, labels, IGNORE, rows=rows,
                                                           cols=cols)
        ctx.save_for_backward(grad_h)
        return losses.sum(dtype=torch.float64)

    @staticmethod
    def backward(ctx, grad):
        (grad_h,) = ctx.saved_tensors  # scaled in place, as in FusedChunked
        grad_h.mul_(grad.to(grad_h.dtype))
        return grad_h, None, None, None, None


def parse_tile(text):
    rows, sep, cols = text.partition(":")
    if not sep or not rows.isdigit() or not cols.isdigit() or int(rows) == 0 or int(cols) == 0:
        raise argparse.ArgumentTypeError(f"expected ROWS:COLS (positive integers), got {text!r}")
    return int(rows), int(cols)


def naive(h, w, y):
    return F.cross_entropy(F.linear(h, w).float(), y, ignore_index=IGNORE)


def ours(fn, *sizes):
    def run(h, w, y):
        return fn.apply(h, w, y, *sizes) / (y != IGNORE).sum()
    return run


def methods(rows, fused_rows, extra_fused_rows, online_tiles, train_weight):
    out = {"naive": naive, "ours_generic": ours(GenericChunked, rows),
           "ours_fused": ours(FusedChunked, fused_rows)}
    for r in extra_fused_rows:  # the memory / time trade-off of the fused chunk size
        out[f"ours_fused_{r}"] = ours(FusedChunked, r)
    if not train_weight:  # the online op gives no gradient of W
        out["ours_online"] = ours(FusedOnline, 0, 0)
        for r, c in online_tiles:
            out[f"ours_online_{r}_{c}"] = ours(FusedOnline, r, c)
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        liger = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE)
        out["liger"] = lambda h, w, y: liger(w, h, y)
    except Exception as e:  # noqa: BLE001 - report, then go on without it
        print(f"liger-kernel not importable: {e}", file=sys.stderr)
    try:
        from cut_cross_entropy import linear_cross_entropy
        out["cce"] = lambda h, w, y: linear_cross_entropy(h, w, y, ignore_index=IGNORE)
    except Exception as e:  # noqa: BLE001
        print(f"cut-cross-entropy not importable: {e}", file=sys.stderr)
    return out


def measure(fn, h, w, y, iters):
    def step():
        h.grad = None
        w.grad = None
        loss = fn(h, w, y)
        loss.backward()
        return loss
    loss = step()  # warm-up (Triton compiles, cuBLAS picks)
    torch.cuda.synchronize()
    grad = h.grad.float().clone()
    h.grad = None
    w.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    h.grad = None
    w.grad = None
    return loss.item(), grad, peak, statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--dims", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--tokens", type=int, nargs="+", default=[8192, 16384, 32768])
    ap.add_argument("--chunk-rows", type=int, default=0, help="0: the trainer's auto size")
    ap.add_argument("--fused-chunk-rows", type=int, default=0,
                    help="0: the trainer's fused auto size (FusedLossChunkRows)")
    ap.add_argument("--extra-fused-rows", type=int, nargs="*", default=[128],
                    help="also time the fused path at these chunk sizes")
    ap.add_argument("--online-tiles", type=parse_tile, nargs="*", default=[], metavar="ROWS:COLS",
                    help="also time qlorad::linear_ce_online at these tile sizes (ours_online_R_C)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--train-weight", action="store_true")
    args = ap.parse_args()
    load_ops()
    os.makedirs(args.out, exist_ok=True)
    rows = args.chunk_rows or chunk_rows_auto(args.vocab)
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "vocab": args.vocab,
               "chunk_rows": rows, "weight_trainable": args.train_weight, "cases": []}
    summary = []
    for d in args.dims:
        gen = torch.Generator(device="cuda").manual_seed(0)
        w = (torch.randn(args.vocab, d, device="cuda", generator=gen) * d ** -0.5).bfloat16()
        w.requires_grad_(args.train_weight)
        for n in args.tokens:
            h = torch.randn(n, d, device="cuda", generator=gen).bfloat16().requires_grad_(True)
            y = torch.randint(args.vocab, (n,), device="cuda", generator=gen)
            y[torch.rand(n, device="cuda", generator=gen) < 0.05] = IGNORE
            fused_rows = args.fused_chunk_rows or fused_chunk_rows_auto(n, d, args.vocab)
            case = {"d": d, "tokens": n, "fused_chunk_rows": fused_rows, "methods": {}}
            ref_loss, ref_grad = None, None
            for name, fn in methods(rows, fused_rows, args.extra_fused_rows, args.online_tiles,
                                       args.train_weight).items():
                try:
                    loss, grad, peak, ms = measure(fn, h, w, y, args.iters)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    case["methods"][name] = {"error": "out of memory"}
                    print(f"d={d} N={n} {name}: out of memory", flush=True)
                    continue
                if ref_loss is None:
                    ref_loss, ref_grad = loss, grad
                err = ((grad - ref_grad).abs().max() / ref_grad.abs().max()).item()
                case["methods"][name] = {"loss": loss, "loss_diff": loss - ref_loss,
                                         "grad_hidden_rel_err": err, "peak_bytes": peak, "ms": ms}
                del grad
                torch.cuda.empty_cache()
                print(f"d={d} N={n} {name:20s} loss {loss:.6f} (diff {loss - ref_loss:+.2e}, grad err "
                      f"{err:.1e})  peak {peak / 2**30:7.3f} GiB  {ms:8.2f} ms", flush=True)
            m = case["methods"]
            ok = {k: v for k, v in m.items() if "error" not in v}
            if "naive" in ok:
                for k, v in ok.items():
                    v["mem_vs_naive"] = v["peak_bytes"] / ok["naive"]["peak_bytes"]
                    v["time_vs_naive"] = v["ms"] / ok["naive"]["ms"]
            others = [ok[k] for k in ("liger", "cce") if k in ok]
            ours_names = [k for k in ok if k.startswith("ours_")]
            if others:
                best_mem = min(o["peak_bytes"] for o in others)
                best_ms = min(o["ms"] for o in others)
                for k in ours_names:
                    ok[k]["mem_vs_best_other"] = ok[k]["peak_bytes"] / best_mem
                    ok[k]["time_vs_best_other"] = ok[k]["ms"] / best_ms
            print("  ratios to naive: " + ", ".join(
                f"{k} mem {v.get('mem_vs_naive', float('nan')):.3f}x time {v.get('time_vs_naive', float('nan')):.2f}x"
                for k, v in ok.items()), flush=True)
            for k in ours_names:
                v = ok[k]
                line = (f"  d={d} N={n} {k:20s} peak {v['peak_bytes'] / 2**20:8.1f} MiB {v['ms']:8.2f} ms"
                        f"  vs naive time {v.get('time_vs_naive', float('nan')):.2f}x")
                if "mem_vs_best_other" in v:
                    line += (f"  vs best(liger, cce): mem {v['mem_vs_best_other']:.2f}x"
                             f" time {v['time_vs_best_other']:.2f}x")
                print(line, flush=True)
                summary.append(line)
            results["cases"].append(case)
            # Written after every case, so that a run cut short still leaves what it measured.
            with open(os.path.join(args.out, "loss_bench.json"), "w") as f:
                json.dump(results, f, indent=1)
            del h, y
            torch.cuda.empty_cache()
        del w
    # Targets: fused mem <= 1.2x best(liger, cce), time <= 1.2x best and <= 1.1x naive.
    print("# summary (fused chunk rows: " + ", ".join(
        f"d={c['d']} N={c['tokens']}: {c['fused_chunk_rows']}" for c in results["cases"]) + ")")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
