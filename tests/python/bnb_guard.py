"""Checks bitsandbytes' CPU NF4 round trip against one written here in plain torch, before a test
takes bnb as its reference, and dequantizes with bnb in the layout in which it was found right.

bitsandbytes 0.50.2's CPU dequantize_4bit is wrong with AVX-512 (seen on an Intel Xeon; reported on
an AMD EPYC) wherever a 2-D tensor's last dimension is a multiple of 16 but not of the block size:
it takes row r's blocks to start at absmax[r * (columns // 64)], as if rows held whole blocks.
(96, 80) comes back 1.8 off, the tiny model's down_proj (64, 176) 2.6 off. Without AVX-512 it
takes a scalar path that is right. Blocks run over the row-major tensor whatever its shape, so
asking for rows of one block each (dequantize_by_blocks) is the same dequantization, and bnb's
kernel is right there on both CPUs; the guard checks that before each test trusts it and skips
the test, naming the defect, where it is not.

The reference: per block of 64 elements, the NF4 code nearest to w / absmax, times absmax. With
compress_statistics bnb also rounds each absmax to an 8-bit code (the double quantization), which
the tolerance allows for and nothing else does."""

from __future__ import annotations

import copy

import pytest
import torch

BLOCKSIZE = 64
NESTED_BLOCKSIZE = 256  # bnb's blocks of absmax values in the double quantization

# The NF4 code (QLoRA, Dettmers et al. 2023; bitsandbytes' get_4bit_type("nf4")).
NF4 = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=torch.float64)
NF4_MIDPOINTS = (NF4[1:] + NF4[:-1]) / 2

# bnb scales in fp32 (w * (1 / absmax)): an element this close to a midpoint between two codes may
# round either way, so both are right. fp32 is good to 6e-8 relative; no two codes lie closer
# than 0.079, so this window admits no wrong code.
TIE = 1e-6
# fp32 rounding of code * absmax (and of bnb's mean and scale in the double quantization), relative
# to the block's absmax: ~10 ulp. A wrong code is off by at least 0.079 * absmax, a wrong block's
# absmax by far more.
FP32_SLACK = 1e-6
# The double quantization rounds (absmax - mean) / absmax2 to bnb's 8-bit dynamic code, which
# steps by 0.9/64 in [0.1, 1] (finer below) and ends at -1 + 0.9/128 and 1: nearest rounding moves
# it by at most 0.9/128. bnb's CPU search (BinSearch) is nearest only to ~1.4e-5: a value that
# close to a midpoint may take the farther code (measured: at most 0.0070447 off over 2e6 points of
# [-1, 1]), hence 2e-5 more. A dequantized absmax is off by at most this times absmax2 of its group.
NESTED_ABSMAX_ERROR = 0.9 / 128 + 2e-5

# Where bnb's shaped CPU kernel was reported wrong, tried through dequantize_by_blocks too. (64, 128)
# is right with AVX-512 as well: the 0.45 reported for it is NF4's own rounding of randn.
KNOWN_BAD_SHAPES = ((96, 80), (64, 128))


def dequantize_by_blocks(F, packed: torch.Tensor, state) -> torch.Tensor:
    """bnb's dequantize_4bit of `packed`, asked for as rows of one block each, in state.shape."""
    assert state.shape.numel() % state.blocksize == 0, \
        f"{tuple(state.shape)} is not whole blocks of {state.blocksize}"
    rows = copy.copy(state)  # shares every tensor; only the shape differs
    rows.shape = torch.Size((state.shape.numel() // state.blocksize, state.blocksize))
    return F.dequantize_4bit(packed, rows).reshape(state.shape)


def nf4_reference(w: torch.Tensor, nested: bool):
    """(lo, hi, tol): per element of w flattened, the two values an exact NF4 round trip may give
    (equal unless w sits on a midpoint) and how far a faithful implementation may be from them."""
    flat = w.detach().reshape(-1).to(torch.float64)
    n = flat.numel()
    blocks = torch.nn.functional.pad(flat, (0, -n % BLOCKSIZE)).view(-1, BLOCKSIZE)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks / absmax.clamp(min=1e-38)[:, None]  # an all-zero block scales to 0: code 0.0
    lo_code = NF4[torch.bucketize(scaled - TIE, NF4_MIDPOINTS)]
    hi_code = NF4[torch.bucketize(scaled + TIE, NF4_MIDPOINTS)]
    tol = FP32_SLACK * absmax[:, None].expand_as(blocks)
    if nested:
        offset = absmax.mean()
        groups = torch.nn.functional.pad(absmax - offset, (0, -absmax.numel() % NESTED_BLOCKSIZE))
        absmax2 = groups.view(-1, NESTED_BLOCKSIZE).abs().amax(dim=1)
        absmax2 = absmax2.repeat_interleave(NESTED_BLOCKSIZE)[:absmax.numel()]
        absmax_error = NESTED_ABSMAX_ERROR * absmax2 + FP32_SLACK * (absmax2 + offset.abs())
        tol = tol + torch.maximum(lo_code.abs(), hi_code.abs()) * absmax_error[:, None]
    lo = (lo_code * absmax[:, None]).reshape(-1)[:n]
    hi = (hi_code * absmax[:, None]).reshape(-1)[:n]
    return lo, hi, tol.reshape(-1)[:n]


def round_trip_problem(F, w: torch.Tensor, compress_statistics: bool) -> str | None:
    """None if bnb's quantize_4bit then dequantize_by_blocks of w (nf4, blocks of 64) matches the
    reference within its tolerance, else what is wrong and where."""
    packed, state = F.quantize_4bit(w, blocksize=BLOCKSIZE, compress_statistics=compress_statistics,
                                    quant_type="nf4")
    got = dequantize_by_blocks(F, packed, state).to(torch.float64).reshape(-1)
    lo, hi, tol = nf4_reference(w, compress_statistics)
    error = torch.minimum((got - lo).abs(), (got - hi).abs())
    excess = error - tol
    if not bool((excess > 0).any()):  # also false for NaN: caught just below
        if bool(torch.isfinite(got).all()):
            return None
    worst = int(torch.nan_to_num(excess, nan=float("inf")).argmax())
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), tuple(w.shape)))
    return (f"shape {tuple(w.shape)}, compress_statistics={compress_statistics}: round-trip error "
            f"{error[worst].item():.3g} at {where} (got {got[worst].item():.6g}, NF4 reference "
            f"{lo[worst].item():.6g}), tolerance {tol[worst].item():.2g}")


def bnb_nf4_problems(F, tensors, seed: int = 0) -> list[str]:
    """The round-trip problems of bnb on `tensors` (the weights a test will quantize) and on random
    tensors of KNOWN_BAD_SHAPES, with and without double quantization."""
    g = torch.Generator().manual_seed(seed)
    probes = list(tensors) + [torch.randn(s, generator=g) for s in KNOWN_BAD_SHAPES]
    problems = []
    for w in probes:
        for compress_statistics in (False, True):
            problem = round_trip_problem(F, w, compress_statistics)
            if problem:
                problems.append(problem)
    return problems


def skip_unless_bnb_nf4_sane(F, tensors) -> None:
    """pytest.skip naming bnb's defect if its CPU NF4 round trip is wrong here (see
    bnb_nf4_problems): a test that takes bnb as its reference cannot judge qlorad then."""
    problems = bnb_nf4_problems(F, tensors)
    if problems:
        import bitsandbytes

        capability = torch.backends.cpu.get_cpu_capability()
        pytest.skip(f"bitsandbytes {bitsandbytes.__version__} CPU quantize_4bit/dequantize_4bit "
                    f"round trip is wrong on this CPU (torch capability {capability}), so it "
                    f"cannot be the reference: " + "; ".join(problems[:3])
                    + (f"; and {len(problems) - 3} more" if len(problems) > 3 else ""))
