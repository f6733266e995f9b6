"""`qlorad-train export` of a classification adapter: a LlamaForSequenceClassification directory
that transformers loads with AutoModelForSequenceClassification (no peft), on the tiny Llama of
test_hf_parity.py (fp32, pad_token_id null, eos_token_id 2):
- config.json: the architecture, num_labels, id2label/label2id from the adapter's labels.json,
  pad_token_id (the eos id, as the base sets none); the weights: no lm_head, the adapter's
  score.weight, the merged projections; loading reports no missing or unexpected key;
- --merge-into original: batched logits (rows right-padded with pad_token_id, which transformers
  pools past) equal `qlorad-train classify` over the 16-bit base within fp32 rounding;
- --merge-into nf4 (the default): equal `classify` over the dequantized NF4 base (that base
  exported without an adapter) within fp32 rounding, and differ from the original merge's;
- --dtype bf16: each tensor is the fp32 export's rounded to bf16, nothing else;
- a PEFT-made SEQ_CLS adapter (no labels.json): labels "0".."N-1", and the merged model gives
  transformers + peft's logits;
- --format gguf refuses a classification adapter, naming it.
Needs build/bin/qlorad-train (QLORAD_BIN_DIR)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# Importing test_classification skips this module too where torch, transformers, peft or
# safetensors is missing.
from test_classification import (LABELS, classify, peft_seq_cls, safetensors_torch,  # noqa: E402
                                 seq_cls_model, torch, transformers)
from test_hf_parity import PROJECTIONS, VOCAB, make_model, qlorad  # noqa: E402

ATOL = 1e-5  # fp32 logits of a 2-layer model: the merge's and the matmuls' summation order
EOS = 2      # the tiny model's eos_token_id: the exported pad_token_id


def write_examples(path: Path, count: int, seed: int, labels=LABELS) -> list[dict]:
    """Examples of different lengths, some holding EOS inside, none ending with it (where
    transformers would pool the token before: see classification_export.h)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count):
        length = int(torch.randint(4, 16, (1,), generator=g))
        ids = torch.randint(1, VOCAB, (length,), generator=g).tolist()
        if i % 3 == 0:
            ids[length // 2] = EOS
        if ids[-1] == EOS:
            ids[-1] = EOS + 1
        rows.append({"input_ids": ids, "label": labels[i % len(labels)]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def padded_logits(model, rows, pad: int) -> torch.Tensor:
    """One batch, right-padded with `pad`: transformers pools each row's last non-pad token."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in rows])
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def export(tmp: Path, name: str, adapter: Path | None, *extra: str) -> tuple[Path, list[dict]]:
    args = ["export", "--model", str(tmp / "model"), "--out", str(tmp / name), "--json", *extra]
    if adapter is not None:
        args += ["--adapter", str(adapter)]
    proc = qlorad(*args)
    return tmp / name, [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def load_classifier(out: Path):
    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        out, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model


def train_classifier(tmp: Path, quantization: str, steps: int, batch: int, lora: str = "",
                     labels: str = "") -> None:
    """Trains a classification adapter on tmp/model and tmp/data.jsonl into tmp/run/adapter."""
    spec = tmp / "job.yaml"
    spec.write_text(
        "name: cls-export\n"
        "task: classification\n"
        f"model: {{path: {tmp / 'model'}}}\n"
        f"quantization: {quantization}\n"
        f"lora: {{r: 4, alpha: 8, dropout: 0.0{lora}}}\n"
        f"data: {{path: {tmp / 'data.jsonl'}, format: input_ids, label_field: label, "
        f"max_seq_len: 32{labels}}}\n"
        f"train: {{max_steps: {steps}, micro_batch_size: {batch}, lr: 1.0e-2, "
        "scheduler: constant, warmup_steps: 0, precision: fp32, seed: 3}\n"
        "resources: {device: cpu}\n"
        f"checkpoint: {{every_steps: 0, output_dir: {tmp / 'run'}}}\n")
    qlorad("run", str(spec), "--json")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A classification adapter our trainer made on the NF4 base (labels.json, trained head)."""
    tmp = tmp_path_factory.mktemp("cls_export")
    make_model("llama", tmp / "model")
    rows = write_examples(tmp / "data.jsonl", 12, seed=21)
    train_classifier(tmp, "{type: nf4, block_size: 64, double_quant: true}", steps=12,
                     batch=4, lora=f", target_modules: {PROJECTIONS}",
                     labels=f", labels: {json.dumps(LABELS)}, shuffle: true, seed: 1")
    return tmp, rows, tmp / "run" / "adapter"


def test_original_merge_is_a_sequence_classifier_with_classify_logits(trained):
    tmp, rows, adapter = trained
    out, lines = export(tmp, "original", adapter, "--merge-into", "original", "--dtype", "fp32")
    assert any("sequence-classification model with 3 labels" in line.get("message", "")
               for line in lines)
    config = json.loads((out / "config.json").read_text())
    labels = json.loads((adapter / "labels.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["num_labels"] == 3 and config["pad_token_id"] == EOS
    assert config["id2label"] == labels["id2label"] and config["label2id"] == labels["label2id"]
    assert config["id2label"] == {str(i): name for i, name in enumerate(LABELS)}
    weights = safetensors_torch.load_file(str(out / "model.safetensors"))
    assert "lm_head.weight" not in weights
    head = safetensors_torch.load_file(str(adapter / "adapter_model.safetensors"))[
        "base_model.model.score.weight"]
    assert torch.equal(weights["score.weight"], head)

    model = load_classifier(out)
    assert model.config.id2label == {i: name for i, name in enumerate(LABELS)}
    got = padded_logits(model, rows, pad=model.config.pad_token_id)
    want = torch.tensor(classify(tmp / "model", adapter, tmp / "data.jsonl")["logits"])
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    # The LoRA was merged: the projections moved off the base's.
    weights_base = safetensors_torch.load_file(str(tmp / "model" / "model.safetensors"))
    projections = [k for k in weights if k.rsplit(".", 2)[-2] in PROJECTIONS]
    assert max((weights[k] - weights_base[k]).abs().max().item() for k in projections) > 1e-3


def test_nf4_merge_gives_classify_logits_over_the_nf4_base(trained):
    tmp, rows, adapter = trained
    out, lines = export(tmp, "nf4", adapter, "--dtype", "fp32", "--compare-data",
                        str(tmp / "data.jsonl"))
    # The weights of both merges are compared; the causal loss comparison is left out.
    [comparison] = [line for line in lines if line.get("type") == "merge_comparison"]
    assert "loss" not in comparison
    assert "score.weight" not in [t["name"] for t in comparison["tensors"]]
    assert any("compared by their weights only" in line.get("message", "") for line in lines)

    dequantized, _ = export(tmp, "nf4_base", None, "--dtype", "fp32", "--no-compare")
    want = torch.tensor(classify(dequantized, adapter, tmp / "data.jsonl")["logits"])
    got = padded_logits(load_classifier(out), rows, pad=EOS)
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    original = torch.tensor(classify(tmp / "model", adapter, tmp / "data.jsonl")["logits"])
    assert (got - original).abs().max() > 100 * ATOL  # NF4's error: the two bases differ


def test_bf16_export_is_the_fp32_merge_rounded(trained):
    tmp, _, adapter = trained
    fp32, _ = export(tmp, "fp32", adapter, "--merge-into", "original", "--dtype", "fp32",
                     "--no-compare")
    bf16, _ = export(tmp, "bf16", adapter, "--merge-into", "original", "--dtype", "bf16",
                     "--no-compare")
    want = safetensors_torch.load_file(str(fp32 / "model.safetensors"))
    got = safetensors_torch.load_file(str(bf16 / "model.safetensors"))
    assert got.keys() == want.keys()
    for name, w in want.items():
        assert torch.equal(got[name], w.to(torch.bfloat16)), name
    assert json.loads((bf16 / "config.json").read_text())["dtype"] == "bfloat16"


def test_peft_made_adapter_exports_with_numbered_labels_and_peft_logits(tmp_path: Path):
    make_model("llama", tmp_path / "model")
    rows = write_examples(tmp_path / "data.jsonl", 9, seed=22, labels=["0", "1", "2"])
    adapted = peft_seq_cls(seq_cls_model(tmp_path / "model"))
    adapted.save_pretrained(tmp_path / "adapter")
    out, _ = export(tmp_path, "merged", tmp_path / "adapter", "--merge-into", "original",
                    "--dtype", "fp32")
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1", "2": "2"}
    adapted.config.pad_token_id = EOS  # seq_cls_model set 0; pool as the export does
    want = padded_logits(adapted, rows, pad=EOS)
    got = padded_logits(load_classifier(out), rows, pad=EOS)
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


def test_gguf_refuses_a_classification_adapter(trained):
    tmp, _, adapter = trained
    proc = qlorad("export", "--model", str(tmp / "model"), "--adapter", str(adapter), "--out",
                  str(tmp / "gguf"), "--format", "gguf", "--merge-into", "original", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "adapter_config.json: task_type" in proc.stdout + proc.stderr
    assert "sequence-classification" in proc.stdout + proc.stderr


def test_model_without_pad_or_eos_exports_one_row_batches(tmp_path: Path):
    """make-tiny-model's config names neither pad_token_id nor eos_token_id: the export keeps
    pad_token_id null and says so; transformers then pools the last token of single rows, as
    classify does."""
    qlorad("make-tiny-model", "--out", str(tmp_path / "model"))
    rows = write_examples(tmp_path / "data.jsonl", 6, seed=23)
    train_classifier(tmp_path, "{type: none}", steps=3, batch=2)
    adapter = tmp_path / "run" / "adapter"
    out, lines = export(tmp_path, "merged", adapter, "--dtype", "fp32", "--merge-into", "original")
    assert json.loads((out / "config.json").read_text())["pad_token_id"] is None
    assert any(line.get("level") == "warning" and "one row per batch" in line.get("message", "")
               for line in lines)
    model = load_classifier(out).eval()
    with torch.no_grad():
        got = torch.cat([model(input_ids=torch.tensor([r["input_ids"]])).logits for r in rows])
    want = torch.tensor(classify(tmp_path / "model", adapter, tmp_path / "data.jsonl")["logits"])
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
