"""LoRA dropout on lm_head on CUDA: with lm_head among the targets and lora.dropout 0.1
the head's A sees dropout(hidden) through the generic chunked loss (a LoRA'd head never takes the
fused kernel). A few steps on the tiny random Llama of tests/python/test_hf_parity.py in fp32 and
bf16: the loss stays finite and falls; the fp32 adapter, evaluated by us and by peft on the CPU
(no dropout at eval), gives the same per-token losses within test_hf_parity's 1e-4.

QLORAD_BIN_DIR names the build's bin directory; QLORAD_TEST_DEVICE the device (default cuda; the
file is skipped when that is cuda and torch sees none; `cpu` checks the test itself anywhere)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import test_hf_parity as hf  # noqa: E402
import test_lm_head_lora as head  # noqa: E402

DEVICE = os.environ.get("QLORAD_TEST_DEVICE", "cuda")
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("QLORAD_TEST_DEVICE=cuda but torch sees no CUDA device", allow_module_level=True)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_lm_head_lora_with_dropout_trains_on_the_device(tmp_path: Path, precision: str):
    model = hf.make_model("llama", tmp_path / "model")
    rows = hf.write_data(tmp_path / "data.jsonl")
    spec = head.write_spec(tmp_path, tmp_path / "model", dropout=0.1)
    spec.write_text(spec.read_text().replace("precision: fp32", f"precision: {precision}"))
    proc = hf.qlorad("run", str(spec), "--json", "--device", DEVICE)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    losses = [e["loss"] for e in events if e["event"] == "metrics"]
    print(f"{DEVICE} {precision} losses {losses}")
    assert len(losses) == 6 and all(map(math.isfinite, losses)), losses
    assert losses[-1] < losses[0] - 0.1, losses
    if precision != "fp32":
        return
    adapter = tmp_path / "run" / "adapter"
    ours = hf.evaluate(tmp_path / "model", tmp_path / "data.jsonl", adapter)
    peft_model = peft.PeftModel.from_pretrained(model, adapter).eval()
    diff = hf.max_abs_diff(ours, hf.reference_losses(peft_model, rows))
    hf.report(f"peft on our adapter trained on {DEVICE} with lm_head dropout", diff)
    assert diff < hf.ATOL
