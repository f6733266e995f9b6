"""`qlorad-train export --merge-into nf4|original` and its comparison of the two merges, on the
tiny Llama of test_hf_parity.py with a PEFT adapter, against references computed here:
- original: PEFT's merge_and_unload over the 16-bit weights (fp32 tolerance);
- nf4 (the default): the same LoRA delta over the NF4 round trip of each projection, as
  bnb_guard.nf4_reference computes it in plain torch (blocks of 64, double quantization), so each
  element lies within that reference's bounds plus fp32 rounding of the merge;
- the comparison: per-tensor max/mean abs differences of those two merged checkpoints, and
  transformers' per-token losses of both on the data. Needs build/bin/qlorad-train
  (QLORAD_BIN_DIR)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

sys.path.insert(0, str(Path(__file__).parent))
from bnb_guard import nf4_reference  # noqa: E402
from test_hf_parity import (PROJECTIONS, make_model, make_peft_adapter, qlorad,  # noqa: E402
                            reference_losses, write_data)

FP32_MERGE = 1e-6  # relative: W + s * B @ A summed in another order


def merged_weights(out: Path) -> dict:
    return safetensors_torch.load_file(str(out / "model.safetensors"))


def is_projection(name: str) -> bool:
    return name.rsplit(".", 2)[-2] in PROJECTIONS


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("merge")
    model = make_model("llama", tmp / "model")
    rows = write_data(tmp / "data.jsonl")
    base = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = make_peft_adapter(copy.deepcopy(model), tmp / "adapter", use_rslora=False)
    original = peft_model.merge_and_unload().eval()
    return tmp, rows, base, original


def export(tmp: Path, name: str, *extra: str) -> tuple[dict, list[dict]]:
    proc = qlorad("export", "--model", str(tmp / "model"), "--adapter", str(tmp / "adapter"),
                  "--out", str(tmp / name), "--dtype", "fp32", "--json", *extra)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return merged_weights(tmp / name), lines


def test_original_is_peft_merge_over_the_16bit_weights(setup):
    tmp, _, _, original = setup
    got, lines = export(tmp, "original", "--merge-into", "original", "--no-compare")
    want = original.state_dict()
    for name, w in got.items():
        torch.testing.assert_close(w, want[name], msg=name)
    assert not [line for line in lines if line.get("type") == "merge_comparison"]


def test_default_merges_into_the_nf4_round_trip_and_compares(setup):
    tmp, rows, base, original = setup
    got, lines = export(tmp, "nf4", "--compare-data", str(tmp / "data.jsonl"))
    want = original.state_dict()
    reference = {}
    for name, w in got.items():
        if not is_projection(name):
            torch.testing.assert_close(w, want[name], rtol=0, atol=0, msg=name)
            continue
        delta = (want[name] - base[name]).to(torch.float64)  # PEFT's s * B @ A
        lo, hi, tol = nf4_reference(base[name], nested=True)
        dequantized = (w.to(torch.float64) - delta).reshape(-1)
        slack = tol + FP32_MERGE * w.abs().reshape(-1).to(torch.float64)
        error = torch.minimum((dequantized - lo).abs(), (dequantized - hi).abs())
        assert bool((error <= slack).all()), f"{name}: {error.max().item():.3g} off NF4"
        # Quantization really changed the weight, by far more than the merge's rounding.
        assert (w - want[name]).abs().max().item() > 1e-3
        reference[name] = (w - want[name]).abs().to(torch.float64)

    [report] = [line for line in lines if line.get("type") == "merge_comparison"]
    assert report["written"] == "nf4"
    assert {t["name"] for t in report["tensors"]} == set(reference)
    for t in report["tensors"]:
        diff = reference[t["name"]]
        assert t["numel"] == diff.numel()
        assert t["max_abs"] == pytest.approx(diff.max().item(), rel=1e-5, abs=1e-7)
        assert t["mean_abs"] == pytest.approx(diff.mean().item(), rel=1e-5, abs=1e-7)
    everything = torch.cat([d.reshape(-1) for d in reference.values()])
    assert report["max_abs"] == pytest.approx(everything.max().item(), rel=1e-5)
    assert report["mean_abs"] == pytest.approx(everything.mean().item(), rel=1e-5)
    assert report["identical_tensors"] == len(got) - len(reference)

    # Losses: transformers on both merged checkpoints.
    nf4_model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp / "nf4", dtype=torch.float32).eval()
    a = [v for r in reference_losses(nf4_model, rows) for v in r]
    b = [v for r in reference_losses(original, rows) for v in r]
    diffs = [abs(x - y) for x, y in zip(a, b)]
    loss = report["loss"]
    assert (loss["examples"], loss["tokens"]) == (len(rows), len(a))
    assert loss["nf4_mean_loss"] == pytest.approx(sum(a) / len(a), abs=1e-5)
    assert loss["original_mean_loss"] == pytest.approx(sum(b) / len(b), abs=1e-5)
    assert loss["max_abs"] == pytest.approx(max(diffs), abs=1e-5)
    assert loss["mean_abs"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-5)
    assert loss["max_abs"] > 1e-3  # the two merges really compute different losses


def test_compare_examples_limits_the_loss_rows_and_text_output(setup):
    tmp, rows, _, _ = setup
    proc = qlorad("export", "--model", str(tmp / "model"), "--adapter", str(tmp / "adapter"),
                  "--out", str(tmp / "text"), "--compare-data", str(tmp / "data.jsonl"),
                  "--compare-examples", "2")
    assert "merge into nf4 vs into original: 14 tensors differ" in proc.stderr
    assert "per-token loss on the first 2 examples" in proc.stderr


def test_job_without_quantization_merges_into_original(setup, tmp_path):
    tmp, _, _, original = setup
    job = tmp_path / "job.yaml"
    job.write_text(f"name: j\nmodel: {{path: {tmp / 'model'}}}\nquantization: {{type: none}}\n"
                   f"data: {{path: {tmp / 'data.jsonl'}}}\n")
    got, lines = export(tmp, "from-job", "--job", str(job))
    for name, w in got.items():
        torch.testing.assert_close(w, original.state_dict()[name], msg=name)
    assert not [line for line in lines if line.get("type") == "merge_comparison"]


def test_bad_choices_name_the_option(setup, tmp_path):
    tmp, _, _, _ = setup
    proc = qlorad("export", "--model", str(tmp / "model"), "--adapter", str(tmp / "adapter"),
                  "--out", str(tmp_path / "x"), "--merge-into", "fp8", check=False)
    assert proc.returncode != 0 and "--merge-into" in proc.stderr
    # An "original" that is itself 4-bit cannot be the 16-bit weights.
    bnb = tmp_path / "bnb"
    bnb.mkdir()
    config = json.loads((tmp / "model" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True,
                                     "bnb_4bit_quant_type": "nf4"}
    (bnb / "config.json").write_text(json.dumps(config))
    proc = qlorad("export", "--model", str(tmp / "model"), "--adapter", str(tmp / "adapter"),
                  "--out", str(tmp_path / "y"), "--merge-into", "original", "--original", str(bnb),
                  check=False)
    assert proc.returncode == 2, proc.stderr
    assert "--original" in proc.stderr and "bitsandbytes 4-bit" in proc.stderr
