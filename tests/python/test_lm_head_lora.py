"""LoRA on lm_head (PEFT's target name) against the Hugging Face libraries, on tiny random Llamas
with tied and untied embeddings, fp32 on the CPU: `eval --adapter` with a PEFT adapter whose
targets include lm_head equals transformers + peft; transformers loads our merged export of such
an adapter (a separate lm_head.weight, tie_word_embeddings false) and gives the same losses; a
few training steps with lm_head among the targets lower the loss and move its B, and peft and
transformers (merged) reproduce that adapter's losses, with lora.dropout 0 and 0.1 (the head's A
then sees dropout(hidden) in training; eval draws none).
Per-token losses within 1e-4 absolute. Reuses test_hf_parity's helpers. Needs qlorad-train
(QLORAD_BIN_DIR)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

sys.path.insert(0, str(Path(__file__).parent))
import test_hf_parity as hf  # noqa: E402

# An untied Llama next to test_hf_parity's tied one.
hf.CONFIGS.setdefault("llama_untied",
                      lambda: transformers.LlamaConfig(**hf.COMMON, tie_word_embeddings=False))
KINDS = {"tied": "llama", "untied": "llama_untied"}
HEAD_A = "base_model.model.lm_head.lora_A.weight"
HEAD_B = "base_model.model.lm_head.lora_B.weight"


def make_head_adapter(model, out: Path, targets: list[str], seed: int = 1):
    """A PEFT adapter on `targets` with non-zero B (init_lora_weights=False draws both)."""
    torch.manual_seed(seed)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0,
                             init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = peft.get_peft_model(model, config)
    peft_model.save_pretrained(out)
    return peft_model.eval()


@pytest.mark.parametrize("tie", ["tied", "untied"])
def test_peft_adapter_with_lm_head_matches_transformers(tmp_path: Path, tie: str):
    model = hf.make_model(KINDS[tie], tmp_path / "model")
    rows = hf.write_data(tmp_path / "data.jsonl")
    base = hf.reference_losses(model, rows)
    # Tied: the head alone, so any difference from the base is the head's LoRA.
    targets = ["lm_head"] if tie == "tied" else [*hf.PROJECTIONS, "lm_head"]
    peft_model = make_head_adapter(model, tmp_path / "adapter", targets)
    tensors = safetensors_torch.load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert tensors[HEAD_A].shape == (4, 64) and tensors[HEAD_B].shape == (hf.VOCAB, 4)
    ours = hf.evaluate(tmp_path / "model", tmp_path / "data.jsonl", tmp_path / "adapter")
    diff = hf.max_abs_diff(ours, hf.reference_losses(peft_model, rows))
    hf.report(f"{tie} llama + peft adapter with lm_head", diff)
    assert diff < hf.ATOL
    assert hf.max_abs_diff(ours, base) > 10 * hf.ATOL


def write_spec(tmp: Path, model: Path, dropout: float = 0.0, steps: int = 6) -> Path:
    spec = tmp / "job.yaml"
    spec.write_text(
        "name: lm-head\n"
        f"model: {{path: {model}}}\n"
        "quantization: {type: none}\n"
        f"lora: {{r: 4, alpha: 8, dropout: {dropout}, target_modules: [q_proj, v_proj, lm_head]}}\n"
        f"data: {{path: {tmp / 'data.jsonl'}, format: input_ids, max_seq_len: 32, "
        "packing: false, shuffle: false, seed: 1}\n"
        f"train: {{max_steps: {steps}, micro_batch_size: 4, grad_accum: 1, lr: 2.0e-2, "
        "scheduler: constant, warmup_steps: 0, precision: fp32, seed: 3}\n"
        "resources: {device: cpu}\n"
        f"checkpoint: {{every_steps: 0, keep: 1, output_dir: {tmp / 'run'}}}\n")
    return spec


def test_merged_export_with_lm_head_lora_loads_in_transformers(tmp_path: Path):
    """Tied base: the merged head is written as its own lm_head.weight with tie_word_embeddings
    false and the embedding left as it was (PEFT's merge_and_unload would merge into the shared
    tensor and change the embedding too), so transformers computes what base + adapter did."""
    model = hf.make_model("llama", tmp_path / "model")
    embed = model.model.embed_tokens.weight.detach().clone()
    rows = hf.write_data(tmp_path / "data.jsonl")
    peft_model = make_head_adapter(model, tmp_path / "adapter", [*hf.PROJECTIONS, "lm_head"])
    reference = hf.reference_losses(peft_model, rows)
    merged = hf.export_fp32(tmp_path / "model", tmp_path / "adapter", tmp_path / "merged")
    merged_config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert merged_config["tie_word_embeddings"] is False
    weights = safetensors_torch.load_file(tmp_path / "merged" / "model.safetensors")
    assert torch.equal(weights["model.embed_tokens.weight"], embed)
    assert not torch.equal(weights["lm_head.weight"], embed)
    diff = hf.max_abs_diff(hf.reference_losses(merged, rows), reference)
    hf.report("transformers on our merged export with lm_head vs transformers + peft", diff)
    assert diff < hf.ATOL


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_trained_lm_head_lora_loads_in_peft_and_merges_for_transformers(tmp_path: Path,
                                                                        dropout: float):
    """A few steps on one batch with lm_head among the targets: the loss falls and the head's B
    (zero at init) moves; peft loads the adapter and gives our eval losses, and so does
    transformers on our merged export of it. With lora.dropout 0.1 the head's A sees
    dropout(hidden) in training; eval draws none on either side."""
    model = hf.make_model("llama", tmp_path / "model")  # tied
    rows = hf.write_data(tmp_path / "data.jsonl")
    proc = hf.qlorad("run", str(write_spec(tmp_path, tmp_path / "model", dropout=dropout)),
                     "--json", "--device", "cpu")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    losses = [e["loss"] for e in events if e["event"] == "metrics"]
    assert len(losses) == 6 and all(map(math.isfinite, losses)), losses
    assert losses[-1] < losses[0] - 0.1, losses
    adapter = tmp_path / "run" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert "lm_head" in config["target_modules"] and config["lora_dropout"] == dropout
    tensors = safetensors_torch.load_file(adapter / "adapter_model.safetensors")
    assert tensors[HEAD_B].abs().max().item() > 1e-3

    ours = hf.evaluate(tmp_path / "model", tmp_path / "data.jsonl", adapter)
    peft_model = peft.PeftModel.from_pretrained(model, adapter).eval()
    diff = hf.max_abs_diff(ours, hf.reference_losses(peft_model, rows))
    hf.report(f"peft loading our trained adapter with lm_head, dropout {dropout}", diff)
    assert diff < hf.ATOL
    merged = hf.export_fp32(tmp_path / "model", adapter, tmp_path / "merged")
    diff = hf.max_abs_diff(hf.reference_losses(merged, rows), ours)
    hf.report("transformers on our merged export of it vs our eval", diff)
    assert diff < hf.ATOL
