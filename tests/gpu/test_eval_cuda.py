"""`qlorad-train eval --device cuda` against transformers (+ peft) run on the same device, on the
tiny random Llama of tests/python/test_hf_parity.py: fp32 per-token losses within its 1e-4 (and
equal to our own CPU fp32 eval); bf16 within twice transformers' own bf16 error against its fp32
forward (as test_eval_export_dtypes.py does on the CPU); a PEFT adapter with non-zero B in fp32
within 1e-4.

QLORAD_BIN_DIR names the build's bin directory; QLORAD_TEST_DEVICE the device (default cuda; the
file is skipped when that is cuda and torch sees none; `cpu` checks the test itself anywhere)."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from test_hf_parity import (ATOL, make_model, make_peft_adapter, max_abs_diff,  # noqa: E402
                            qlorad, report, write_data)

DEVICE = os.environ.get("QLORAD_TEST_DEVICE", "cuda")
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("QLORAD_TEST_DEVICE=cuda but torch sees no CUDA device", allow_module_level=True)


def evaluate(tmp: Path, dtype: str, device: str = DEVICE, adapter: bool = False):
    args = ["eval", "--model", str(tmp / "model"), "--data", str(tmp / "data.jsonl"), "--json",
            "--device", device, "--dtype", dtype]
    if adapter:
        args += ["--adapter", str(tmp / "adapter")]
    return json.loads(qlorad(*args).stdout.splitlines()[-1])["per_token_loss"]


def losses_on_device(model, rows, dtype=torch.float32) -> list[list[float]]:
    """transformers' per-token losses with the model in `dtype` on DEVICE (cross-entropy in fp32)."""
    model = copy.deepcopy(model).to(device=DEVICE, dtype=dtype).eval()
    out = []
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["input_ids"]], device=DEVICE)
            logits = model(input_ids=ids).logits[0, :-1].float()
            target = torch.tensor(r["labels"][1:], device=DEVICE)
            loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100,
                                                     reduction="none")
            out.append(loss[target != -100].cpu().tolist())
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The fp32 model and rows on disk, and transformers' fp32 losses on DEVICE."""
    tmp = tmp_path_factory.mktemp("eval_device")
    model = make_model("llama", tmp / "model")
    rows = write_data(tmp / "data.jsonl")
    return tmp, model, rows, losses_on_device(model, rows)


def test_fp32_matches_transformers_and_our_cpu_eval(base):
    tmp, _, _, fp32 = base
    ours = evaluate(tmp, "fp32")
    diff = max_abs_diff(ours, fp32)
    report(f"eval fp32 on {DEVICE} vs transformers on {DEVICE}", diff)
    assert diff < ATOL
    diff = max_abs_diff(ours, evaluate(tmp, "fp32", device="cpu"))
    report(f"eval fp32 on {DEVICE} vs our eval on cpu", diff)
    assert diff < ATOL


def test_bf16_is_as_close_to_fp32_as_transformers(base):
    tmp, model, rows, fp32 = base
    theirs = max_abs_diff(losses_on_device(model, rows, torch.bfloat16), fp32)
    ours = max_abs_diff(evaluate(tmp, "bf16"), fp32)
    report(f"eval bf16 on {DEVICE} vs fp32 (transformers bf16: {theirs:.3e})", ours)
    # bf16 really changed something, or the bound would test nothing.
    assert theirs > ATOL
    assert ours <= 2 * theirs


def test_peft_adapter_matches_transformers_and_peft(base):
    tmp, model, rows, fp32 = base
    peft_model = make_peft_adapter(copy.deepcopy(model), tmp / "adapter", use_rslora=False)
    theirs = losses_on_device(peft_model, rows)
    diff = max_abs_diff(evaluate(tmp, "fp32", adapter=True), theirs)
    report(f"eval fp32 + peft adapter on {DEVICE} vs transformers + peft", diff)
    assert diff < ATOL
    # The adapter (non-zero B) moves the losses well past the tolerance: the check is not vacuous.
    assert max_abs_diff(theirs, fp32) > 10 * ATOL
