"""`qlorad-train eval --dtype bf16|fp16` and `qlorad-train export --dtype bf16|fp16|fp32` on the
CPU against transformers (+ peft), on the tiny random Llama of test_hf_parity.py.

Low-precision tolerances follow flash-attention's tests: the reference is the fp32 forward, and
our error against it must stay within twice the error transformers itself makes against it when
run in the same low precision. Where both sides hold the same weights in the same dtype and compute
in fp32, the fp32 tolerance of test_hf_parity.py applies. Needs build/bin/qlorad-train
(QLORAD_BIN_DIR)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors = pytest.importorskip("safetensors")

sys.path.insert(0, str(Path(__file__).parent))
from test_hf_parity import (ATOL, make_model, make_peft_adapter, max_abs_diff,  # noqa: E402
                            qlorad, reference_losses, report, write_data)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
HF_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
SAFETENSORS_NAMES = {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}


def evaluate(model_dir: Path, data: Path, dtype: str) -> list[list[float]]:
    out = qlorad("eval", "--model", str(model_dir), "--data", str(data), "--json", "--dtype", dtype)
    return json.loads(out.stdout.splitlines()[-1])["per_token_loss"]


def hf_losses_in(model, dtype: str, rows) -> list[list[float]]:
    return reference_losses(copy.deepcopy(model).to(DTYPES[dtype]), rows)


def stored_dtypes(model_dir: Path) -> set[str]:
    names = set()
    for shard in model_dir.glob("*.safetensors"):
        with safetensors.safe_open(str(shard), framework="pt") as f:
            names |= {f.get_slice(key).get_dtype() for key in f.keys()}
    return names


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The fp32 model, its rows, a PEFT adapter, and transformers' fp32 losses for both."""
    tmp = tmp_path_factory.mktemp("dtypes")
    model = make_model("llama", tmp / "model")
    rows = write_data(tmp / "data.jsonl")
    peft_model = make_peft_adapter(copy.deepcopy(model), tmp / "adapter", use_rslora=False)
    merged = peft_model.merge_and_unload().eval()
    return tmp, model, rows, merged


def test_eval_in_bf16_is_as_close_to_fp32_as_transformers(base):
    """The fp32 checkpoint cast to bf16 at load (fp16 runs in the export test below, on weights
    stored in fp16)."""
    tmp, model, rows, _ = base
    dtype = "bf16"
    fp32 = reference_losses(model, rows)
    theirs = max_abs_diff(hf_losses_in(model, dtype, rows), fp32)
    ours = max_abs_diff(evaluate(tmp / "model", tmp / "data.jsonl", dtype), fp32)
    report(f"eval {dtype}: ours vs fp32 (transformers {dtype} vs fp32: {theirs:.3e})", ours)
    # The precision really changed something, or the bound would test nothing.
    assert theirs > ATOL
    assert ours <= 2 * theirs


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
def test_export_writes_the_dtype_asked_and_transformers_agrees(base, dtype):
    tmp, _, rows, merged = base
    out = tmp / f"merged-{dtype}"
    qlorad("export", "--model", str(tmp / "model"), "--adapter", str(tmp / "adapter"),
           "--out", str(out), "--dtype", dtype, "--merge-into", "original")
    assert stored_dtypes(out) == {SAFETENSORS_NAMES[dtype]}
    assert json.loads((out / "config.json").read_text())["dtype"] == HF_NAMES[dtype]

    loaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="auto").eval()
    assert loaded.dtype == DTYPES[dtype]
    # The weights are PEFT's fp32 merge rounded once to the dtype: a merge summed in another order
    # may round a value to the neighbouring representable number, never further.
    eps = torch.finfo(DTYPES[dtype]).eps
    theirs = merged.state_dict()
    for name, w in loaded.state_dict().items():
        want = theirs[name].to(DTYPES[dtype]).float()
        assert torch.all((w.float() - want).abs() <= eps * want.abs() + 1e-7), name

    # Our eval of the export in its own dtype against transformers on it: the fp32 tolerance for
    # fp32, and for bf16/fp16 within twice transformers' own error against the fp32 forward of
    # the same stored weights.
    fp32 = reference_losses(copy.deepcopy(loaded).float(), rows)
    ours = max_abs_diff(evaluate(out, tmp / "data.jsonl", dtype), fp32)
    if dtype == "fp32":
        report("export fp32: ours vs transformers on it", ours)
        assert ours < ATOL
    else:
        theirs = max_abs_diff(reference_losses(loaded, rows), fp32)
        report(f"export {dtype}: ours in {dtype} vs fp32 (transformers: {theirs:.3e})", ours)
        assert theirs > ATOL
        assert ours <= 2 * theirs


def test_export_defaults_to_the_base_checkpoints_dtype(base, tmp_path):
    """(The fp32 default is exercised by the bnb-4bit export of test_bnb4bit_model.py.)"""
    tmp, model, _, _ = base
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp_path / "bf16-base")
    qlorad("export", "--model", str(tmp_path / "bf16-base"), "--adapter", str(tmp / "adapter"),
           "--out", str(tmp_path / "from-bf16"))
    assert stored_dtypes(tmp_path / "from-bf16") == {"BF16"}
    assert json.loads((tmp_path / "from-bf16" / "config.json").read_text())["dtype"] == "bfloat16"


@pytest.mark.parametrize("keys", [{"dtype": "bfloat16", "torch_dtype": "float16"},
                                  {"dtype": None, "torch_dtype": "bfloat16"},
                                  {"torch_dtype": "float16"}])
def test_export_reads_dtype_and_torch_dtype_as_transformers_does(base, tmp_path, keys):
    """transformers 5 writes `dtype`, older checkpoints `torch_dtype`; some carry both."""
    tmp, model, _, _ = base
    model.save_pretrained(tmp_path / "base")
    config_path = tmp_path / "base" / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("dtype", None)
    config.update(keys)
    config_path.write_text(json.dumps(config))
    want = transformers.AutoConfig.from_pretrained(tmp_path / "base").dtype
    qlorad("export", "--model", str(tmp_path / "base"), "--adapter", str(tmp / "adapter"),
           "--out", str(tmp_path / "merged"))
    name = {v: k for k, v in DTYPES.items()}[want]
    assert stored_dtypes(tmp_path / "merged") == {SAFETENSORS_NAMES[name]}
