"""Training steps on CUDA through the trainer's fast paths (fused q|k|v and gate|up projections
with the LoRA scale inside the GEMMs, the RMSNorm/rotary/SwiGLU kernels, cuDNN's fused attention
(and flash attention with QLORAD_ATTENTION=flash) for whole rows, and variable-length flash
attention for packed rows), against references, on the tiny random Llama of
tests/python/test_hf_parity.py (GQA, llama3 rope scaling, head_dim 24):

- bf16, one document per row: 30 steps of qlorad-train against the same loop in PyTorch on
  transformers + peft in fp32 on the same GPU, within twice (and at least 1e-3 above) what that
  loop itself deviates when run in bf16: the reference's own bf16 error sets the tolerance.
- bf16, packed rows (several documents per row): qlorad-train on CUDA against qlorad-train's fp32
  CPU run of the same job (dense block-diagonal mask there; the CPU path is checked against
  transformers by test_hf_parity.py), within the same tolerance.

QLORAD_BIN_DIR names the build's bin directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import test_hf_parity  # noqa: E402
from test_hf_parity import PROJECTIONS, make_model, make_peft_adapter, qlorad, write_data  # noqa: E402

STEPS, LR = 30, 1e-3


def spec_text(tmp: Path, name: str, precision: str, device: str, packing: bool) -> Path:
    seq = 64 if packing else 32
    spec = tmp / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\n"
        f"model: {{path: {tmp / 'model'}}}\n"
        "quantization: {type: none}\n"
        f"lora: {{r: 4, alpha: 8, dropout: 0.0, target_modules: {PROJECTIONS}, "
        f"init_from: {tmp / 'init'}}}\n"
        f"data: {{path: {tmp / 'data.jsonl'}, format: input_ids, max_seq_len: {seq}, "
        f"packing: {str(packing).lower()}, shuffle: false, seed: 1}}\n"
        f"train: {{max_steps: {STEPS}, micro_batch_size: 1, grad_accum: 1, lr: {LR}, "
        "scheduler: constant, warmup_steps: 0, weight_decay: 0.0, max_grad_norm: null, "
        f"precision: {precision}, seed: 3, activation_checkpointing: false}}\n"
        f"resources: {{device: {device}}}\n"
        f"checkpoint: {{every_steps: 0, keep: 1, output_dir: {tmp / ('run-' + name)}}}\n")
    return spec


def our_losses(spec: Path, device: str) -> list[float]:
    proc = qlorad("run", str(spec), "--json", "--device", device)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    losses = [e["loss"] for e in events if e["event"] == "metrics"]
    assert len(losses) == STEPS
    # Whole rows go to cuDNN's attention by default (model/attention.cc): it must have run, not
    # the fallback to flash attention.
    assert "cuDNN refused" not in proc.stderr, proc.stderr
    return losses


def peft_losses(tmp: Path, rows: list[dict], dtype) -> list[float]:
    """The loop of test_hf_parity.py's training test, on CUDA. bf16 as the trainer runs it: frozen
    weights stored in bf16, the adapter's parameters and optimizer in fp32, matmuls under bf16
    autocast."""
    import peft
    model = make_model("llama", tmp / "hf-model")
    peft_model = peft.PeftModel.from_pretrained(model, tmp / "init", is_trainable=True).to("cuda")
    with torch.no_grad():
        for p in peft_model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(dtype)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    losses = []
    for step in range(STEPS):
        r = rows[step % len(rows)]
        ids = torch.tensor([r["input_ids"]], device="cuda")
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            logits = peft_model(input_ids=ids).logits[0, :-1].float()
        loss = torch.nn.functional.cross_entropy(
            logits, torch.tensor(r["labels"][1:], device="cuda"), ignore_index=-100)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses


def worst(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train_cuda")
    model = make_model("llama", tmp / "model")
    make_peft_adapter(model, tmp / "init", use_rslora=False)
    rows = write_data(tmp / "data.jsonl")
    fp32 = peft_losses(tmp, rows, torch.float32)
    bf16 = peft_losses(tmp, rows, torch.bfloat16)
    tolerance = max(2 * worst(bf16, fp32), 1e-3)
    print(f"\ntransformers+peft bf16 vs fp32 on CUDA: {worst(bf16, fp32):.3e} "
          f"-> tolerance {tolerance:.3e}", file=sys.stderr)
    return tmp, fp32, tolerance


def test_bf16_steps_on_cuda_match_transformers_fp32(setup):
    tmp, reference, tolerance = setup
    ours = our_losses(spec_text(tmp, "bf16", "bf16", "cuda", packing=False), "cuda")
    print(f"qlorad bf16 (cuda) vs transformers+peft fp32: {worst(ours, reference):.3e}",
          file=sys.stderr)
    assert worst(ours, reference) < tolerance
    assert abs(ours[-1] - ours[0]) > 10 * tolerance * abs(ours[0])  # the adapter did move


def test_bf16_steps_with_flash_attention_match_transformers_fp32(setup, monkeypatch):
    tmp, reference, tolerance = setup
    monkeypatch.setitem(test_hf_parity.ENV, "QLORAD_ATTENTION", "flash")
    ours = our_losses(spec_text(tmp, "bf16-flash", "bf16", "cuda", packing=False), "cuda")
    print(f"qlorad bf16 (cuda, flash attention) vs transformers+peft fp32: "
          f"{worst(ours, reference):.3e}", file=sys.stderr)
    assert worst(ours, reference) < tolerance


def test_bf16_steps_with_pipelined_steps_match_transformers_fp32(setup, monkeypatch):
    """The host queues step n+1 before reading step n (QLORAD_PIPELINE_STEPS=1, trainer.cc)."""
    tmp, reference, tolerance = setup
    monkeypatch.setitem(test_hf_parity.ENV, "QLORAD_PIPELINE_STEPS", "1")
    ours = our_losses(spec_text(tmp, "bf16-pipelined", "bf16", "cuda", packing=False), "cuda")
    print(f"qlorad bf16 (cuda, pipelined steps) vs transformers+peft fp32: {worst(ours, reference):.3e}",
          file=sys.stderr)
    assert worst(ours, reference) < tolerance


def test_packed_bf16_steps_on_cuda_match_the_fp32_cpu_run(setup):
    tmp, _, tolerance = setup
    cpu = our_losses(spec_text(tmp, "packed-cpu", "fp32", "cpu", packing=True), "cpu")
    cuda = our_losses(spec_text(tmp, "packed-cuda", "bf16", "cuda", packing=True), "cuda")
    print(f"qlorad packed bf16 (cuda) vs fp32 (cpu): {worst(cuda, cpu):.3e}", file=sys.stderr)
    assert worst(cuda, cpu) < tolerance
