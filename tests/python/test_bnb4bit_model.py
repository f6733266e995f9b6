"""A bitsandbytes 4-bit model directory made by bitsandbytes itself (its CPU quantize_4bit, saved
the way transformers serializes a load_in_4bit model: each projection's packed weight plus
QuantState.as_dict(packed=True)) is trained on as stored.

The reference is requantization-free: a dense copy whose projections are bitsandbytes' own
dequantize_4bit of the same bytes, trained with quantization none, must give bitwise the same
losses (our NF4 dequantizer is bnb-exact). Against the original model quantized by qlorad at load
the losses are only close: bnb's CPU backend decides a few 8-bit absmax codes of the double
quantization one step away from its CUDA kernels (which our quantizer reproduces), 1 or 2 codes per
tiny-model weight with bitsandbytes 0.50.2. Needs build/bin/qlorad-train (QLORAD_BIN_DIR).

bnb is only a reference where its own NF4 round trip is right: bnb_guard checks it against one
written in plain torch on the weights each test quantizes, and the tests that compare values skip
where it is wrong (bitsandbytes 0.50.2's shaped CPU dequantizer with AVX-512 is, for the tiny
model's down_proj; dequantize_by_blocks avoids that)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from bnb_guard import (  # noqa: E402  (after the skips: it imports torch)
    KNOWN_BAD_SHAPES, bnb_nf4_problems, dequantize_by_blocks, round_trip_problem,
    skip_unless_bnb_nf4_sane)

BIN_DIR = Path(os.environ.get("QLORAD_BIN_DIR", "/work/main/build/bin"))
TRAIN = BIN_DIR / "qlorad-train"
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def bnb_functional():
    """bitsandbytes.functional if its wheel quantizes 4-bit on the CPU here, else a skip."""
    try:
        import bitsandbytes.functional as F
        F.quantize_4bit(torch.ones(64, 64), blocksize=64, compress_statistics=True, quant_type="nf4")
    except Exception as e:  # noqa: BLE001  (any failure means: no CPU 4-bit quantizer here)
        pytest.skip(f"bitsandbytes cannot quantize 4-bit on the CPU here: {e!r}")
    return F


def skip_unless_bnb_is_a_reference(F, dense: Path) -> None:
    """Skips, naming bnb's defect, unless its NF4 round trip is right here on the projections of
    `dense`: the weights that make_bnb_copy quantizes."""
    weights = safetensors_torch.load_file(str(dense / "model.safetensors"))
    skip_unless_bnb_nf4_sane(F, [w for name, w in weights.items()
                                 if name.rsplit(".", 2)[-2] in PROJECTIONS])


def make_bnb_copy(F, dense: Path, out: Path, quant_type: str = "nf4") -> int:
    """Writes `out`: `dense` with every projection quantized by bitsandbytes; returns the count."""
    out.mkdir()
    tensors = {}
    quantized = 0
    for name, w in safetensors_torch.load_file(str(dense / "model.safetensors")).items():
        if name.rsplit(".", 2)[-2] not in PROJECTIONS:
            tensors[name] = w
            continue
        packed, state = F.quantize_4bit(w, blocksize=64, compress_statistics=True,
                                        quant_type=quant_type)
        tensors[name] = packed
        for key, value in state.as_dict(packed=True).items():
            tensors[f"{name}.{key}"] = value
        quantized += 1
    # safetensors refuses tensors that share storage (bnb reuses its code tables); clones store
    # the same bytes.
    safetensors_torch.save_file({k: v.clone().contiguous() for k, v in tensors.items()},
                                str(out / "model.safetensors"))
    config = json.loads((dense / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
        "bnb_4bit_quant_type": quant_type, "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "float32", "bnb_4bit_quant_storage": "uint8"}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return quantized


def make_dequantized_copy(F, bnb: Path, out: Path) -> None:
    """`bnb` with every projection replaced by bitsandbytes' fp32 dequantization of its bytes, in
    rows of one block each (dequantize_by_blocks: right where bnb's shaped CPU kernel is not)."""
    out.mkdir()
    stored = safetensors_torch.load_file(str(bnb / "model.safetensors"))
    tensors = {}
    for name, value in stored.items():
        if name.rsplit(".", 2)[-2] in PROJECTIONS:  # the packed weight itself
            state = F.QuantState.from_dict(
                {k[len(name) + 1:]: v for k, v in stored.items() if k.startswith(name + ".")},
                device=torch.device("cpu"))
            tensors[name] = dequantize_by_blocks(F, value, state).to(torch.float32)
        elif not any(name.startswith(p + ".") for p in stored if p.rsplit(".", 2)[-2] in PROJECTIONS):
            tensors[name] = value
    safetensors_torch.save_file(tensors, str(out / "model.safetensors"))
    config = json.loads((bnb / "config.json").read_text())
    del config["quantization_config"]
    (out / "config.json").write_text(json.dumps(config, indent=2))


def run_train(tmp: Path, model: Path, quantization: str, tag: str):
    spec = tmp / f"{tag}.yaml"
    spec.write_text(
        f"name: bnb-{tag}\n"
        f"model: {{path: {model}}}\n"
        f"quantization: {{type: {quantization}, double_quant: true, block_size: 64}}\n"
        "lora: {r: 4, alpha: 8, dropout: 0.1, target_modules: [q_proj, v_proj, down_proj]}\n"
        f"data: {{path: {tmp / 'data.jsonl'}, format: text, max_seq_len: 32, packing: true, "
        "shuffle: true, seed: 1}\n"
        "train: {max_steps: 5, micro_batch_size: 2, grad_accum: 1, lr: 1.0e-2, "
        "scheduler: constant, warmup_steps: 0, precision: fp32, seed: 7}\n"
        "resources: {device: cpu}\n"
        f"checkpoint: {{every_steps: 0, keep: 1, output_dir: {tmp / ('out-' + tag)}}}\n")
    proc = subprocess.run([str(TRAIN), "run", str(spec), "--json", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, events


@pytest.fixture()
def models(tmp_path: Path):
    if not TRAIN.exists():
        pytest.fail(f"{TRAIN} is missing: build qlorad-train or set QLORAD_BIN_DIR")
    F = bnb_functional()
    dense = tmp_path / "dense"
    subprocess.run([str(TRAIN), "make-tiny-model", "--out", str(dense), "--seed", "0"],
                   check=True, capture_output=True, timeout=120)
    lines = [f'{{"text": "the {w} fox jumps over the lazy dog {i}"}}'
             for i, w in enumerate(["red", "brown", "grey", "black", "white", "sly"] * 4)]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    return F, tmp_path, dense


def losses(events):
    return [e["loss"] for e in events if e["event"] == "metrics"]


def test_bnb4bit_model_trains_on_its_stored_bytes(models):
    F, tmp, dense = models
    skip_unless_bnb_is_a_reference(F, dense)
    bnb = tmp / "bnb"
    assert make_bnb_copy(F, dense, bnb) == 14  # 7 projections x 2 layers of the tiny model
    make_dequantized_copy(F, bnb, tmp / "dequantized")

    stored, stored_events = run_train(tmp, bnb, "nf4", "bnb")
    assert stored.returncode == 0, stored.stderr
    reference, reference_events = run_train(tmp, tmp / "dequantized", "none", "reference")
    assert reference.returncode == 0, reference.stderr
    requantized, requantized_events = run_train(tmp, dense, "nf4", "ours")
    assert requantized.returncode == 0, requantized.stderr

    assert len(losses(stored_events)) == 5
    assert losses(stored_events) == losses(reference_events)  # bitwise
    # Same weights up to a few absmax codes one step apart (see the module docstring): fp32 losses
    # agree far below the NF4 rounding itself (which moves the loss by ~1e-3 relative).
    assert losses(stored_events) == pytest.approx(losses(requantized_events), rel=1e-5)
    logs = " ".join(e.get("message", "") for e in stored_events if e["event"] == "log")
    assert "using its stored quantization" in logs
    assert "quantized 14 linear layers (nf4)" in logs


def test_type_none_on_a_bnb_model_names_the_field(models):
    F, tmp, dense = models
    make_bnb_copy(F, dense, tmp / "bnb")
    proc, events = run_train(tmp, tmp / "bnb", "none", "none")
    assert proc.returncode == 2
    errors = [e for e in events if e["event"] == "error"]
    assert errors and "quantization.type" in errors[-1]["message"]


def test_fp4_checkpoint_is_refused_naming_the_file(models):
    F, tmp, dense = models
    make_bnb_copy(F, dense, tmp / "fp4", quant_type="fp4")
    proc, events = run_train(tmp, tmp / "fp4", "nf4", "fp4")
    assert proc.returncode == 2
    message = [e for e in events if e["event"] == "error"][-1]["message"]
    assert str(tmp / "fp4" / "config.json") in message
    assert "bnb_4bit_quant_type: 'fp4'" in message


def test_export_merges_an_adapter_into_a_bnb_base(models):
    """`export` of the bnb-4bit copy with a PEFT adapter equals transformers + peft's
    merge_and_unload on the dequantized fp32 twin (the same base weights, bnb-exact), and
    transformers loads it. No --dtype: the base's own (float32 here) is the default."""
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    F, tmp, dense = models
    skip_unless_bnb_is_a_reference(F, dense)
    make_bnb_copy(F, dense, tmp / "bnb")
    make_dequantized_copy(F, tmp / "bnb", tmp / "twin")
    twin = transformers.AutoModelForCausalLM.from_pretrained(tmp / "twin", dtype=torch.float32)
    torch.manual_seed(3)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(PROJECTIONS),
                             lora_dropout=0.0, init_lora_weights=False, task_type="CAUSAL_LM")
    adapted = peft.get_peft_model(twin, config)
    adapted.save_pretrained(tmp / "adapter")
    merged = adapted.merge_and_unload().eval()
    want = merged.state_dict()
    before = safetensors_torch.load_file(str(tmp / "twin" / "model.safetensors"))

    proc = subprocess.run([str(TRAIN), "export", "--model", str(tmp / "bnb"), "--adapter",
                           str(tmp / "adapter"), "--out", str(tmp / "merged")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = safetensors_torch.load_file(str(tmp / "merged" / "model.safetensors"))
    merged_names = [n for n in got if n.rsplit(".", 2)[-2] in PROJECTIONS]
    assert len(merged_names) == 14
    for name, w in got.items():
        assert w.dtype == torch.float32, name
        # fp32 on both sides: the merge differs only in the order of B @ A's sums.
        torch.testing.assert_close(w, want[name], msg=name)
    # The adapter really moved the merged weights, far beyond that tolerance.
    assert max((got[n] - before[n]).abs().max().item() for n in merged_names) > 1e-2

    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp / "merged", dtype="auto").eval()
    assert loaded.dtype == torch.float32
    ids = torch.randint(0, loaded.config.vocab_size, (2, 24),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = loaded(input_ids=ids).logits, merged(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


# The guard itself. The projection shapes of the tiny model and of test_hf_parity's llama: rows of
# 176 and 96 columns hold no whole number of blocks.
GUARDED_SHAPES = ((64, 64), (32, 64), (176, 64), (64, 176), (96, 64), (48, 64), (64, 96))


def corrupt_one_block(F, monkeypatch, how: str) -> None:
    """Breaks bnb's quantize_4bit or dequantize_4bit for block 1 (elements 64..127) only."""
    quantize, dequantize = F.quantize_4bit, F.dequantize_4bit

    def quantize_one_code_off(A, *args, **kwargs):
        packed, state = quantize(A, *args, **kwargs)
        packed = packed.clone()
        packed.view(-1)[32] ^= 0x10  # element 64, the high nibble: to a neighbouring code ...
        return packed, state

    def dequantize_scale_off(A, quant_state=None, *args, **kwargs):
        out = dequantize(A, quant_state, *args, **kwargs)
        out.view(-1)[64:128] *= 1.03  # ... or the block's absmax 3% off
        return out

    if how == "code":
        monkeypatch.setattr(F, "quantize_4bit", quantize_one_code_off)
    else:
        monkeypatch.setattr(F, "dequantize_4bit", dequantize_scale_off)


@pytest.mark.parametrize("compress_statistics", [False, True])
@pytest.mark.parametrize("how", ["code", "scale"])
def test_guard_reports_a_corrupted_block(monkeypatch, how: str, compress_statistics: bool):
    F = bnb_functional()
    w = torch.randn((64, 176), generator=torch.Generator().manual_seed(1))
    assert round_trip_problem(F, w, compress_statistics) is None
    corrupt_one_block(F, monkeypatch, how)
    problem = round_trip_problem(F, w, compress_statistics)
    assert problem is not None
    assert f"shape (64, 176), compress_statistics={compress_statistics}" in problem
    if how == "code":
        assert "at (0, 64)" in problem
    else:  # the worst element is somewhere in block 1: row 0, columns 64..127
        assert problem.split(" at (")[1].startswith("0, ")


def test_guard_skips_naming_the_defect(monkeypatch):
    import bitsandbytes

    F = bnb_functional()
    corrupt_one_block(F, monkeypatch, "scale")
    with pytest.raises(pytest.skip.Exception) as skipped:
        skip_unless_bnb_nf4_sane(F, [torch.randn(64, 64)])
    message = str(skipped.value)
    assert (f"bitsandbytes {bitsandbytes.__version__} CPU quantize_4bit/dequantize_4bit round trip "
            "is wrong on this CPU") in message
    assert "shape (64, 64), compress_statistics=False: round-trip error" in message
    # The known bad shapes are tried too: 2 problems for each shape, 3 of them named.
    assert "shape (96, 80), compress_statistics=False" in message
    assert f"; and {2 * (1 + len(KNOWN_BAD_SHAPES)) - 3} more" in message


def test_guard_passes_bnb_where_it_is_sane():
    """bnb's round trip through dequantize_by_blocks was right with AVX2 (AMD EPYC) and AVX-512
    (Intel Xeon), and the guard must let a right bnb through (a guard too strict would quietly
    skip the value tests above). Where bnb is wrong even so, this skips naming the defect, as
    they do: no test here passes or fails with bnb's CPU-specific behaviour."""
    F = bnb_functional()
    g = torch.Generator().manual_seed(2)
    # Blocks of zeros and of one value too: the NF4 code's middle and ends.
    skip_unless_bnb_nf4_sane(F, [torch.randn(s, generator=g) for s in GUARDED_SHAPES]
                             + [torch.zeros(2, 64), torch.ones(2, 64), -torch.ones(4, 32)])
