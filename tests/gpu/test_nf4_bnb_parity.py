"""Byte-for-byte parity of libqlorad_ops.so with bitsandbytes on the GPU: quantize_4bit's packed
bytes, absmax codes, nested absmax, nested code table and offset, and dequantize_4bit's output, with
bitsandbytes' own tensors fed to our op (a bitsandbytes 4-bit checkpoint loads without requantizing).
Skips without a GPU or without bitsandbytes (carry its wheel to the GPU machine; see GPU.md).
"""
import os
import pathlib

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("bitsandbytes parity runs on the GPU", allow_module_level=True)
bitsandbytes = pytest.importorskip("bitsandbytes")
import bitsandbytes.functional as F  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
torch.ops.load_library(os.environ.get("QLORAD_OPS_LIB", str(ROOT / "build-gpu" / "kernels" / "libqlorad_ops.so")))
ops = torch.ops.qlorad

SHAPES = [
    ((8192, 2048), torch.float16),
    ((2048, 8192), torch.float16),
    ((4096, 1024), torch.bfloat16),
    ((1024, 4096), torch.bfloat16),
    ((14336, 4096), torch.bfloat16),
    ((4096, 14336), torch.bfloat16),
    ((63,), torch.float16),
    ((1, 65), torch.bfloat16),
    ((333, 777), torch.float32),
]


def random_weight(shape, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * 0.02).to(dtype).cuda()


def test_dynamic_map_equals_bitsandbytes():
    ours = ops.nf4_quantize(random_weight((64,), torch.float32, 0), 64, True)[3]
    assert torch.equal(ours.cpu(), F.create_dynamic_map(signed=True).float())


@pytest.mark.parametrize("shape,dtype", SHAPES)
@pytest.mark.parametrize("double_quant", [True, False])
def test_bitsandbytes_parity(shape, dtype, double_quant):
    w = random_weight(shape, dtype, seed=6)
    packed_b, state = F.quantize_4bit(w, blocksize=64, compress_statistics=double_quant, quant_type="nf4")
    ours = ops.nf4_quantize(w, 64, double_quant)
    assert torch.equal(ours[0], packed_b.view(-1)), "packed bytes differ from bitsandbytes"
    if double_quant:
        assert torch.equal(ours[4], state.offset.reshape(())), "offset differs"
        assert torch.equal(ours[1], state.absmax), "absmax codes differ"
        assert torch.equal(ours[2], state.state2.absmax), "nested absmax differs"
        assert torch.equal(ours[3], state.state2.code), "nested code differs"
        nested = (state.state2.absmax, state.state2.code, state.offset.reshape(()))
    else:
        assert torch.equal(ours[1], state.absmax), "absmax differs"
        nested = (None, None, None)
    expected = F.dequantize_4bit(packed_b, state)
    got = ops.nf4_dequantize(packed_b.view(-1), state.absmax, *nested, list(shape), 64, dtype)
    assert torch.equal(got, expected), "dequantized values differ from bitsandbytes"
