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
- The step graph (train/step_graph.h): rows of one length, so that every step from the third on is
  a replay. With lr 1e-30 (the smallest change AdamW makes is then far below any parameter's
  last bit) each step's loss is a forward of the same parameters on its row, so the replays must
  give the eager run's losses bit for bit (a stale input or loss scale would not: the rows
  differ, and so do their counts of masked tokens); their gradient norms (attention's backward
  may accumulate with atomics: equal up to its rounding) show that each replay's gradients reach
  the optimizer. Then 30 steps that train (a stale cast of the adapters would show there),
  against transformers as above. The rows of test_hf_parity's data differ in length: their jobs
  never record (no shape repeats), so the tests above run eagerly.

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


def spec_text(tmp: Path, name: str, precision: str, device: str, packing: bool,
              data: str = "data.jsonl", lr: float = LR, checkpointing: bool = False) -> Path:
    seq = 64 if packing else 32
    spec = tmp / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\n"
        f"model: {{path: {tmp / 'model'}}}\n"
        "quantization: {type: none}\n"
        f"lora: {{r: 4, alpha: 8, dropout: 0.0, target_modules: {PROJECTIONS}, "
        f"init_from: {tmp / 'init'}}}\n"
        f"data: {{path: {tmp / data}, format: input_ids, max_seq_len: {seq}, "
        f"packing: {str(packing).lower()}, shuffle: false, seed: 1}}\n"
        f"train: {{max_steps: {STEPS}, micro_batch_size: 1, grad_accum: 1, lr: {lr}, "
        "scheduler: constant, warmup_steps: 0, weight_decay: 0.0, max_grad_norm: null, "
        f"precision: {precision}, seed: 3, "
        f"activation_checkpointing: {str(checkpointing).lower()}, activation_offload: false}}\n"
        f"resources: {{device: {device}}}\n"
        f"checkpoint: {{every_steps: 0, keep: 1, output_dir: {tmp / ('run-' + name)}}}\n")
    return spec


def our_run(spec: Path, device: str) -> tuple[list[dict], list[str]]:
    """The run's metrics events and log messages."""
    proc = qlorad("run", str(spec), "--json", "--device", device)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    metrics = [e for e in events if e["event"] == "metrics"]
    assert len(metrics) == STEPS
    # Whole rows go to cuDNN's attention by default (model/attention.cc): it must have run, not
    # the fallback to flash attention.
    assert "cuDNN refused" not in proc.stderr, proc.stderr
    return metrics, [e["message"] for e in events if e["event"] == "log"]


def our_losses(spec: Path, device: str) -> list[float]:
    return [m["loss"] for m in our_run(spec, device)[0]]


def write_equal_rows(path: Path, length: int = 30, seed: int = 5) -> list[dict]:
    """Four input_ids/labels rows of one length (distinct tokens), with 3, 5, 7 and 9 prompt
    tokens masked: each step divides its loss by another count (the graph's scale buffer)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for masked in (3, 5, 7, 9):
        ids = torch.randint(0, test_hf_parity.VOCAB, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * masked + ids[masked:]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


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


@pytest.mark.parametrize("checkpointing", [False, True], ids=["ckpt_off", "ckpt_on"])
def test_replayed_steps_compute_what_eager_steps_do(setup, monkeypatch, checkpointing):
    """With checkpointing the recompute is part of the recorded backward."""
    tmp, _, _ = setup
    write_equal_rows(tmp / "equal.jsonl")
    spec = spec_text(tmp, f"graph-frozen-{checkpointing}", "bf16", "cuda", packing=False,
                     data="equal.jsonl", lr=1e-30, checkpointing=checkpointing)
    graphed, logs = our_run(spec, "cuda")
    assert any("CUDA graph: recorded at step 3" in m for m in logs), logs
    assert any(f"CUDA graph: {STEPS - 3 + 1} step(s) replayed" in m for m in logs), logs
    monkeypatch.setitem(test_hf_parity.ENV, "QLORAD_CUDA_GRAPH", "0")
    spec = spec_text(tmp, f"eager-frozen-{checkpointing}", "bf16", "cuda", packing=False,
                     data="equal.jsonl", lr=1e-30, checkpointing=checkpointing)
    eager, logs = our_run(spec, "cuda")
    assert any("CUDA graph: off (QLORAD_CUDA_GRAPH=0)" in m for m in logs), logs
    assert [m["loss"] for m in graphed] == [m["loss"] for m in eager]
    assert len({m["loss"] for m in eager}) == 4  # four rows, four losses: a stale row would show
    norms = [(g["grad_norm"], e["grad_norm"]) for g, e in zip(graphed, eager)]
    print(f"\ngradient norms, replayed vs eager (worst relative difference): "
          f"{max(abs(g - e) / e for g, e in norms):.3e}", file=sys.stderr)
    assert all(abs(g - e) <= 1e-3 * e for g, e in norms), norms


def test_replayed_steps_train_as_transformers_does(setup):
    tmp, _, _ = setup
    rows = write_equal_rows(tmp / "equal.jsonl")
    reference = peft_losses(tmp, rows, torch.float32)
    tolerance = max(2 * worst(peft_losses(tmp, rows, torch.bfloat16), reference), 1e-3)
    metrics, logs = our_run(spec_text(tmp, "graph", "bf16", "cuda", packing=False,
                                      data="equal.jsonl"), "cuda")
    assert any(f"CUDA graph: {STEPS - 3 + 1} step(s) replayed" in m for m in logs), logs
    ours = [m["loss"] for m in metrics]
    print(f"qlorad bf16 (cuda, replayed steps) vs transformers+peft fp32: "
          f"{worst(ours, reference):.3e}", file=sys.stderr)
    assert worst(ours, reference) < tolerance
    assert abs(ours[-1] - ours[0]) > 10 * tolerance * abs(ours[0])  # the adapter did move
