"""qlorad::ce_loss_grad_ (the fused cross-entropy kernel) from Python: on CUDA against the op's
fp64-accumulating CPU reference and against autograd on F.cross_entropy (the generic path's math),
in fp32, fp16 and bf16, with ignored rows, z-loss and label smoothing, odd and packed vocabularies;
and the chunked fused driver (bench/loss/loss_bench.py's FusedChunked, the trainer's algorithm)
against the naive full-logits loss. Runs on CPU too (then the CPU implementation is what is tested).

QLORAD_OPS_LIB names the library (default: build-gpu/kernels/libqlorad_ops.so).
"""
import os
import pathlib
import sys

import pytest
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[2]
LIB = os.environ.get("QLORAD_OPS_LIB", str(ROOT / "build-gpu" / "kernels" / "libqlorad_ops.so"))
torch.ops.load_library(LIB)
# A crash inside a C++ op should show its native frames, not only the Python ones.
if hasattr(torch._C, "_set_print_stack_traces_on_fatal_signal"):
    torch._C._set_print_stack_traces_on_fatal_signal(True)
sys.path.insert(0, str(ROOT / "bench" / "loss"))
ops = torch.ops.qlorad
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Tolerances tied to the precision the gradient is stored in (the loss is always fp32 math).
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def make(rows, vocab, dtype, seed=0, ignored=(0, 3)):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=gen, dtype=torch.float64) * 3).to(dtype)
    labels = torch.randint(vocab, (rows,), generator=gen)
    for i in ignored:
        if i < rows:
            labels[i] = -100
    return logits, labels


def autograd_reference(logits, labels, smoothing, z_loss, scale):
    x = logits.double().requires_grad_(True)
    per_row = F.cross_entropy(x, labels, ignore_index=-100, reduction="none", label_smoothing=smoothing)
    valid = (labels != -100).double()
    per_row = per_row + z_loss * torch.logsumexp(x, -1).square() * valid
    (per_row.sum() * scale).backward()
    return per_row.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("vocab", [1, 37, 4096, 32003])
@pytest.mark.parametrize("smoothing,z_loss", [(0.0, 0.0), (0.1, 1e-3)])
def test_kernel_equals_reference_and_autograd(dtype, vocab, smoothing, z_loss):
    logits, labels = make(9, vocab, dtype)
    scale = 0.37
    ref_loss, ref_grad = autograd_reference(logits, labels, smoothing, z_loss, scale)
    on_device = logits.clone().to(DEVICE)  # a copy also on CPU: the original is needed below
    loss = ops.ce_loss_grad_(on_device, labels.to(DEVICE), -100, smoothing, z_loss, scale)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.cpu().double(), ref_loss, rtol=1e-5, atol=1e-5)
    tol = TOL[dtype]
    torch.testing.assert_close(on_device.cpu().double(), ref_grad, rtol=0, atol=tol * scale)
    assert on_device[0].abs().sum() == 0 and loss[0] == 0  # ignored row
    cpu = logits.clone()
    cpu_loss = ops.ce_loss_grad_(cpu, labels, -100, smoothing, z_loss, scale)
    torch.testing.assert_close(loss.cpu(), cpu_loss, rtol=1e-5, atol=1e-5)


def test_rows_with_a_stride_and_large_logits():
    logits, labels = make(5, 300, torch.float32, ignored=())
    wide = torch.zeros(5, 320, dtype=torch.float32)
    wide[:, :300] = logits + 80.0  # exp would overflow without the running max
    wide = wide.to(DEVICE)
    view = wide[:, :300]
    loss = ops.ce_loss_grad_(view, labels.to(DEVICE))
    ref_loss, ref_grad = autograd_reference(logits + 80.0, labels, 0.0, 0.0, 1.0)
    torch.testing.assert_close(loss.cpu().double(), ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(view.cpu().double(), ref_grad, rtol=0, atol=2e-6)
    assert wide[:, 300:].abs().sum() == 0  # the padding past the vocabulary is left alone


def test_out_of_range_label_gives_nan_loss():
    logits, labels = make(2, 10, torch.float32, ignored=())
    labels[1] = 10
    loss = ops.ce_loss_grad_(logits.to(DEVICE), labels.to(DEVICE))
    assert torch.isfinite(loss[0]) and torch.isnan(loss[1])


def test_bad_inputs_are_clear_errors():
    logits, labels = make(3, 10, torch.float32)
    with pytest.raises(RuntimeError, match="int64 labels"):
        ops.ce_loss_grad_(logits.to(DEVICE), labels.int().to(DEVICE))
    with pytest.raises(RuntimeError, match="labels"):
        ops.ce_loss_grad_(logits.to(DEVICE), labels[:2].to(DEVICE))
    with pytest.raises(RuntimeError, match="contiguous along the vocabulary"):
        ops.ce_loss_grad_(logits.t().to(DEVICE), labels.to(DEVICE))
    # The same layout with as many labels as rows: only the layout is wrong.
    with pytest.raises(RuntimeError, match="contiguous along the vocabulary"):
        ops.ce_loss_grad_(logits.t().to(DEVICE), torch.zeros(10, dtype=torch.long, device=DEVICE))
    # Overlapping rows (one row expanded) would be overwritten while being read.
    with pytest.raises(RuntimeError, match="rows apart"):
        ops.ce_loss_grad_(logits[:1].to(DEVICE).expand(3, 10), labels.to(DEVICE))
    with pytest.raises(RuntimeError, match="labels on"):
        ops.ce_loss_grad_(logits.to(DEVICE), labels.to("meta"))
    # A rejected call leaves the logits alone, on every device.
    on_device = logits.to(DEVICE)
    with pytest.raises(RuntimeError, match="labels"):
        ops.ce_loss_grad_(on_device, labels[:2].to(DEVICE))
    assert torch.equal(on_device.cpu(), logits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_chunked_fused_driver_equals_naive_full_logits(dtype, rows):
    os.environ.setdefault("QLORAD_OPS_LIB", LIB)
    import loss_bench  # noqa: E402 - the drivers, sharing this process's library

    gen = torch.Generator().manual_seed(1)
    n, d, v = 37, 64, 1031
    h64 = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w64 = torch.randn(v, d, generator=gen, dtype=torch.float64) * d ** -0.5
    y = torch.randint(v, (n,), generator=gen)
    y[[0, 5, 36]] = -100
    ref_h = h64.to(dtype).double().requires_grad_(True)
    ref_w = w64.to(dtype).double().requires_grad_(True)
    ref = F.cross_entropy(ref_h @ ref_w.t(), y, ignore_index=-100, reduction="sum")
    ref.backward()
    for fn in (loss_bench.FusedChunked, loss_bench.GenericChunked):
        h = h64.to(dtype).to(DEVICE).requires_grad_(True)
        w = w64.to(dtype).to(DEVICE).requires_grad_(True)
        out = fn.apply(h, w, y.to(DEVICE), rows)
        # An upstream gradient that is not 1 (the trainer divides by the valid tokens): the fused
        # driver scales its stored gradients in place in backward.
        (out * 0.37).backward(retain_graph=True)
        tol = 1e-5 if dtype == torch.float32 else 3e-2
        assert abs(out.item() - ref.item()) <= tol * abs(ref.item()), fn.__name__
        for got, want in ((h.grad, ref_h.grad), (w.grad, ref_w.grad)):
            want = want * 0.37
            err = (got.double().cpu() - want).abs().max() / want.abs().max()
            assert err <= tol, (fn.__name__, float(err))
        if fn is loss_bench.FusedChunked:
            with pytest.raises(RuntimeError, match="inplace"):  # would scale twice
                out.backward()
