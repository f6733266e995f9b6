"""The memory estimate (common/memory_estimate.h) against the measured peak, on CUDA.

For each shape, `qlorad-train estimate JOB --json` predicts the peak of allocated bytes (torch's
max_memory_allocated), then `qlorad-train run JOB` trains a few steps and reports it
(vram_peak_bytes); the two must agree within 10%. Shapes: random-weight Llama-3.2-1B- and
Llama-3.1-8B-shaped models with fewer layers (every term of the estimate is per layer or per
model, so fewer layers keep the runs short and the disk small without leaving a term out) from
2K to 128K tokens, with activation checkpointing off, on, and on with offload; and the tiny demo
model at long contexts, where the activations are nearly everything. NF4 with double
quantization, LoRA r=16 on all seven projections, bf16, AdamW, as bench/e2e.

Prints a table: shape, tokens, options, estimated and measured GiB, ratio. QLORAD_BIN_DIR names
the build's bin directory; skipped without CUDA. Writes models of up to 3.5 GiB into pytest's
temporary directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

# The build's bin directory and the random Llama writer (bench/common); skips without CUDA.
from test_gpu_memory import BIN_DIR, bench  # noqa: E402

STEPS = 3
GIB = 2**30
TOLERANCE = 0.10
RESULTS: list[str] = []

# (model, layers, micro_batch_size, seq_len, checkpointing, offload)
CASES = [
    ("1b", 4, 4, 2048, "off", "off"),
    ("1b", 4, 4, 2048, "on", "off"),
    ("1b", 4, 4, 2048, "on", "on"),
    ("1b", 4, 1, 32768, "on", "off"),
    ("1b", 4, 1, 131072, "on", "on"),
    ("8b", 4, 1, 2048, "off", "off"),
    ("8b", 4, 1, 2048, "on", "off"),
    ("8b", 4, 1, 32768, "on", "off"),
    ("8b", 4, 1, 65536, "on", "on"),
    ("8b", 4, 1, 131072, "on", "on"),
    ("tiny", None, 1, 65536, "on", "off"),
    ("tiny", None, 1, 262144, "on", "off"),
    ("tiny", None, 4, 16384, "off", "off"),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("estimate")
    made = {}
    for name, config in (("1b", bench.LLAMA_1B), ("8b", bench.LLAMA_8B)):
        made[name] = tmp / name
        bench.make_model(made[name], config, "cuda", layers=4)
    made["tiny"] = tmp / "tiny"
    subprocess.run([BIN_DIR / "qlorad-train", "make-tiny-model", "--out", str(made["tiny"])], check=True,
                   capture_output=True)
    return made


# The spec's words for the table's on and off.
SPEC_CHOICE = {"on": "true", "off": "false"}


def write_job(tmp: Path, model: Path, micro: int, seq: int, checkpointing: str, offload: str) -> Path:
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    name = f"{model.name}-{micro}x{seq}-ckpt-{checkpointing}-offload-{offload}"
    data = tmp / f"{name}.jsonl"
    bench.make_data(data, vocab, rows=micro * STEPS, seq_len=seq)
    job = tmp / f"{name}.yaml"
    job.write_text(f"""name: {name}
model: {{path: {model}}}
quantization: {{type: nf4, double_quant: true, block_size: 64}}
lora: {{r: 16, alpha: 16, target_modules: [{", ".join(bench.PROJECTIONS)}]}}
data: {{path: {data}, format: input_ids, max_seq_len: {seq}, packing: true, shuffle: false}}
train: {{max_steps: {STEPS}, micro_batch_size: {micro}, lr: 2.0e-4, warmup_steps: 0, precision: bf16,
        activation_checkpointing: {SPEC_CHOICE[checkpointing]}, activation_offload: {SPEC_CHOICE[offload]}}}
resources: {{device: cuda, ignore_memory_estimate: true}}
checkpoint: {{every_steps: 0, output_dir: {tmp / name}}}
""")
    return job


@pytest.mark.parametrize("shape,layers,micro,seq,checkpointing,offload", CASES)
def test_estimate_is_within_ten_percent_of_the_measured_peak(models, tmp_path, shape, layers, micro, seq,
                                                            checkpointing, offload):
    job = write_job(tmp_path, models[shape], micro, seq, checkpointing, offload)
    estimate = subprocess.run([BIN_DIR / "qlorad-train", "estimate", str(job), "--json"], capture_output=True,
                              text=True, timeout=120)
    assert estimate.returncode == 0, estimate.stderr
    predicted = json.loads(estimate.stdout)
    assert predicted["activation_checkpointing"] == (checkpointing == "on")
    assert predicted["activation_offload"] == (offload == "on")
    run = subprocess.run([BIN_DIR / "qlorad-train", "run", str(job), "--json"], capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    metrics = [e for e in map(json.loads, run.stdout.splitlines()) if e["event"] == "metrics"]
    assert len(metrics) == STEPS
    measured = max(m["vram_peak_bytes"] for m in metrics)
    ratio = predicted["peak_bytes"] / measured
    terms = ", ".join(f"{k} {v / GIB:.2f}" for k, v in predicted["terms"].items())
    line = (f"{shape:>4} {layers or '-':>2} layers {micro} x {seq:>6} ckpt {checkpointing:>3} offload {offload:>3}: "
            f"estimate {predicted['peak_bytes'] / GIB:7.2f} GiB, measured {measured / GIB:7.2f} GiB, "
            f"ratio {ratio:.3f} ({predicted['phase']}: {terms})")
    RESULTS.append(line)
    print("\npeak " + line)
    assert abs(ratio - 1) <= TOLERANCE, line


def test_print_the_table():
    print("\npeak table:\n" + "\n".join(RESULTS))
