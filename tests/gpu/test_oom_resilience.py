"""A step that runs out of GPU memory, on an 8-layer Llama-3.2-1B-shaped model (NF4, LoRA on every
projection, fp32 so the runs compare tightly, no activation checkpointing so activations grow with
the micro-batch).

QLORAD_CUDA_MEMORY_FRACTION caps the caching allocator (torch.cuda.set_per_process_memory_fraction)
so that the H100 runs out as a small GPU would. Two runs without a cap measure the peaks of
micro-batches of 1 and of MICRO rows; the cap is then set between them:

- retried: a cap 30% of the way from the one-row peak to the MICRO-row peak. The first step runs out
  at MICRO rows, is retried with the micro-batch halved (a `micro_batch_reduced` event, MICRO -> half,
  grad_accum doubled) until it fits, and the job completes with the per-step losses of the one-row
  run (micro-batch 1, grad_accum MICRO: the same global batch) within 1e-5 relative (fp32; the
  gradients are summed in another order).
- fails: a cap that holds the model and its optimizer state but only a fifth of a one-row step's
  activations. The step is halved down to one row and the job fails with a message naming the
  rows' length and what the allocator tried to allocate.

QLORAD_BIN_DIR names the build's bin directory; skipped without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

# The build's bin directory and the Llama-1B-shaped model writer (bench/common); skips the module
# without CUDA.
from test_gpu_memory import BIN_DIR, bench, torch  # noqa: E402

LAYERS, STEPS, SEQ, MICRO = 8, 3, 1024, 8


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("oom")
    config = bench.make_model(tmp / "model", bench.LLAMA_1B, "cuda", LAYERS)
    bench.make_data(tmp / "data.jsonl", config["vocab_size"], rows=MICRO * STEPS, seq_len=SEQ)
    return tmp


def run(tmp: Path, name: str, micro: int, grad_accum: int, fraction: float | None = None):
    """(return code, events) of one qlorad-train run."""
    job = tmp / f"{name}.yaml"
    job.write_text(f"""name: {name}
model: {{path: {tmp / 'model'}}}
quantization: {{type: nf4, double_quant: true, block_size: 64}}
lora: {{r: 16, alpha: 16, dropout: 0.0, target_modules: [{", ".join(bench.PROJECTIONS)}]}}
data: {{path: {tmp / 'data.jsonl'}, format: input_ids, max_seq_len: {SEQ}, packing: true, shuffle: false}}
train: {{max_steps: {STEPS}, micro_batch_size: {micro}, grad_accum: {grad_accum}, lr: 1.0e-3,
        warmup_steps: 0, precision: fp32, activation_checkpointing: false}}
resources: {{device: cuda}}
checkpoint: {{every_steps: 0, output_dir: {tmp / name}}}
""")
    env = dict(os.environ)
    env.pop("QLORAD_CUDA_MEMORY_FRACTION", None)
    if fraction is not None:
        env["QLORAD_CUDA_MEMORY_FRACTION"] = f"{fraction:.6f}"
    proc = subprocess.run([BIN_DIR / "qlorad-train", "run", str(job), "--json"], env=env,
                          capture_output=True, text=True, timeout=600)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events, proc.stderr


def metrics(events) -> list[dict]:
    return [e for e in events if e["event"] == "metrics"]


@pytest.fixture(scope="module")
def uncapped(workdir):
    """The metrics of micro-batches of one row (grad_accum MICRO) and of MICRO rows, without a cap."""
    rc1, one_row, err1 = run(workdir, "one-row", 1, MICRO)
    assert rc1 == 0, err1[-3000:]
    rcm, whole, errm = run(workdir, "whole", MICRO, 1)
    assert rcm == 0, errm[-3000:]
    return metrics(one_row), metrics(whole)


def total_memory() -> int:
    return torch.cuda.get_device_properties(0).total_memory


def test_a_step_out_of_memory_is_retried_with_smaller_micro_batches(workdir, uncapped):
    one_row, whole = uncapped
    peak_one = max(m["vram_peak_bytes"] for m in one_row)
    peak_whole = max(m["vram_peak_bytes"] for m in whole)
    print(f"peak GPU memory: micro-batch 1 x {SEQ}: {peak_one / 2**20:.1f} MiB, "
          f"{MICRO} x {SEQ}: {peak_whole / 2**20:.1f} MiB")
    assert peak_whole > 1.5 * peak_one, "the activations must dominate for the cap to tell them apart"
    cap = peak_one + 0.3 * (peak_whole - peak_one)
    rc, events, err = run(workdir, "capped", MICRO, 1, cap / total_memory())
    assert rc == 0, err[-3000:] + json.dumps(events[-3:])
    reductions = [e for e in events if e["event"] == "micro_batch_reduced"]
    print("reductions:", [(e["step"], e["from_rows"], e["to_rows"]) for e in reductions])
    assert reductions, "the cap should have made the first step run out of memory"
    assert reductions[0]["step"] == 1 and reductions[0]["from_rows"] == MICRO
    assert reductions[0]["to_rows"] == MICRO // 2 and reductions[0]["grad_accum"] == 2
    assert reductions[0]["seq_len"] == SEQ
    assert "Tried to allocate" in reductions[0]["message"], reductions[0]
    for before, after in zip(reductions, reductions[1:]):
        assert after["from_rows"] == before["to_rows"]
    capped = metrics(events)
    assert len(capped) == STEPS
    for step, (got, want) in enumerate(zip(capped, one_row), 1):
        assert abs(got["loss"] - want["loss"]) <= 1e-5 * abs(want["loss"]), (step, got, want)
    assert max(m["vram_peak_bytes"] for m in capped) <= cap


def test_a_step_out_of_memory_at_one_row_fails_naming_the_sequence_length(workdir, uncapped):
    one_row, _ = uncapped
    held = one_row[0]["vram_allocated_bytes"]  # the model, adapters and AdamW's moments
    peak_one = max(m["vram_peak_bytes"] for m in one_row)
    cap = held + 0.2 * (peak_one - held)
    rc, events, err = run(workdir, "too-small", MICRO, 1, cap / total_memory())
    assert rc != 0, "a cap below one row's step must fail the job"
    reductions = [(e["from_rows"], e["to_rows"]) for e in events if e["event"] == "micro_batch_reduced"]
    assert reductions[-1] == (2, 1), reductions
    [error] = [e for e in events if e["event"] == "error"]
    print("error:", error["message"])
    assert f"with micro-batches of 1 row(s) of {SEQ} tokens" in error["message"]
    assert f"data.max_seq_len {SEQ}" in error["message"]
    assert "Tried to allocate" in error["message"]
