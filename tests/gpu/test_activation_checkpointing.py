"""GPU memory of train.activation_checkpointing, on an 8-layer Llama-3.2-1B-shaped model (NF4,
LoRA on every projection, fp32 so the runs compare tightly), under single and under fsdp on one
GPU (whose recompute gathers each layer again in backward).

With checkpointing each decoder layer keeps only its input ([batch, seq, hidden]) until backward
instead of every activation autograd saves inside it (norms, q/k/v, attention, the 8192-wide MLP
products): the peak of a few steps falls. Per-step losses agree with the run without it within
1e-5 relative (the same fp32 math; CUDA's attention backward may sum in another order).

With train.activation_offload those kept inputs wait in host memory (copied on a side stream):
the peak falls again, by about the layers' inputs, and the losses are those of checkpointing
without offload (the same tensors come back).

In bf16, where attention runs cuDNN's (whole rows) or flash attention's (packed rows) kernels,
offload also keeps each layer's attention output and log-sum-exp for the recompute, which then
skips attention's forward (worker/trainer/model/recompute_keep.h). With QLORAD_CHECK_KEPT=1 every
recompute runs that forward anyway and the trainer fails unless the kept tensors hold its bits; and
the first step's loss equals that of the recompute that runs it (QLORAD_KEEP_ATTENTION=0) bit for
bit. Later steps are printed, not compared: bf16 attention backward sums in another order from run
to run, so two runs of the same job differ there already.

Prints the peaks. QLORAD_BIN_DIR names the build's bin directory; skipped without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

# The build's bin directory and the Llama-1B-shaped model writer (bench/parallel); skips the
# module without CUDA.
from test_gpu_memory import BIN_DIR, bench  # noqa: E402

LAYERS, STEPS, SEQ, MICRO = 8, 3, 1024, 2


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("actckpt")
    config = bench.make_model(tmp / "model", bench.LLAMA_1B, "cuda", LAYERS)
    bench.make_data(tmp / "data.jsonl", config["vocab_size"], rows=MICRO * STEPS, seq_len=SEQ)
    return tmp


def train(tmp: Path, strategy: str, checkpointing: bool, offload: bool = False, precision: str = "fp32",
          dropout: float = 0.05, keep_attention: bool | None = None, packing: bool = True,
          keep_mlp: bool = False, tag: str = "") -> list[dict]:
    """keep_attention: None leaves the trainer's choice (logged, not checked); False sets
    QLORAD_KEEP_ATTENTION=0; True asserts the trainer kept them and sets QLORAD_CHECK_KEPT=1."""
    name = f"{strategy}-{'on' if checkpointing else 'off'}{'-offload' if offload else ''}-{precision}{tag}"
    job = tmp / f"{name}.yaml"
    job.write_text(f"""name: {name}
model: {{path: {tmp / 'model'}}}
quantization: {{type: nf4, double_quant: true, block_size: 64}}
lora: {{r: 16, alpha: 16, dropout: {dropout}, target_modules: [{", ".join(bench.PROJECTIONS)}]}}
data: {{path: {tmp / 'data.jsonl'}, format: input_ids, max_seq_len: {SEQ}, packing: {str(packing).lower()}, seed: 0}}
train: {{max_steps: {STEPS}, micro_batch_size: {MICRO}, lr: 1.0e-3, warmup_steps: 0, precision: {precision},
        activation_checkpointing: {str(checkpointing).lower()}, activation_offload: {str(offload).lower()}}}
resources: {{device: cuda}}
parallel: {{strategy: {strategy}}}
checkpoint: {{every_steps: 0, output_dir: {tmp / name}}}
""")
    env = dict(os.environ)
    env.pop("QLORAD_KEEP_ATTENTION", None)
    if keep_attention is False:
        env["QLORAD_KEEP_ATTENTION"] = "0"
    if keep_attention is True:
        env["QLORAD_CHECK_KEPT"] = "1"
    env.pop("QLORAD_KEEP_MLP", None)
    if keep_mlp:
        env["QLORAD_KEEP_MLP"] = "1"
    proc = subprocess.run([BIN_DIR / "qlorad-train", "run", str(job), "--json"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert any(m.startswith(f"activation checkpointing: {'on' if checkpointing else 'off'}") for m in logs)
    if checkpointing:
        assert any(m.startswith(f"activation offload: {'on' if offload else 'off'}") for m in logs), logs
    if keep_attention is not None:
        said = "on (" if keep_attention else "off (QLORAD_KEEP_ATTENTION=0)"
        assert f"attention outputs kept for the recompute: {said}" in "\n".join(logs), logs
    if keep_mlp:
        assert "MLP gate|up kept for backward: on (" in "\n".join(logs), logs
    return [e for e in events if e["event"] == "metrics"]


@pytest.mark.parametrize("strategy", ["single", "fsdp"])
def test_checkpointing_lowers_the_peak_and_trains_the_same(workdir, strategy):
    off, on = train(workdir, strategy, False), train(workdir, strategy, True)
    assert len(off) == len(on) == STEPS
    for step, (a, b) in enumerate(zip(off, on), 1):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"]), f"step {step}: {a['loss']} vs {b['loss']}"
    peak_off = max(m["vram_peak_bytes"] for m in off)
    peak_on = max(m["vram_peak_bytes"] for m in on)
    print(f"{strategy}: peak GPU memory over {STEPS} steps of {MICRO} x {SEQ} tokens, {LAYERS} layers: "
          f"checkpointing off {peak_off / 2**20:.1f} MiB, on {peak_on / 2**20:.1f} MiB")
    assert peak_on < peak_off


@pytest.mark.parametrize("strategy", ["single", "fsdp"])
def test_offload_lowers_the_peak_again_and_trains_the_same(workdir, strategy):
    on, offloaded = train(workdir, strategy, True), train(workdir, strategy, True, offload=True)
    assert len(on) == len(offloaded) == STEPS
    for step, (a, b) in enumerate(zip(on, offloaded), 1):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"]), f"step {step}: {a['loss']} vs {b['loss']}"
    peak_on = max(m["vram_peak_bytes"] for m in on)
    peak_offloaded = max(m["vram_peak_bytes"] for m in offloaded)
    inputs = LAYERS * MICRO * SEQ * bench.LLAMA_1B["hidden_size"] * 4  # fp32
    print(f"{strategy}: checkpointing on {peak_on / 2**20:.1f} MiB, with offload {peak_offloaded / 2**20:.1f} MiB "
          f"(the layers' inputs: {inputs / 2**20:.1f} MiB)")
    # At least half the inputs leave the device (two layers' may be back at once).
    assert peak_offloaded <= peak_on - inputs // 2


@pytest.mark.parametrize("packing", [True, False], ids=["packed-flash", "rows-cudnn"])
def test_kept_attention_outputs_are_the_recomputes_bits(workdir, packing):
    kw = dict(checkpointing=True, offload=True, precision="bf16", dropout=0.0, packing=packing)
    tag = "-packed" if packing else "-rows"
    # QLORAD_CHECK_KEPT=1: the trainer fails unless every kept output and log-sum-exp, in every
    # layer and step, equals what the recompute computes again.
    kept = train(workdir, "single", keep_attention=True, tag=tag, **kw)
    recomputed = train(workdir, "single", keep_attention=False, tag=tag, **kw)
    # QLORAD_KEEP_MLP=1: the MLP's gate|up kept too, and backward reads it instead of its GEMM.
    with_mlp = train(workdir, "single", keep_attention=True, keep_mlp=True, tag=tag + "-mlp", **kw)
    assert len(kept) == len(recomputed) == len(with_mlp) == STEPS
    # The first step's loss comes from the same forward kernels on the same weights.
    assert kept[0]["loss"] == recomputed[0]["loss"] == with_mlp[0]["loss"], \
        (kept[0]["loss"], recomputed[0]["loss"], with_mlp[0]["loss"])
    peak_kept = max(m["vram_peak_bytes"] for m in kept)
    peak_recomputed = max(m["vram_peak_bytes"] for m in recomputed)
    print(f"bf16 offload{tag}: attention outputs kept {peak_kept / 2**20:.1f} MiB, recomputed "
          f"{peak_recomputed / 2**20:.1f} MiB; losses {[m['loss'] for m in kept]} kept, "
          f"{[m['loss'] for m in recomputed]} recomputed, {[m['loss'] for m in with_mlp]} with gate|up kept")
