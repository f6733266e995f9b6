"""train.activation_checkpointing across real processes (`qlorad-train launch`, Gloo over
loopback, CPU, fp32): two fsdp ranks (reshard_after_forward true and false) and two ddp ranks
train the same with checkpointing on as off, with LoRA dropout on (the recompute must draw the forward's
masks). The recompute runs the same fp32 kernels on the same inputs, so per-step losses and
gradient norms agree within fp32 rounding (1e-5 relative, as the rank-count comparisons in
test_parallel_launch.py). The gradient norm is compared too because AdamW is nearly blind to a
gradient's scale: a LoRA gradient reduce-scattered twice would leave the losses close but double
the norm. And checkpointing costs fsdp exactly one more LoRA all-gather per layer and micro-batch
(the recompute's, whose backward reduce-scatters) and no frozen bytes: a recompute that gathered
the base weights again, or prefetched the wrong way, would show in the bytes received.
Needs build/bin/qlorad-train (QLORAD_BIN_DIR)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

safetensors_numpy = pytest.importorskip("safetensors.numpy")
np = pytest.importorskip("numpy")

# The tiny model and its data set, as the rank-count tests use them.
from test_parallel_launch import TRAIN, workdir  # noqa: E402,F401  (workdir: a fixture)

STEPS = 8
GRAD_ACCUM = 2


def run(root: Path, name: str, world: int, checkpointing: bool, strategy: str = "fsdp",
        reshard: bool = True, offload: str = "auto"):
    job = root / f"{name}.yaml"
    job.write_text(f"""
name: {name}
model: {{path: {root / 'model'}}}
quantization: {{type: nf4, block_size: 64, double_quant: true}}
lora: {{r: 4, alpha: 8, dropout: 0.1, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj],
       compute_precision: fp32}}
data: {{path: {root / 'data.jsonl'}, max_seq_len: 24, packing: true, shuffle: true, seed: 3}}
train: {{max_steps: {STEPS}, micro_batch_size: 1, grad_accum: {GRAD_ACCUM}, lr: 1.0e-2, warmup_steps: 2,
        precision: fp32, seed: 9, max_grad_norm: 0.5,
        activation_checkpointing: {'true' if checkpointing else 'false'}, activation_offload: {offload}}}
resources: {{device: cpu}}
parallel: {{strategy: {strategy if world > 1 else 'single'}, reshard_after_forward: {'true' if reshard else 'false'}}}
checkpoint: {{every_steps: 0, output_dir: {root / name}}}
""")
    cmd = [TRAIN, "run", job] if world == 1 else [TRAIN, "launch", "--nproc", str(world), job]
    proc = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    metrics = [e for e in events if e["event"] == "metrics"]
    assert len(metrics) == STEPS
    logs = [e["message"] for e in events if e["event"] == "log"]
    adapter = safetensors_numpy.load_file(root / name / "adapter" / "adapter_model.safetensors")
    return metrics, logs, adapter


def comm_bytes_per_step(logs: list[str]) -> int:
    """What rank 0 reports it received in collectives per step (its closing 'communication' log)."""
    [message] = [m for m in logs if m.startswith("communication:")]
    return int(message.split("(")[1].split(" ")[0])


@pytest.mark.parametrize("strategy, reshard", [("fsdp", True), ("fsdp", False), ("ddp", True)])
def test_two_ranks_train_the_same_with_checkpointing(workdir, strategy, reshard):
    name = f"{strategy}-{reshard}".lower()
    off, off_logs, off_adapter = run(workdir, f"off-{name}", 2, False, strategy, reshard)
    on, on_logs, on_adapter = run(workdir, f"on-{name}", 2, True, strategy, reshard)
    assert any(m.startswith("activation checkpointing: on") for m in on_logs)
    assert any(m.startswith("activation checkpointing: off") for m in off_logs)
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose([m[key] for m in on], [m[key] for m in off], rtol=1e-5,
                                   err_msg=key)
    assert off[-1]["loss"] < off[0]["loss"] - 0.3  # it learned: the comparison is not vacuous
    assert on_adapter.keys() == off_adapter.keys()
    for key, value in off_adapter.items():
        np.testing.assert_allclose(on_adapter[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    # fsdp: each of a rank's micro-batches gathers every layer's LoRA once more, and an all-gather
    # brings a rank the other half of the bytes (no row padding: every LoRA dimension here splits
    # evenly). ddp all-reduces the gradients after the last backward, as without checkpointing.
    lora_bytes = sum(v.nbytes for v in off_adapter.values())
    extra = GRAD_ACCUM * lora_bytes // 2 if strategy == "fsdp" else 0
    assert comm_bytes_per_step(on_logs) - comm_bytes_per_step(off_logs) == extra


def test_one_rank_reports_checkpointing_and_trains_the_same(workdir):
    """The spec's default is on; a single rank (no parallel code) trains as without it."""
    off, _, _ = run(workdir, "single_off", 1, False)
    on, logs, _ = run(workdir, "single_on", 1, True)
    assert "activation checkpointing: on (train.activation_checkpointing); each decoder layer " \
           "keeps its input only and runs again in backward" in logs
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose([m[key] for m in on], [m[key] for m in off], rtol=1e-5,
                                   err_msg=key)


def test_offload_trains_as_checkpointing_does_and_says_so(workdir):
    """train.activation_offload: true through the real trainer on two Gloo ranks (on the CPU its
    "host" copies are plain copies): the same steps as checkpointing without it, and the log says
    which; auto on a CPU stays off."""
    on, on_logs, on_adapter = run(workdir, "offload-auto", 2, True)
    offloaded, logs, adapter = run(workdir, "offload-true", 2, True, offload="true")
    assert "activation offload: off (auto: on a CPU)" in on_logs
    assert "activation offload: on (train.activation_offload); the kept inputs wait in host memory" in logs
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose([m[key] for m in offloaded], [m[key] for m in on], rtol=1e-5,
                                   err_msg=key)
    for key, value in on_adapter.items():
        np.testing.assert_allclose(adapter[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
