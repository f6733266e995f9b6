"""qlorad::rms_norm, add_rms_norm and rms_norm_backward (the fused RMSNorm kernels) from Python: on
CUDA against the ops' CPU implementation (the reference) and against torch on Hugging Face's
LlamaRMSNorm formula (forward in the same dtype, backward by fp64 autograd), in fp32, fp16 and bf16,
at Llama's shapes and at odd ones: odd H, H not a multiple of 8 (no 16-byte packs), rows too long
for the registers (the rereading kernel), unaligned views; bitwise the same on rerun; under
torch.compile(fullgraph=True). Runs on CPU too (then the CPU implementation is what is tested).

QLORAD_OPS_LIB names the library (default: build-gpu/kernels/libqlorad_ops.so).
"""
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ops_library import DEVICE, ops  # noqa: E402
EPS = 1e-5
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Llama 3.2 1B and 8B rows (cached in registers, 1-2 packs a thread in bf16), odd H and H not a
# multiple of 8 (single values), 16384 (8 packs a thread), 40000 (too long: read twice), many
# short rows.
SHAPES = [(4, 2048, 2048), (1, 2048, 4096), (3, 37), (5, 4100), (2, 16384), (3, 40000), (1000, 24)]
# dx is rounded once from fp32: within half an ulp of fp16/bf16, fp32 noise in fp32.
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def random(shape, dtype, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype).to(DEVICE)


def random_weight(hidden, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return (1.0 + 0.5 * torch.randn(hidden, generator=gen, dtype=torch.float64)).to(dtype).to(DEVICE)


def hf_rms_norm(x, weight, eps=EPS):
    """Hugging Face's LlamaRMSNorm.forward."""
    x32 = x.to(torch.float32)
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def hf_grad_fp64(x, weight, dy, eps=EPS):
    x64 = x.double().requires_grad_(True)
    hf_rms_norm(x64, weight.double(), eps).backward(dy.double())
    return x64.grad


def ordered_bits(t):
    bits = t.contiguous().view(torch.int16).to(torch.int32)
    magnitude = bits & 0x7FFF
    return torch.where(bits < 0, -magnitude, magnitude)


def assert_outputs_match(got, want):
    """fp32: a few ulp. fp16/bf16: bit for bit but where the fp32 normalized value sits within a few
    fp32 ulp of a rounding boundary (the row's sum is taken in another order, inv_rms is 1/sqrtf
    where torch.rsqrt on CUDA is rsqrtf): there y moves by one ulp, two after the weight multiply."""
    got, want = got.cpu(), want.cpu()
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        return
    assert (ordered_bits(got) - ordered_bits(want)).abs().max().item() <= 2
    assert got.eq(want).double().mean().item() >= 0.999


def assert_grad_close(got, want64, dtype):
    got, want64 = got.cpu().double(), want64.cpu()
    excess = (got - want64).abs() - GRAD_RTOL[dtype] * want64.abs() - 1e-5 * want64.abs().max()
    worst = excess.flatten().argmax()
    assert excess.flatten()[worst] <= 0, (
        f"element {worst.item()}: {got.flatten()[worst].item()} vs {want64.flatten()[worst].item()}")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_equals_reference_and_hf(dtype, shape):
    x = random(shape, dtype, 1, scale=3.0)
    w = random_weight(shape[-1], dtype, 2)
    y, inv_rms = ops.rms_norm(x, w, EPS)
    assert y.device == x.device and inv_rms.dtype == torch.float32
    assert inv_rms.shape == (x.numel() // shape[-1],)
    y_ref, inv_rms_ref = ops.rms_norm(x.cpu(), w.cpu(), EPS)
    torch.testing.assert_close(inv_rms.cpu(), inv_rms_ref, rtol=1e-6, atol=0)
    assert_outputs_match(y, y_ref)
    assert_outputs_match(y, hf_rms_norm(x, w))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_form_writes_torchs_sum_and_normalizes_it(dtype, shape):
    x = random(shape, dtype, 3, scale=2.0)
    residual = random(shape, dtype, 4, scale=5.0)
    w = random_weight(shape[-1], dtype, 5)
    h, y, inv_rms = ops.add_rms_norm(x, residual, w, EPS)
    assert torch.equal(h, x + residual)
    y_of_h, inv_rms_of_h = ops.rms_norm(x + residual, w, EPS)
    assert torch.equal(y, y_of_h) and torch.equal(inv_rms, inv_rms_of_h)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_equals_autograd_and_reference(dtype, shape):
    x = random(shape, dtype, 6, scale=2.0)
    w = random_weight(shape[-1], dtype, 7)
    dy = random(shape, dtype, 8)
    dresidual = random(shape, dtype, 9)
    _, inv_rms = ops.rms_norm(x, w, EPS)
    want = hf_grad_fp64(x, w, dy)
    dx = ops.rms_norm_backward(dy, x, w, inv_rms, None)
    assert dx.dtype == dtype and dx.shape == x.shape
    assert_grad_close(dx, want, dtype)
    dx_res = ops.rms_norm_backward(dy, x, w, inv_rms, dresidual)
    assert_grad_close(dx_res, want + dresidual.double(), dtype)
    dx_ref = ops.rms_norm_backward(dy.cpu(), x.cpu(), w.cpu(), inv_rms.cpu(), dresidual.cpu())
    assert_rounded_alike(dx_res, dx_ref)


def assert_rounded_alike(got, want):
    """Two roundings of nearly the same fp32 value: the row's dot product is summed in another order
    on the GPU than in the CPU reference, so where the fp32 result sits that close to a bf16/fp16
    rounding boundary the two differ by one ulp (a relative 2^-7 for bf16, beyond GRAD_RTOL)."""
    got, want = got.cpu(), want.cpu()
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
        return
    assert (ordered_bits(got) - ordered_bits(want)).abs().max().item() <= 1
    assert got.eq(want).double().mean().item() >= 0.999


@pytest.mark.parametrize("dtype", DTYPES)
def test_unaligned_views_take_the_single_value_kernel(dtype):
    rows, hidden = 64, 2048
    w = random_weight(hidden, dtype, 10)
    aligned = random((rows, hidden), dtype, 11)
    # One element into a buffer: every row starts 2 or 4 bytes off a 16-byte boundary.
    buffer = torch.empty(rows * hidden + 1, dtype=dtype, device=DEVICE)
    x = buffer[1:].view(rows, hidden)
    x.copy_(aligned)
    y, inv_rms = ops.rms_norm(x, w, EPS)
    y_aligned, inv_rms_aligned = ops.rms_norm(aligned, w, EPS)
    torch.testing.assert_close(inv_rms, inv_rms_aligned, rtol=1e-6, atol=0)
    assert_outputs_match(y, y_aligned)
    dy = random((rows, hidden), dtype, 12)
    dx = ops.rms_norm_backward(dy, x, w, inv_rms, None)
    assert_grad_close(dx, hf_grad_fp64(aligned, w, dy), dtype)


def test_rerun_is_bitwise_identical():
    x = random((4, 2048, 2048), torch.bfloat16, 13)
    residual = random((4, 2048, 2048), torch.bfloat16, 14)
    w = random_weight(2048, torch.bfloat16, 15)
    first = ops.add_rms_norm(x, residual, w, EPS)
    second = ops.add_rms_norm(x, residual, w, EPS)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    dx = [ops.rms_norm_backward(x, first[0], w, first[2], residual) for _ in range(2)]
    assert torch.equal(dx[0], dx[1])


def test_gradients_with_any_strides_are_accepted():
    x = random((8, 256), torch.bfloat16, 16)
    w = random_weight(256, torch.bfloat16, 17)
    _, inv_rms = ops.rms_norm(x, w, EPS)
    dy = random((1, 256), torch.bfloat16, 18).expand(8, 256)  # as autograd may hand it
    assert torch.equal(ops.rms_norm_backward(dy, x, w, inv_rms, dy),
                       ops.rms_norm_backward(dy.contiguous(), x, w, inv_rms, dy.contiguous()))


def assert_same_or_single_value_kernel(got, want, aligned):
    """Bit for bit where both calls took the 16-byte-pack kernel; a row that is not 16-byte aligned
    sends the whole call to the single-value kernel, which sums each row in another order (see
    test_unaligned_views_take_the_single_value_kernel): then as close as that allows."""
    for a, b in zip(got, want):
        if aligned:
            assert torch.equal(a, b)
        elif a.dtype == torch.float32:  # inv_rms
            torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
        else:
            assert_rounded_alike(a, b)


@pytest.mark.parametrize("spare", [32, 3])  # packs; rows not 16-byte aligned
def test_spare_columns_leave_room_after_each_row_of_y(spare):
    """y as the first columns of wider rows (room for the folded LoRA projection's x A): the same
    values as the dense y; h of the add form stays dense."""
    x = random((2, 64, 2048), torch.bfloat16, 34)
    residual = random((2, 64, 2048), torch.bfloat16, 35)
    w = random_weight(2048, torch.bfloat16, 36)
    y, inv_rms = ops.rms_norm(x, w, EPS, spare)
    assert y.stride() == (64 * (2048 + spare), 2048 + spare, 1)
    assert_same_or_single_value_kernel((y, inv_rms), ops.rms_norm(x, w, EPS), spare % 8 == 0)
    h, y2, inv2 = ops.add_rms_norm(x, residual, w, EPS, spare)
    assert h.is_contiguous()
    assert_same_or_single_value_kernel((h, y2, inv2), ops.add_rms_norm(x, residual, w, EPS),
                                       spare % 8 == 0)


@pytest.mark.parametrize("pitch", [2048 + 32, 2048 + 3])  # packs; rows not 16-byte aligned
def test_gradient_rows_spaced_wider_are_read_in_place(pitch):
    """A folded LoRA projection's dX is the first columns of a wider matrix: the same result as
    its contiguous copy, with and without the residual's gradient."""
    x = random((2, 64, 2048), torch.bfloat16, 30)
    w = random_weight(2048, torch.bfloat16, 31)
    _, inv_rms = ops.rms_norm(x, w, EPS)
    wide = random((2, 64, pitch), torch.bfloat16, 32)
    dy = wide[..., :2048]
    dres = random((2, 64, 2048), torch.bfloat16, 33)
    for residual in (None, dres):
        got = ops.rms_norm_backward(dy, x, w, inv_rms, residual)
        want = ops.rms_norm_backward(dy.contiguous(), x, w, inv_rms, residual)
        assert_same_or_single_value_kernel((got,), (want,), pitch % 8 == 0)


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    x = random((2, 16, 256), torch.bfloat16, 19)
    residual = random((2, 16, 256), torch.bfloat16, 20)
    w = random_weight(256, torch.bfloat16, 21)

    def block(x, residual, w):
        h, y, inv_rms = ops.add_rms_norm(x, residual, w, EPS)
        return h, y, ops.rms_norm_backward(y, h, w, inv_rms, residual)

    compiled = torch.compile(block, fullgraph=True)
    for eager, traced in zip(block(x, residual, w), compiled(x, residual, w)):
        assert torch.equal(eager, traced)


def test_errors_name_the_op_and_the_argument():
    x = random((4, 2048), torch.bfloat16, 22)
    with pytest.raises(RuntimeError, match=r"qlorad::rms_norm: weight: expected shape \[2048\], got \[1024\]"):
        ops.rms_norm(x, random_weight(1024, torch.bfloat16, 0), EPS)
    with pytest.raises(RuntimeError, match="qlorad::add_rms_norm: residual: expected bfloat16 like x, got float32"):
        ops.add_rms_norm(x, x.float(), random_weight(2048, torch.bfloat16, 0), EPS)
