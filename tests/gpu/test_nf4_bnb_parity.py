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


def adversarial_weight(dtype):
    """Blocks that stress the format's corners: all zeros, one huge value among tiny ones, all equal,
    values on the NF4 code points and their midpoints, signed zeros and subnormals, and an odd tail."""
    gen = torch.Generator().manual_seed(7)
    blocks = [
        torch.zeros(64),
        torch.cat([torch.tensor([6.0e4 if dtype == torch.float16 else 1.0e6]), torch.randn(63, generator=gen) * 1e-3]),
        torch.full((64,), -0.37),
        torch.tensor([-1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0,
                      0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0] * 4),
        torch.tensor([-0.8481, -0.6106, -0.4600, -0.3397, -0.2346, -0.1380, -0.0455, 0.0398,
                      0.1203, 0.2035, 0.2920, 0.3893, 0.5017, 0.6428, 0.8615, -0.0] * 4),
        torch.randn(64, generator=gen) * 1e-40,
        torch.randn(29, generator=gen),
    ]
    return torch.cat(blocks).to(dtype).cuda()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("double_quant", [True, False])
def test_bitsandbytes_parity_on_adversarial_blocks(dtype, double_quant):
    w = adversarial_weight(dtype)
    packed_b, state = F.quantize_4bit(w, blocksize=64, compress_statistics=double_quant, quant_type="nf4")
    ours = ops.nf4_quantize(w, 64, double_quant)
    assert torch.equal(ours[0], packed_b.view(-1)), "packed bytes differ from bitsandbytes"
    assert torch.equal(ours[1], state.absmax), "absmax (or its codes) differ"
    nested = (state.state2.absmax, state.state2.code, state.offset.reshape(())) if double_quant else (None,) * 3
    expected = F.dequantize_4bit(packed_b, state)
    got = ops.nf4_dequantize(packed_b.view(-1), state.absmax, *nested, [w.numel()], 64, dtype)
    # Bit patterns, not values: signed zeros and NaN must match too.
    bits = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}[dtype]
    assert torch.equal(got.view(bits), expected.view(-1).view(bits)), "dequantized bits differ from bitsandbytes"
