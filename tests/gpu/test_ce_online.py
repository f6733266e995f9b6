"""qlorad::linear_ce_online (the online linear + cross-entropy for a frozen lm_head) from Python:
per-row losses and d(sum of losses)/d(hidden) against fp64 autograd (F.linear in fp64, then
F.cross_entropy with ignore_index and label_smoothing, plus z_loss * lse^2 per valid row) in fp32,
fp16 and bf16 (and fp64 on the CPU), at odd sizes and every kind of tiling (automatic, one row or
column at a time, tiles larger than the inputs); ignored rows, labels out of range, a running max
that has to move across the vocabulary tiles, logits of magnitude ~1e3, and clear errors. On CUDA
also: the CUDA result equals the op's CPU result, and agrees with the chunked fused path
(bench/loss/loss_bench.py's FusedChunked around qlorad::ce_loss_grad_) at a realistic size.

QLORAD_OPS_LIB names the library (default: build-gpu/kernels/libqlorad_ops.so); QLORAD_TEST_DEVICE
(cuda|cpu) overrides the device (default: cuda when available). tests/python/test_ce_online_cpu.py
runs this file on the CPU in CI.
"""
import math
import os
import pathlib
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_ce_ops as ce  # noqa: E402 - loads the library (QLORAD_OPS_LIB) and holds the tolerances

LIB, ops = ce.LIB, ce.ops
DEVICE = os.environ.get("QLORAD_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
IGNORE = -100
# test_ce_ops.py's: about twice the machine epsilon of the half types (fp32: the fp32 loss math).
# Here the logits are also rounded to the activation dtype (relative error eps / 2 each), which
# moves a loss by at most 2 * eps / 2 * max|logit|: the loss tolerance scales with max|logit|.
TOL = {torch.float64: 1e-10, **ce.TOL}
DTYPES = [torch.float32, torch.float16, torch.bfloat16] + ([torch.float64] if DEVICE == "cpu" else [])
needs_cuda = pytest.mark.skipif(DEVICE != "cuda", reason="needs CUDA")


@pytest.fixture(autouse=True, scope="module")
def cpu_threads():
    """On the CPU, one torch thread: the op's per-tile work is small, and on a shared machine
    OpenMP's hand-offs between tiles dominate (a 7x13 tiling of 37x1000 took 12 s instead of 10 ms
    on two busy cores). Yields the count before, for test_more_cpu_threads_still_equal_the_reference."""
    before = torch.get_num_threads()
    if DEVICE == "cpu":
        torch.set_num_threads(1)
    yield before
    torch.set_num_threads(before)


def make(n, vocab, dim, dtype, seed=0, ignored=(1, 3), logit_std=1.5):
    """hidden [n, dim], weight [vocab, dim] (logits ~ N(0, logit_std^2)) and labels, on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, dim, generator=gen, dtype=torch.float64).to(dtype)
    weight = (torch.randn(vocab, dim, generator=gen, dtype=torch.float64) * logit_std * dim ** -0.5).to(dtype)
    labels = torch.randint(vocab, (n,), generator=gen)
    for i in ignored:
        if i < n:
            labels[i] = IGNORE
    return hidden, weight, labels


def reference(hidden, weight, labels, smoothing=0.0, z_loss=0.0, ignore_index=IGNORE):
    """Per-row losses, d(sum)/d(hidden) and the logits, all fp64 on the CPU (autograd)."""
    h = hidden.detach().cpu().double().requires_grad_(True)
    logits = F.linear(h, weight.detach().cpu().double())
    labels = labels.cpu()
    per_row = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none",
                              label_smoothing=smoothing)
    valid = (labels != ignore_index).double()
    per_row = per_row + z_loss * torch.logsumexp(logits, -1).square() * valid
    per_row.sum().backward()
    return per_row.detach(), h.grad, logits.detach()


def online(hidden, weight, labels, device=DEVICE, **kw):
    return ops.linear_ce_online(hidden.to(device), weight.to(device), labels.to(device), **kw)


def expect_close(losses, grad, ref_loss, ref_grad, logits, weight, dtype, what="", loss_tol=None):
    """Losses within loss_tol (default TOL) * max|logit| (absolute); grad within TOL of its scale:
    max |ref grad|, or max |weight| when larger (the gradient is a softmax average of W's rows less
    the label's row, rounded at W's magnitude even where it cancels, e.g. V = 1)."""
    tol = TOL[dtype]
    loss_atol = (loss_tol or tol) * max(1.0, logits.abs().max().item())
    torch.testing.assert_close(losses.cpu().double(), ref_loss, rtol=0, atol=loss_atol,
                               msg=lambda m: f"{what}: {m}")
    scale = max(ref_grad.abs().max().item(), weight.abs().max().item())
    err = (grad.cpu().double() - ref_grad).abs().max().item()
    assert err <= tol * scale, f"{what}: grad hidden max error {err:.3e}, scale {scale:.3e}"


def tilings(n, vocab, budget=1500):
    """(rows, cols) pairs: automatic, one at a time, odd tiles, tiles larger than the inputs; those
    whose number of tiles (automatic counted as one) fits the budget, which bounds the run time."""
    pairs = [(0, 0), (1, 1), (7, 13), (n + 5, vocab + 3), (1, vocab + 3), (n + 5, 13), (7, 0), (0, 1)]
    def count(r, c):
        return (math.ceil(n / r) if r else 1) * (math.ceil(vocab / c) if c else 1)
    return [(r, c) for r, c in pairs if count(r, c) <= budget]


def check_output_types(losses, grad, hidden, dtype):
    assert losses.shape == (hidden.shape[0],)
    assert losses.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert grad.shape == hidden.shape and grad.dtype == dtype
    assert losses.device.type == grad.device.type == DEVICE


# N, V, d: every N of (1, 7, 37, 300), V of (1, 37, 1000, 4099) and d of (8, 24, 64).
SHAPES = [(1, 1, 8), (1, 4099, 64), (7, 37, 24), (37, 1000, 64), (300, 37, 8), (300, 4099, 24)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N%d_V%d_d%d" % s)
@pytest.mark.parametrize("smoothing,z_loss", [(0.0, 0.0), (0.1, 1e-3)])
def test_equals_fp64_autograd_at_every_tiling(dtype, shape, smoothing, z_loss):
    hidden, weight, labels = make(*shape, dtype)
    ref_loss, ref_grad, logits = reference(hidden, weight, labels, smoothing, z_loss)
    for rows, cols in tilings(shape[0], shape[1]):
        losses, grad = online(hidden, weight, labels, label_smoothing=smoothing, z_loss=z_loss,
                              rows=rows, cols=cols)
        check_output_types(losses, grad, hidden, dtype)
        expect_close(losses, grad, ref_loss, ref_grad, logits, weight, dtype, f"rows {rows} cols {cols}")
        valid = labels != IGNORE
        assert (losses.cpu()[~valid] == 0).all() and (grad.cpu()[~valid] == 0).all()


@pytest.mark.skipif(DEVICE != "cpu", reason="the CPU implementation's threads")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_more_cpu_threads_still_equal_the_reference(cpu_threads, dtype):
    hidden, weight, labels = make(300, 4099, 24, dtype)
    ref_loss, ref_grad, logits = reference(hidden, weight, labels, 0.1, 1e-3)
    torch.set_num_threads(max(2, cpu_threads))
    try:
        losses, grad = online(hidden, weight, labels, label_smoothing=0.1, z_loss=1e-3)
    finally:
        torch.set_num_threads(1)
    expect_close(losses, grad, ref_loss, ref_grad, logits, weight, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_without_gradient_returns_an_empty_one_and_the_same_losses(dtype):
    hidden, weight, labels = make(37, 1000, 24, dtype)
    for rows, cols in [(0, 0), (7, 13)]:
        with_grad, _ = online(hidden, weight, labels, label_smoothing=0.1, z_loss=1e-3, rows=rows, cols=cols)
        losses, grad = online(hidden, weight, labels, label_smoothing=0.1, z_loss=1e-3, rows=rows, cols=cols,
                              compute_grad=False)
        assert grad.numel() == 0
        torch.testing.assert_close(losses, with_grad, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_all_rows_ignored_gives_zero_losses_and_gradient(dtype):
    hidden, weight, labels = make(7, 37, 8, dtype)
    labels.fill_(IGNORE)
    for rows, cols in [(0, 0), (1, 13)]:
        losses, grad = online(hidden, weight, labels, label_smoothing=0.1, z_loss=1e-3, rows=rows, cols=cols)
        check_output_types(losses, grad, hidden, dtype)
        assert (losses.cpu() == 0).all() and (grad.cpu() == 0).all()


def test_ignore_index_may_be_a_vocabulary_index():
    hidden, weight, labels = make(37, 37, 24, torch.float32, ignored=())
    labels[[0, 5, 6]] = 2
    ref_loss, ref_grad, logits = reference(hidden, weight, labels, 0.1, 1e-3, ignore_index=2)
    losses, grad = online(hidden, weight, labels, ignore_index=2, label_smoothing=0.1, z_loss=1e-3, cols=13)
    expect_close(losses, grad, ref_loss, ref_grad, logits, weight, torch.float32)
    assert (losses.cpu()[labels == 2] == 0).all()


@pytest.mark.parametrize("bad", [37, 1000, -7])
def test_label_out_of_range_gives_nan_loss(bad):
    hidden, weight, labels = make(7, 37, 8, torch.float32)
    labels[4] = bad
    losses, _ = online(hidden, weight, labels, cols=13)
    losses = losses.cpu()
    assert torch.isnan(losses[4])
    others = torch.arange(7) != 4
    assert torch.isfinite(losses[others]).all()
    labels[4] = IGNORE  # the other rows are unaffected by the bad one
    ref_loss, _, logits = reference(hidden, weight, labels)
    torch.testing.assert_close(losses[others].double(), ref_loss[others], rtol=0,
                               atol=TOL[torch.float32] * logits.abs().max().item())


def rising_logits_inputs(dtype, n=37, vocab=1000, dim=24):
    """Logits that rise by ~56 from the first vocabulary tile of 100 to the last (far more than the
    8 the running max may lag), so the max moves again and again and the last tile holds it; made
    exact in every dtype (multiples of 1/4 below 64: hidden = (1, +-1, 0, ...), weight columns 0
    and 1 multiples of 1/4), so the reference sees the op's own logits."""
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(vocab, dim, generator=gen, dtype=torch.float64) * 0.2
    weight[:, 0] = (torch.linspace(0, 56, vocab, dtype=torch.float64) * 4).round() / 4
    weight[:, 1] = torch.randint(-8, 9, (vocab,), generator=gen).double() / 4
    hidden = torch.zeros(n, dim, dtype=torch.float64)
    hidden[:, 0] = 1.0
    hidden[:, 1] = torch.randint(0, 2, (n,), generator=gen).double() * 2 - 1
    labels = torch.randint(vocab, (n,), generator=gen)
    labels[2] = IGNORE
    return hidden.to(dtype), weight.to(dtype), labels


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_running_max_moves_across_tiles(dtype):
    hidden, weight, labels = rising_logits_inputs(dtype)
    ref_loss, ref_grad, logits = reference(hidden, weight, labels, 0.1, 1e-3)
    assert torch.equal(F.linear(hidden, weight).double(), logits)  # exact in this dtype
    cols = 100
    tile_max = logits.view(logits.shape[0], -1, cols).amax(-1)
    assert (tile_max[:, -1] - tile_max[:, 0] > 5 * 8).all()  # the inputs do what they claim
    assert (tile_max.argmax(-1) == tile_max.shape[1] - 1).all()
    # The logits are exact, so the loss (fp32 math) is held to fp32's tolerance in every dtype.
    loss_tol = TOL[torch.float64 if dtype == torch.float64 else torch.float32]
    for rows, c in [(7, cols), (0, 13), (0, 1), (0, 0)]:
        losses, grad = online(hidden, weight, labels, label_smoothing=0.1, z_loss=1e-3, rows=rows, cols=c)
        expect_close(losses, grad, ref_loss, ref_grad, logits, weight, dtype, f"rows {rows} cols {c}",
                     loss_tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_automatic_sizes_with_scratch_in_the_unwritten_gradient(dtype):
    """With automatic sizes and a gradient of at least twice the scratch of a tile larger than the
    op's own, the op first walks the rows ahead of the gradient's last rows with that larger tile,
    its scratch in those still unwritten rows, then the rest with its own scratch
    (ce_online_ops.cc). N=16384, V=64, d=256 takes rows [0, 8192) that way in fp32 on 4096-row
    tiles (one vocabulary tile), the rest on the op's own 2048 rows; in bf16 the larger tile is
    no larger than 2048 rows, so that case is a plain automatic run. The result must be that of
    one explicit tiling (row for row the same arithmetic) and of fp64 autograd."""
    hidden, weight, labels = make(16384, 64, 256, dtype, ignored=range(0, 16384, 7))
    losses, grad = online(hidden, weight, labels, label_smoothing=0.1, z_loss=1e-3)
    ref_loss, ref_grad, logits = reference(hidden, weight, labels, 0.1, 1e-3)
    expect_close(losses, grad, ref_loss, ref_grad, logits, weight, dtype, "automatic sizes")
    one_tiling, one_grad = online(hidden, weight, labels, label_smoothing=0.1, z_loss=1e-3,
                                  rows=512, cols=64)
    torch.testing.assert_close(losses, one_tiling, rtol=1e-6, atol=1e-6)
    expect_close(losses, grad, one_tiling.double().cpu(), one_grad.double().cpu(), logits, weight,
                 dtype, "one tiling")


@needs_cuda
def test_scratch_in_the_gradient_across_several_vocabulary_tiles():
    """The larger first tile at a size only CUDA runs quickly: N=557056, V=20000, d=256 in bf16 take
    rows [0, 286720) on 4096 x 16384 tiles (two per row, so acc is added to and rescaled while it
    sits in the gradient's tail), the rest on the op's own 2048 x 16384. Equal to one explicit
    tiling within bf16 rounding of the products, and to fp64 on a sample of rows from both
    phases."""
    n = 557056
    hidden, weight, labels = make(n, 20000, 256, torch.bfloat16, ignored=range(0, n, 11))
    losses, grad = online(hidden, weight, labels, z_loss=1e-3)
    one_tiling, one_grad = online(hidden, weight, labels, z_loss=1e-3, rows=512, cols=4096)
    torch.testing.assert_close(losses, one_tiling, rtol=1e-5, atol=1e-5)
    scale = max(one_grad.abs().max().item(), weight.abs().max().item())
    assert (grad.float() - one_grad.float()).abs().max().item() <= TOL[torch.bfloat16] * scale
    rows = torch.cat([torch.arange(0, n, 15013), torch.arange(286656, 286784)])
    ref_loss, ref_grad, logits = reference(hidden[rows], weight, labels[rows], 0.0, 1e-3)
    expect_close(losses.cpu()[rows], grad.cpu()[rows], ref_loss, ref_grad, logits, weight,
                 torch.bfloat16, "both phases")


def test_logits_of_magnitude_1e3_in_fp32():
    hidden, weight, labels = make(37, 1000, 24, torch.float32, logit_std=300.0)
    ref_loss, ref_grad, logits = reference(hidden, weight, labels, 0.1, 1e-3)
    assert logits.abs().max() > 800
    for rows, cols in [(0, 0), (7, 13)]:
        losses, grad = online(hidden, weight, labels, label_smoothing=0.1, z_loss=1e-3, rows=rows, cols=cols)
        assert torch.isfinite(losses).all() and torch.isfinite(grad).all()
        expect_close(losses, grad, ref_loss, ref_grad, logits, weight, torch.float32,
                     f"rows {rows} cols {cols}")


def test_bad_arguments_are_clear_errors():
    hidden, weight, labels = make(7, 37, 8, torch.float32)
    prefix = r"^linear_ce_online:"
    with pytest.raises(RuntimeError, match=prefix):  # dtype mismatch
        online(hidden, weight.bfloat16(), labels)
    with pytest.raises(RuntimeError, match=prefix):  # labels not int64
        online(hidden, weight, labels.int())
    with pytest.raises(RuntimeError, match=prefix):  # one label too few
        online(hidden, weight, labels[:6])
    with pytest.raises(RuntimeError, match=prefix):  # weight's d differs from hidden's
        online(hidden, weight[:, :7].contiguous(), labels)
    with pytest.raises(RuntimeError, match=prefix):
        online(hidden, weight, labels, rows=-1)
    with pytest.raises(RuntimeError, match=prefix):
        online(hidden, weight, labels, cols=-1)
    if DEVICE == "cuda":
        with pytest.raises(RuntimeError, match=prefix):  # weight on another device
            ops.linear_ce_online(hidden.cuda(), weight, labels.cuda())


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES[2:], ids=lambda s: "N%d_V%d_d%d" % s)
def test_cuda_equals_the_cpu_implementation(dtype, shape):
    hidden, weight, labels = make(*shape, dtype)
    logits = F.linear(hidden.double(), weight.double())
    for rows, cols in [(0, 0), (7, 13), (shape[0] + 5, shape[1] + 3)]:
        kw = dict(label_smoothing=0.1, z_loss=1e-3, rows=rows, cols=cols)
        cpu_loss, cpu_grad = online(hidden, weight, labels, device="cpu", **kw)
        losses, grad = online(hidden, weight, labels, **kw)
        expect_close(losses, grad, cpu_loss.double(), cpu_grad.double(), logits, weight, dtype,
                     f"rows {rows} cols {cols}")


@needs_cuda
def test_cuda_agrees_with_the_chunked_fused_path():
    os.environ.setdefault("QLORAD_OPS_LIB", LIB)
    import loss_bench  # noqa: E402 - the drivers, sharing this process's library

    n, dim, vocab, dtype = 1000, 256, 32003, torch.bfloat16
    hidden, weight, labels = make(n, dim=dim, vocab=vocab, dtype=dtype, ignored=range(0, n, 17))
    h, w, y = hidden.cuda().requires_grad_(True), weight.cuda(), labels.cuda()
    total = loss_bench.FusedChunked.apply(h, w, y, loss_bench.fused_chunk_rows_auto(n, dim, vocab))
    total.backward()
    losses, grad = online(hidden, weight, labels)
    ref_loss, _, logits = reference(hidden, weight, labels)
    tol = TOL[dtype]
    max_logit = logits.abs().max().item()
    # Per row at most TOL * max|logit| from fp64; the chunked path's sum within the same bound.
    torch.testing.assert_close(losses.cpu().double(), ref_loss, rtol=0, atol=tol * max_logit)
    valid = (labels != IGNORE).sum().item()
    assert abs(losses.double().sum().item() - total.item()) <= tol * max_logit * valid
    err = (grad.double() - h.grad.double()).abs().max().item()
    assert err <= tol * h.grad.double().abs().max().item()
