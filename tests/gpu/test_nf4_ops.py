"""Python-side tests of libqlorad_ops.so: loading it with torch.ops.load_library, the ops under
torch.compile(fullgraph=True) (no graph break, same result as eager), device against CPU, errors.
Parity with bitsandbytes itself: test_nf4_bnb_parity.py.

QLORAD_OPS_LIB names the library (default: build-gpu/kernels/libqlorad_ops.so). Runs on CUDA when
there is a GPU, else on CPU.
"""
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ops_library import DEVICE, ops  # noqa: E402


def random_weight(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * 0.02).to(dtype).to(DEVICE)


def dequantize(q, shape, dtype, blocksize=64):
    packed, absmax, nested_absmax, nested_code, offset = q
    return ops.nf4_dequantize(packed, absmax, nested_absmax, nested_code, offset, list(shape), blocksize, dtype)


def test_schemas_are_registered():
    assert "int blocksize=64, bool double_quant=True" in str(ops.nf4_quantize.default._schema)
    schema = str(ops.nf4_dequantize.out._schema)
    assert "Tensor(a!) out) -> ()" in schema


def test_device_result_equals_cpu_reference():
    w = random_weight((1000, 65), torch.bfloat16, seed=1)
    q = ops.nf4_quantize(w, 64, False)
    q_cpu = ops.nf4_quantize(w.cpu(), 64, False)
    assert torch.equal(q[0].cpu(), q_cpu[0])
    assert torch.equal(q[1].cpu(), q_cpu[1])
    out = ops.nf4_dequantize(q[0], q[1], None, None, None, [1000, 65], 64, torch.bfloat16)
    ref = ops.nf4_dequantize(q_cpu[0], q_cpu[1], None, None, None, [1000, 65], 64, torch.bfloat16)
    assert torch.equal(out.cpu(), ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_compile_fullgraph_matches_eager(dtype):
    torch._dynamo.reset()
    shape = (512, 256)
    w = random_weight(shape, dtype, seed=2)
    q = ops.nf4_quantize(w, 64, True)
    x = random_weight((8, 256), dtype, seed=3)

    def layer(x, packed, absmax, nested_absmax, nested_code, offset):
        weight = ops.nf4_dequantize(packed, absmax, nested_absmax, nested_code, offset, [512, 256], 64, dtype)
        return x @ weight.t(), weight

    compiled = torch.compile(layer, fullgraph=True)
    y_eager, w_eager = layer(x, *q)
    y_compiled, w_compiled = compiled(x, *q)
    assert torch.equal(w_compiled, w_eager)
    # The matmul itself may be scheduled differently: allow bf16/fp16 rounding of the product.
    torch.testing.assert_close(y_compiled, y_eager, rtol=1e-2, atol=1e-3)
    assert w_eager.dtype == dtype and w_eager.shape == shape


def test_compile_fullgraph_out_variant():
    torch._dynamo.reset()
    w = random_weight((256, 128), torch.bfloat16, seed=4)
    q = ops.nf4_quantize(w, 64, True)
    buffer = torch.empty((256, 128), dtype=torch.bfloat16, device=DEVICE)

    def into(buffer, packed, absmax, nested_absmax, nested_code, offset):
        ops.nf4_dequantize.out(packed, absmax, nested_absmax, nested_code, offset, [256, 128], 64,
                               torch.bfloat16, out=buffer)
        return buffer * 2

    doubled = torch.compile(into, fullgraph=True)(buffer, *q)
    expected = dequantize(q, (256, 128), torch.bfloat16)
    assert torch.equal(buffer, expected)
    assert torch.equal(doubled, expected * 2)


def _many_out(qs, blocksizes, outs):
    ops.nf4_dequantize_many.out([q[0] for q in qs], [q[1] for q in qs], [q[2] for q in qs],
                                [q[3] for q in qs], [q[4] for q in qs], blocksizes, out=outs)


def test_many_equals_one_at_a_time_eager_and_compiled():
    torch._dynamo.reset()
    shapes = [((64, 33), torch.float16), ((7,), torch.bfloat16), ((128, 128), torch.bfloat16), ((5, 3), torch.float32)]
    qs = [ops.nf4_quantize(random_weight(shape, dtype, seed=10 + i), 64, True) for i, (shape, dtype) in enumerate(shapes)]
    expected = [dequantize(q, shape, dtype) for q, (shape, dtype) in zip(qs, shapes)]
    outs = [torch.empty(shape, dtype=dtype, device=DEVICE) for shape, dtype in shapes]
    _many_out(qs, [64] * len(qs), outs)
    for got, want in zip(outs, expected):
        assert torch.equal(got, want)

    def layer(outs, qs):
        _many_out(qs, [64] * len(qs), outs)
        return [o.float().sum() for o in outs]

    fresh = [torch.zeros_like(o) for o in outs]
    sums = torch.compile(layer, fullgraph=True)(fresh, qs)
    for got, want, total in zip(fresh, expected, sums):
        assert torch.equal(got, want)
        torch.testing.assert_close(total, want.float().sum())


@pytest.mark.parametrize("rows,cols,pitch,dtype", [
    (512, 2048, 2080, torch.bfloat16),  # the folded LoRA weight: whole chunks, aligned rows
    (64, 1024, 1056, torch.float16),
    (64, 512, 544, torch.float32),
    (37, 63, 70, torch.bfloat16),  # rows of part chunks: the value-by-value path
    (40, 128, 131, torch.float16),  # rows not 16-byte aligned: the same
])
def test_spaced_rows_equal_the_cpu_reference_and_leave_the_other_columns(rows, cols, pitch, dtype):
    """The first columns of a wider matrix, alone and in one grouped launch with a dense weight."""
    q = ops.nf4_quantize(random_weight((rows, cols), dtype, seed=rows), 64, True)
    q_cpu = [t.cpu() for t in q]
    want = dequantize(q_cpu, (rows, cols), dtype)
    wide = torch.full((rows, pitch), 5.0, dtype=dtype, device=DEVICE)
    ops.nf4_dequantize.out(*q, [rows, cols], 64, dtype, out=wide[:, :cols])
    assert torch.equal(wide[:, :cols].cpu(), want)
    assert bool((wide[:, cols:] == 5.0).all())

    dense_q = ops.nf4_quantize(random_weight((96, 64), dtype, seed=7), 64, True)
    wide.fill_(5.0)
    outs = [wide[:, :cols], torch.empty((96, 64), dtype=dtype, device=DEVICE)]
    _many_out([q, dense_q], [64, 64], outs)
    assert torch.equal(outs[0].cpu(), want)
    assert torch.equal(outs[1], dequantize(dense_q, (96, 64), dtype))
    assert bool((wide[:, cols:] == 5.0).all())


def test_nan_weight_error_names_the_element():
    w = random_weight((10, 10), torch.float16, seed=5)
    w.view(-1)[37] = float("nan")
    with pytest.raises(RuntimeError, match="element 37 is NaN"):
        ops.nf4_quantize(w, 64, True)
