"""The fused RoPE (qlorad::rope_) and SwiGLU (qlorad::swiglu, qlorad::swiglu_backward) ops on the
device against their CPU implementation and against torch: Llama shapes (4 x 2048 tokens with 32/8
heads of 64, 1 x 2048 with 32/8 heads of 128; MLP widths 8192 and 14336), q/k/v and gate/up as
column views of one fused GEMM output, packed positions, the inverse rotation, the unaligned
(one element per thread) paths, no host synchronization.

QLORAD_OPS_LIB names the library (default: build-gpu/kernels/libqlorad_ops.so). Runs on CUDA when
there is a GPU; on the CPU the device-against-CPU tests are skipped and the rest check the CPU op.
"""
import pathlib
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ops_library import DEVICE, ops  # noqa: E402
needs_cuda = pytest.mark.skipif(DEVICE != "cuda", reason="compares the CUDA kernels with the CPU op")

# (batch, seq, q_heads, kv_heads, head_dim)
ROPE_SHAPES = [(4, 2048, 32, 8, 64), (1, 2048, 32, 8, 128)]


def randn(shape, dtype, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * scale).to(dtype).to(DEVICE)


def hf_table(rows, d):
    """Hugging Face's cos/sin (the trainer's RotaryCosSin): half-size frequencies repeated twice."""
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    freqs = torch.outer(torch.arange(rows, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], -1)
    return emb.cos().to(DEVICE), emb.sin().to(DEVICE)


def packed_positions(batch, seq, seed):
    """Each row packs documents of random lengths; positions restart at 0 in each."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        pos = []
        while len(pos) < seq:
            pos.extend(range(int(torch.randint(1, 700, (1,), generator=gen))))
        rows.append(pos[:seq])
    return torch.tensor(rows, dtype=torch.long).to(DEVICE)


def torch_rope(x, cos, sin, positions):
    """The trainer's ApplyRotary on [b, s, h, d]: x * cos + rotate_half(x) * sin in fp32."""
    b, s, _, d = x.shape
    if positions is None:
        c, sn = cos[:s].view(1, s, 1, d), sin[:s].view(1, s, 1, d)
    else:
        c, sn = cos[positions].view(b, s, 1, d), sin[positions].view(b, s, 1, d)
    x32 = x.float()
    rotated = torch.cat([-x32[..., d // 2:], x32[..., : d // 2]], -1)
    return (x32 * c + rotated * sn).to(x.dtype)


def fused_qkv(b, s, hq, hkv, d, dtype, seed, offset=0):
    """q, k, v as column slices of one [b, s, offset + (hq + 2 hkv) d] projection output; a
    non-zero offset misaligns them (the kernels' one-element path)."""
    buf = randn((b, s, offset + (hq + 2 * hkv) * d), dtype, seed)
    q = buf[..., offset:offset + hq * d].unflatten(-1, (hq, d))
    k = buf[..., offset + hq * d:offset + (hq + hkv) * d].unflatten(-1, (hkv, d))
    v = buf[..., offset + (hq + hkv) * d:].unflatten(-1, (hkv, d))
    return buf, q, k, v


def to_cpu_views(buf, hq, hkv, d, offset=0):
    """The same column slices of a CPU copy of buf."""
    buf = buf.cpu()
    q = buf[..., offset:offset + hq * d].unflatten(-1, (hq, d))
    k = buf[..., offset + hq * d:offset + (hq + hkv) * d].unflatten(-1, (hkv, d))
    return q, k


def assert_within_one_ulp(got, want, scale=None):
    """|got - want| within one unit in the last place of bf16/fp16, and most elements bit-equal
    (only exp's last fp32 bit differs between implementations; skipping one of torch's roundings
    would move far more). fp32: within 1e-5 relative, as exp's last bits allow. `scale` widens
    the bound where the result cancels: silu's derivative 1 + g (1 - s) vanishes near g = -1.28,
    where two fp32 evaluations differ by ulps of its terms, i.e. of |dh * up|."""
    rel = {torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10, torch.float32: 1e-5}[want.dtype]
    g, w = got.float().cpu(), want.float().cpu()
    bound = torch.maximum(g.abs(), w.abs())
    if scale is not None:
        bound = bound + scale.float().abs().cpu()
    excess = (g - w).abs() - rel * bound
    assert excess.max().item() <= 1e-30, f"max excess over the tolerance: {excess.max().item()}"
    if want.dtype != torch.float32:
        differ = (got.cpu() != want.cpu()).float().mean().item()
        assert differ < 0.01, f"{differ:.4f} of the elements differ"


@pytest.mark.parametrize("shape", ROPE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("packed", [False, True], ids=["row_s", "positions"])
def test_rope_matches_the_cpu_op_and_torch(shape, dtype, packed):
    b, s, hq, hkv, d = shape
    cos, sin = hf_table(s, d)
    positions = packed_positions(b, s, seed=1) if packed else None
    buf, q, k, v = fused_qkv(b, s, hq, hkv, d, dtype, seed=2)
    q_cpu, k_cpu = to_cpu_views(buf, hq, hkv, d)
    want_q, want_k = torch_rope(q, cos, sin, positions), torch_rope(k, cos, sin, positions)
    q0, k0, v0 = q.clone(), k.clone(), v.clone()

    ops.rope_(q, k, cos, sin, positions, False)
    # Every product and sum rounds separately in fp32 on all three sides: bit-equal.
    assert torch.equal(q, want_q) and torch.equal(k, want_k)
    assert torch.equal(v, v0)
    if DEVICE == "cuda":
        pos_cpu = None if positions is None else positions.cpu()
        ops.rope_(q_cpu, k_cpu, cos.cpu(), sin.cpu(), pos_cpu, False)
        assert torch.equal(q.cpu(), q_cpu) and torch.equal(k.cpu(), k_cpu)

    # Undone up to two roundings, which scale with the pair's size rather than each element's.
    ops.rope_(q, k, cos, sin, positions, True)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for got, want in ((q, q0), (k, k0)):
        torch.testing.assert_close(got, want, atol=tol * want.abs().max().item(), rtol=tol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_rope_inverse_is_the_autograd_backward(dtype):
    b, s, hq, hkv, d = 2, 256, 8, 2, 64
    cos, sin = hf_table(s, d)
    positions = packed_positions(b, s, seed=3)
    x = randn((b, s, hq, d), dtype, seed=4).requires_grad_(True)
    dy = randn((b, s, hq, d), dtype, seed=5)
    torch_rope(x, cos, sin, positions).backward(dy)
    dq, dk = dy.clone(), dy[:, :, :hkv].clone()
    ops.rope_(dq, dk, cos, sin, positions, True)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(dq, x.grad, atol=tol, rtol=tol)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_rope_unaligned_views_take_the_one_element_path(dtype):
    b, s, hq, hkv, d = 2, 128, 4, 2, 64
    cos, sin = hf_table(s, d)
    buf, q, k, _ = fused_qkv(b, s, hq, hkv, d, dtype, seed=6, offset=1)
    q_cpu, k_cpu = to_cpu_views(buf, hq, hkv, d, offset=1)
    ops.rope_(q, k, cos, sin, None, False)
    ops.rope_(q_cpu, k_cpu, cos.cpu(), sin.cpu(), None, False)
    assert torch.equal(q.cpu(), q_cpu) and torch.equal(k.cpu(), k_cpu)


@pytest.mark.parametrize("shape", ROPE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("offset,source_offset", [(0, 0), (1, 0), (0, 1)],
                         ids=["aligned", "unaligned_out", "unaligned_source"])
def test_rope_into_rotates_gradients_from_the_kernels_layout(shape, dtype, offset, source_offset):
    """The attention backward's use: dq and dk laid out [b, h, s, d] (cuDNN's), rotated back into
    their heads of q|k|v's gradient: the bits of copying them there and rotating in place, on the
    device and on the CPU; v's columns untouched. An output or a source one element off its
    16-byte alignment takes the one-element path."""
    b, s, hq, hkv, d = shape
    cos, sin = hf_table(s, d)
    positions = packed_positions(b, s, seed=8)

    def source(heads, seed):
        flat = randn((source_offset + b * heads * s * d,), dtype, seed)
        return flat[source_offset:].view(b, heads, s, d).transpose(1, 2)

    dq, dk = source(hq, 9), source(hkv, 10)
    buf, q, k, v = fused_qkv(b, s, hq, hkv, d, dtype, seed=11, offset=offset)
    want_buf, want_q, want_k, _ = fused_qkv(b, s, hq, hkv, d, dtype, seed=11, offset=offset)
    v0 = v.clone()
    want_q.copy_(dq)
    want_k.copy_(dk)
    ops.rope_(want_q, want_k, cos, sin, positions, True)
    ops.rope_into(dq, dk, cos, sin, positions, True, q, k)
    assert torch.equal(buf, want_buf) and torch.equal(v, v0)
    if DEVICE == "cuda":
        q_cpu, k_cpu = to_cpu_views(torch.zeros_like(buf), hq, hkv, d, offset=offset)
        ops.rope_into(dq.cpu(), dk.cpu(), cos.cpu(), sin.cpu(), positions.cpu(), True, q_cpu, k_cpu)
        assert torch.equal(q.cpu(), q_cpu) and torch.equal(k.cpu(), k_cpu)


@needs_cuda
def test_rope_position_outside_the_table_gives_nan_on_cuda():
    b, s, hq, hkv, d = 1, 16, 4, 2, 64
    cos, sin = hf_table(s, d)
    _, q, k, _ = fused_qkv(b, s, hq, hkv, d, torch.bfloat16, seed=7)
    positions = torch.arange(s, device=DEVICE).view(1, s).clone()
    positions[0, 5] = s  # one past the table
    ops.rope_(q, k, cos, sin, positions, False)
    assert q[0, 5].isnan().all() and k[0, 5].isnan().all()
    assert not q[0, :5].isnan().any() and not q[0, 6:].isnan().any()


@needs_cuda
def test_ops_do_not_synchronize_with_the_host():
    cos, sin = hf_table(64, 64)
    _, q, k, _ = fused_qkv(2, 64, 4, 2, 64, torch.bfloat16, seed=8)
    gate, up = randn((128, 256), torch.bfloat16, 9), randn((128, 256), torch.bfloat16, 10)
    # Built before the check: its copy from pageable host memory is itself a synchronization.
    positions = packed_positions(2, 64, seed=11)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ops.rope_(q, k, cos, sin, positions, False)
        h = ops.swiglu(gate, up)
        ops.swiglu_backward(h, gate, up)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def gate_up_views(rows, inter, dtype, seed, offset=0):
    """gate and up as column slices of one [rows, offset + 2I] GEMM output (silu's range: x3)."""
    gu = randn((rows, offset + 2 * inter), dtype, seed, scale=3.0)
    return gu[:, offset:offset + inter], gu[:, offset + inter:]


@pytest.mark.parametrize("inter", [8192, 14336])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_swiglu_forward_matches_the_cpu_op_and_torch(inter, dtype):
    gate, up = gate_up_views(4 * 2048, inter, dtype, seed=12)
    h = ops.swiglu(gate, up)
    assert h.shape == gate.shape and h.is_contiguous()
    assert_within_one_ulp(h, F.silu(gate) * up)
    if DEVICE == "cuda":
        rows = slice(0, 256)  # the CPU op on a slice keeps the test fast
        assert_within_one_ulp(h[rows], ops.swiglu(gate[rows].cpu(), up[rows].cpu()))


@pytest.mark.parametrize("inter", [8192, 14336])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_swiglu_backward_matches_the_cpu_op_and_autograd(inter, dtype):
    rows = 2048
    gate, up = gate_up_views(rows, inter, dtype, seed=13)
    dh = randn((rows, inter), dtype, seed=14)
    g, u = gate.detach().clone().requires_grad_(True), up.detach().clone().requires_grad_(True)
    (F.silu(g) * u).backward(dh)
    dgu = ops.swiglu_backward(dh, gate, up)
    assert dgu.shape == (rows, 2 * inter) and dgu.is_contiguous()
    scale = dh.float() * up.float()
    assert_within_one_ulp(dgu[:, :inter], g.grad, scale)
    assert_within_one_ulp(dgu[:, inter:], u.grad)
    if DEVICE == "cuda":
        sl = slice(0, 256)
        want = ops.swiglu_backward(dh[sl].cpu(), gate[sl].cpu(), up[sl].cpu())
        assert_within_one_ulp(dgu[sl], want, torch.cat([scale[sl], torch.zeros_like(scale[sl])], 1))


@needs_cuda
@pytest.mark.parametrize("rows,inter,offset", [(64, 1000, 1), (70000, 8, 0)],
                         ids=["unaligned", "rows_beyond_grid_y"])
def test_swiglu_odd_layouts_match_the_cpu_op(rows, inter, offset):
    gate, up = gate_up_views(rows, inter, torch.bfloat16, seed=15, offset=offset)
    dh = randn((rows, inter), torch.bfloat16, seed=16)
    assert_within_one_ulp(ops.swiglu(gate, up), ops.swiglu(gate.cpu(), up.cpu()))
    scale = dh.float() * up.float()
    assert_within_one_ulp(ops.swiglu_backward(dh, gate, up),
                          ops.swiglu_backward(dh.cpu(), gate.cpu(), up.cpu()),
                          torch.cat([scale, torch.zeros_like(scale)], 1))


@needs_cuda
@pytest.mark.parametrize("rows,inter,offset", [(2048, 8192, 0), (64, 1000, 1)],
                         ids=["llama_1b", "unaligned"])
def test_swiglu_backward_and_h_equals_backward_and_forward(rows, inter, offset):
    """The backward that also writes h (the trainer's MLP backward) is bit-equal to the two ops."""
    gate, up = gate_up_views(rows, inter, torch.bfloat16, seed=17, offset=offset)
    dh = randn((rows, inter), torch.bfloat16, seed=18)
    dgu, h = ops.swiglu_backward_and_h(dh, gate, up)
    assert torch.equal(dgu, ops.swiglu_backward(dh, gate, up))
    assert torch.equal(h, ops.swiglu(gate, up))


@needs_cuda
@pytest.mark.parametrize("rows,inter,spare", [(2048, 8192, 16), (64, 1000, 3)], ids=["llama_1b", "unaligned"])
def test_swiglu_with_spare_columns_equals_without(rows, inter, spare):
    """h with room for the down projection's x A^T (the trainer's FusedSwigluDown): the same bits in
    the first columns of wider rows (the pack kernel where rows stay 16-byte aligned, the
    single-value one otherwise)."""
    gate, up = gate_up_views(rows, inter, torch.bfloat16, seed=19, offset=0)
    h = ops.swiglu(gate, up, spare)
    assert h.shape == (rows, inter) and h.stride() == (inter + spare, 1)
    assert torch.equal(h, ops.swiglu(gate, up))
    assert_within_one_ulp(h[:256], ops.swiglu(gate[:256].cpu(), up[:256].cpu(), spare))


def test_schemas():
    assert "Tensor(a!) q, Tensor(b!) k" in str(ops.rope_.default._schema)
    assert "Tensor(a!) q_out, Tensor(b!) k_out" in str(ops.rope_into.default._schema)
    assert str(ops.swiglu_backward.default._schema).endswith("-> Tensor")
