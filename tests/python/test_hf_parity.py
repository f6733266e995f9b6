"""Parity of qlorad-train with the Hugging Face libraries on tiny random models made here with
transformers (saved with save_pretrained): per-token losses of `qlorad-train eval` against
transformers for Llama (llama3 rope scaling, tied embeddings, head_dim != hidden/heads), Mistral
(sliding window shorter than the sequence) and Qwen2 (q/k/v biases); the same with a PEFT adapter
against transformers + peft; a bitsandbytes 4-bit copy against its dequantized fp32 twin; peft
loading an adapter trained by qlorad-train; transformers loading `qlorad-train export` output.
All fp32 on the CPU: per-token losses within 1e-4 absolute. Needs build/bin/qlorad-train
(QLORAD_BIN_DIR)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

BIN_DIR = Path(os.environ.get("QLORAD_BIN_DIR", "/work/main/build/bin"))
TRAIN = BIN_DIR / "qlorad-train"
ATOL = 1e-4  # fp32 forward of a 2-layer model: HF and we differ only in summation order
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VOCAB = 96
ENV = dict(os.environ, OMP_NUM_THREADS="1")

COMMON = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=256,
              rms_norm_eps=1e-5)
CONFIGS = {
    # Llama 3.1-style: llama3 rope scaling whose original context (16) is shorter than the
    # sequences, so all three frequency bands occur; tied embeddings; head_dim 24 != 64 / 4.
    "llama": lambda: transformers.LlamaConfig(
        **COMMON, head_dim=24, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16}),
    # A window of 8 tokens over sequences of up to 30.
    "mistral": lambda: transformers.MistralConfig(**COMMON, sliding_window=8, rope_theta=10000.0),
    "qwen2": lambda: transformers.Qwen2Config(**COMMON, rope_theta=1000000.0),
}


def make_model(kind: str, out: Path, seed: int = 0, **overrides):
    """A random fp32 model of `kind` saved in HF format; every weight (biases and norms too) drawn
    non-trivially so no term of the graph can be silently dropped. `overrides` set config fields
    (e.g. a larger vocab_size for a real tokenizer)."""
    torch.manual_seed(seed)
    config = CONFIGS[kind]()
    for key, value in overrides.items():
        setattr(config, key, value)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.08)
    model.eval()
    model.save_pretrained(out)
    return model


def write_data(path: Path, seed: int = 0) -> list[dict]:
    """input_ids/labels rows of different lengths, with some prompt tokens masked (-100)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for length in (30, 17, 24, 9):
        ids = torch.randint(0, VOCAB, (length,), generator=g).tolist()
        labels = [-100] * 3 + ids[3:]
        rows.append({"input_ids": ids, "labels": labels})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def reference_losses(model, rows) -> list[list[float]]:
    out = []
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["input_ids"]])
            logits = model(input_ids=ids).logits[0, :-1].float()
            target = torch.tensor(r["labels"][1:])
            loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100,
                                                     reduction="none")
            out.append(loss[target != -100].tolist())
    return out


def qlorad(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not TRAIN.exists():
        pytest.fail(f"{TRAIN} is missing: build qlorad-train or set QLORAD_BIN_DIR")
    proc = subprocess.run([str(TRAIN), *args], capture_output=True, text=True, timeout=300,
                          env=ENV)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def evaluate(model_dir: Path, data: Path, adapter: Path | None = None) -> list[list[float]]:
    args = ["eval", "--model", str(model_dir), "--data", str(data), "--json"]
    if adapter is not None:
        args += ["--adapter", str(adapter)]
    result = json.loads(qlorad(*args).stdout.splitlines()[-1])
    flat = [v for row in result["per_token_loss"] for v in row]
    assert result["mean_loss"] == pytest.approx(sum(flat) / len(flat), rel=1e-12)
    return result["per_token_loss"]


def export_fp32(model_dir: Path, adapter: Path, out: Path, *extra: str):
    """Our merged fp32 export of `adapter` onto `model_dir`, as transformers loads it."""
    qlorad("export", "--model", str(model_dir), "--adapter", str(adapter), "--out", str(out),
           "--dtype", "fp32", "--merge-into", "original", *extra)
    return transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()


def max_abs_diff(ours, theirs) -> float:
    assert [len(r) for r in ours] == [len(r) for r in theirs]
    return max(abs(a - b) for ro, rt in zip(ours, theirs) for a, b in zip(ro, rt))


def report(label: str, diff: float) -> None:
    print(f"{label}: max abs per-token loss diff {diff:.3e}", file=sys.stderr)


def make_peft_adapter(model, out: Path, use_rslora: bool, seed: int = 1) -> None:
    """A PEFT adapter with non-zero B (init_lora_weights=False draws both factors)."""
    torch.manual_seed(seed)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=PROJECTIONS, lora_dropout=0.0,
                             init_lora_weights=False, use_rslora=use_rslora,
                             task_type="CAUSAL_LM")
    peft_model = peft.get_peft_model(model, config)
    peft_model.save_pretrained(out)
    return peft_model


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2"])
def test_base_and_peft_adapter_match_transformers(tmp_path: Path, kind: str):
    model = make_model(kind, tmp_path / "model")
    rows = write_data(tmp_path / "data.jsonl")
    diff = max_abs_diff(evaluate(tmp_path / "model", tmp_path / "data.jsonl"),
                        reference_losses(model, rows))
    report(f"{kind} base", diff)
    assert diff < ATOL
    if kind == "mistral":  # the window (8) is shorter than the rows: it must matter
        config = json.loads((tmp_path / "model" / "config.json").read_text())
        config["sliding_window"] = None
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "config.json").write_text(json.dumps(config))
        (tmp_path / "full" / "model.safetensors").symlink_to(tmp_path / "model" / "model.safetensors")
        full = evaluate(tmp_path / "full", tmp_path / "data.jsonl")
        assert max_abs_diff(full, reference_losses(model, rows)) > 10 * ATOL

    peft_model = make_peft_adapter(model, tmp_path / "adapter", use_rslora=kind == "qwen2")
    peft_model.eval()
    diff = max_abs_diff(evaluate(tmp_path / "model", tmp_path / "data.jsonl", tmp_path / "adapter"),
                        reference_losses(peft_model, rows))
    report(f"{kind} + peft adapter", diff)
    assert diff < ATOL


def test_older_config_layout_reads_the_same(tmp_path: Path):
    """rope_theta + rope_scaling at the top level (transformers 4.x) equals rope_parameters."""
    make_model("llama", tmp_path / "model")
    rows = write_data(tmp_path / "data.jsonl")
    new = evaluate(tmp_path / "model", tmp_path / "data.jsonl")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = rope
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    old = evaluate(tmp_path / "model", tmp_path / "data.jsonl")
    assert old == new
    assert len(old) == len(rows)


def test_bnb_4bit_copy_matches_its_dequantized_twin(tmp_path: Path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_bnb4bit_model import (bnb_functional, make_bnb_copy, make_dequantized_copy,
                                     skip_unless_bnb_is_a_reference)
    F = bnb_functional()
    model = make_model("llama", tmp_path / "model")
    # o_proj and down_proj (64, 96) hold no whole blocks per row, where bnb's shaped CPU kernel is
    # wrong with AVX-512: the guard checks bnb on these very weights.
    skip_unless_bnb_is_a_reference(F, tmp_path / "model")
    rows = write_data(tmp_path / "data.jsonl")
    assert make_bnb_copy(F, tmp_path / "model", tmp_path / "bnb") == 14
    make_dequantized_copy(F, tmp_path / "bnb", tmp_path / "twin")
    twin = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "twin",
                                                             dtype=torch.float32).eval()
    ours_bnb = evaluate(tmp_path / "bnb", tmp_path / "data.jsonl")
    diff = max_abs_diff(ours_bnb, reference_losses(twin, rows))
    report("bnb-4bit vs transformers on its dequantized twin", diff)
    assert diff < ATOL
    # The NF4 rounding itself is far larger than the tolerance: the comparison is not vacuous.
    assert max_abs_diff(ours_bnb, reference_losses(model, rows)) > 10 * ATOL

    # Export with no adapter dequantizes the base: transformers loads it as the twin.
    qlorad("export", "--model", str(tmp_path / "bnb"), "--out", str(tmp_path / "dense"),
           "--dtype", "fp32")
    dense = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dense",
                                                              dtype=torch.float32).eval()
    diff = max_abs_diff(reference_losses(dense, rows), reference_losses(twin, rows))
    report("transformers on our export of the bnb-4bit copy vs its dequantized twin", diff)
    assert diff < ATOL


def train_adapter(tmp: Path, model: Path, steps: int = 4) -> Path:
    spec = tmp / "job.yaml"
    spec.write_text(
        "name: parity\n"
        f"model: {{path: {model}}}\n"
        "quantization: {type: none}\n"
        "lora: {r: 4, alpha: 8, dropout: 0.0, "
        "target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}\n"
        f"data: {{path: {tmp / 'data.jsonl'}, format: input_ids, max_seq_len: 32, "
        "packing: false, shuffle: false, seed: 1}\n"
        f"train: {{max_steps: {steps}, micro_batch_size: 2, grad_accum: 1, lr: 5.0e-2, "
        "scheduler: constant, warmup_steps: 0, precision: fp32, seed: 3}\n"
        "resources: {device: cpu}\n"
        f"checkpoint: {{every_steps: 0, keep: 1, output_dir: {tmp / 'run'}}}\n")
    qlorad("run", str(spec), "--json", "--device", "cpu")
    return tmp / "run" / "adapter"


def test_peft_loads_our_adapter(tmp_path: Path):
    model = make_model("llama", tmp_path / "model")
    rows = write_data(tmp_path / "data.jsonl")
    adapter = train_adapter(tmp_path, tmp_path / "model")
    ours = evaluate(tmp_path / "model", tmp_path / "data.jsonl", adapter)
    assert max_abs_diff(ours, reference_losses(model, rows)) > 10 * ATOL  # training moved it
    peft_model = peft.PeftModel.from_pretrained(model, adapter).eval()
    diff = max_abs_diff(ours, reference_losses(peft_model, rows))
    report("peft loading our adapter", diff)
    assert diff < ATOL


def test_transformers_loads_our_merged_export(tmp_path: Path):
    model = make_model("qwen2", tmp_path / "model")
    rows = write_data(tmp_path / "data.jsonl")
    peft_model = make_peft_adapter(model, tmp_path / "adapter", use_rslora=True).eval()
    reference = reference_losses(peft_model, rows)
    # Small shards force the sharded layout with an index.
    merged = export_fp32(tmp_path / "model", tmp_path / "adapter", tmp_path / "merged",
                         "--max-shard-bytes", "60000")
    assert (tmp_path / "merged" / "model.safetensors.index.json").exists()
    diff = max_abs_diff(reference_losses(merged, rows), reference)
    report("transformers on our merged export vs transformers + peft", diff)
    assert diff < ATOL


def test_export_refuses_a_non_empty_output(tmp_path: Path):
    make_model("qwen2", tmp_path / "model")
    proc = qlorad("export", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "model"),
                  "--json", check=False)
    assert proc.returncode == 2
    assert "--out" in proc.stdout


def test_training_steps_match_transformers_and_peft(tmp_path: Path):
    """30 fp32 LoRA steps from the same PEFT adapter (lora.init_from), one example per step in
    file order, AdamW with a constant lr and no clipping: qlorad-train's per-step losses against
    the same loop in PyTorch on transformers + peft."""
    steps, lr = 30, 1e-3
    model = make_model("qwen2", tmp_path / "model")
    rows = write_data(tmp_path / "data.jsonl")
    peft_model = make_peft_adapter(model, tmp_path / "init", use_rslora=False)
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "name: steps\n"
        f"model: {{path: {tmp_path / 'model'}}}\n"
        "quantization: {type: none}\n"
        f"lora: {{r: 4, alpha: 8, dropout: 0.0, target_modules: {PROJECTIONS}, "
        f"init_from: {tmp_path / 'init'}}}\n"
        f"data: {{path: {tmp_path / 'data.jsonl'}, format: input_ids, max_seq_len: 32, "
        "packing: false, shuffle: false, seed: 1}\n"
        f"train: {{max_steps: {steps}, micro_batch_size: 1, grad_accum: 1, lr: {lr}, "
        "scheduler: constant, warmup_steps: 0, weight_decay: 0.0, max_grad_norm: null, "
        "precision: fp32, seed: 3}\n"
        "resources: {device: cpu}\n"
        f"checkpoint: {{every_steps: 0, keep: 1, output_dir: {tmp_path / 'run'}}}\n")
    proc = qlorad("run", str(spec), "--json", "--device", "cpu")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    ours = [e["loss"] for e in events if e["event"] == "metrics"]
    assert len(ours) == steps

    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    theirs = []
    for step in range(steps):
        r = rows[step % len(rows)]
        logits = peft_model(input_ids=torch.tensor([r["input_ids"]])).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(r["labels"][1:]),
                                                 ignore_index=-100)
        theirs.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    worst = max(abs(a - b) / abs(b) for a, b in zip(ours, theirs))
    print(f"30 training steps: max relative per-step loss diff {worst:.3e}", file=sys.stderr)
    assert worst < 1e-4
    assert abs(ours[-1] - ours[0]) > 100 * 1e-4 * abs(ours[0])  # the adapter did move
