"""The memory estimate from the trainer's side, on the CPU with the tiny model: `qlorad-train
estimate` (text and --json), and the refusal of a job that does not fit, through the test hook
QLORAD_TEST_FREE_MEMORY_BYTES (any device reports that many bytes free). The refusal names the
largest context that fits, which must be the one `estimate` computes for the same free memory,
and resources.ignore_memory_estimate turns it into a warning. Needs build/bin/qlorad-train
(QLORAD_BIN_DIR)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_parallel_launch import TRAIN  # noqa: E402
from test_parallel_launch import workdir  # noqa: E402, F401  (fixture: tiny model + data)

MIB = 2**20


def spec(root: Path, name: str, seq: int, extra_resources: str = "", checkpointing: str = "false",
         offload: str = "false", precision: str = "fp32") -> Path:
    path = root / f"{name}.yaml"
    path.write_text(f"""
name: {name}
model: {{path: {root / 'model'}}}
lora: {{r: 4, alpha: 8}}
data: {{path: {root / 'data.jsonl'}, max_seq_len: {seq}}}
train: {{max_steps: 1, micro_batch_size: 2, precision: {precision}, activation_checkpointing: {checkpointing},
        activation_offload: {offload}}}
resources: {{device: cpu{extra_resources}}}
checkpoint: {{every_steps: 0, output_dir: {root / name}}}
""")
    return path


def estimate(job: Path, *args: str, keep_mlp: str | None = None) -> subprocess.CompletedProcess:
    """`qlorad-train estimate`; keep_mlp: QLORAD_KEEP_MLP for the call (unset by default)."""
    env = {k: v for k, v in os.environ.items() if k != "QLORAD_KEEP_MLP"}
    if keep_mlp is not None:
        env["QLORAD_KEEP_MLP"] = keep_mlp
    proc = subprocess.run([TRAIN, "estimate", job, *args], capture_output=True, text=True, timeout=60,
                          env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def run(job: Path, free_bytes: int) -> tuple[int, list[dict]]:
    proc = subprocess.run([TRAIN, "run", job, "--json"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", QLORAD_TEST_FREE_MEMORY_BYTES=str(free_bytes)))
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def test_estimate_prints_the_terms_and_their_sum(workdir):
    job = spec(workdir, "est", 65536)
    out = json.loads(estimate(job, "--json").stdout)
    assert out["peak_bytes"] == sum(out["terms"].values())
    assert out["device_bytes_needed"] > out["peak_bytes"]
    assert out["lora_parameters"] > 0 and out["seq_len"] == 65536 and out["micro_batch_size"] == 2
    assert out["activation_checkpointing"] is False
    assert out["activation_checkpointing_why"] == "train.activation_checkpointing"
    # No device to decide against (no --free-gib, no GPU here): no verdict.
    assert out["free_bytes"] is None and out["fits"] is None and out["largest_seq_len"] is None

    text = estimate(job).stdout
    for row in ("frozen weights", "LoRA and AdamW state", "kept activations", "one layer's backward",
                "peak (allocated)", "GPU memory needed"):
        assert row in text, text

    # Against a device too small for 65536 tokens: a verdict, the longest context, what would fit
    # (with two layers, recompute saves about a quarter).
    small = json.loads(estimate(job, "--json", "--free-gib", str(out["peak_bytes"] * 0.85 / 2**30)).stdout)
    assert small["fits"] is False
    assert 0 < small["largest_seq_len"] < 65536 and small["largest_seq_len"] % 1024 == 0
    assert any(c.startswith("train.activation_checkpointing: true (about ") for c in small["changes_that_fit"])


def test_estimate_judges_offloads_inputs_against_the_host(workdir):
    job = spec(workdir, "offload", 65536, checkpointing="true", offload="true")
    config = json.loads((workdir / "model" / "config.json").read_text())
    layers, hidden = config["num_hidden_layers"], config["hidden_size"]
    # fp32 inputs of 2 x 65536 tokens per layer, plus the 1 MiB per layer the pieces may round up.
    pinned = layers * (2 * 65536 * hidden * 4 + MIB)
    roomy = json.loads(estimate(job, "--json", "--host-gib", "64").stdout)
    assert roomy["activation_offload"] is True and roomy["offload_host_bytes"] == pinned
    assert roomy["host_available_bytes"] == 64 * 2**30 and roomy["host_fits"] is True
    assert roomy["largest_offload_seq_len"] >= 65536

    tight_gib = pinned / 2 / 2**30
    tight = json.loads(estimate(job, "--json", "--host-gib", repr(tight_gib)).stdout)
    assert tight["host_fits"] is False
    longest = tight["largest_offload_seq_len"]
    assert 0 < longest < 65536 and longest % 1024 == 0
    usable = int(tight_gib * 2**30) // 10 * 9
    assert layers * (2 * longest * hidden * 4 + MIB) <= usable < layers * (2 * (longest + 1024) * hidden * 4 + MIB)
    text = estimate(job, "--host-gib", repr(tight_gib)).stdout
    assert "host memory (offload)" in text and "offload's inputs do not fit" in text, text
    assert f"the longest data.max_seq_len whose inputs fit: {longest}" in text, text

    # Without offload there is nothing to pin, and no host verdict.
    off = json.loads(estimate(spec(workdir, "no-offload", 65536), "--json", "--host-gib", "1").stdout)
    assert off["offload_host_bytes"] == 0 and off["host_fits"] is None


def test_estimate_says_whether_attention_outputs_are_kept_and_pins_them_too(workdir):
    """In bf16 on a GPU (--free-gib) with offload, each layer's attention output and log-sum-exp
    wait on the host beside its input when the host has room; in fp32 (PyTorch's SDPA), without a
    device, or on a host with room for the inputs only, they are not kept."""
    config = json.loads((workdir / "model" / "config.json").read_text())
    layers, hidden, heads = config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim", hidden // heads)
    tokens = 2 * 65536
    inputs = layers * (tokens * hidden * 2 + MIB)
    kept_too = inputs + layers * (tokens * heads * (head_dim * 2 + 4) + 2 * MIB)
    job = spec(workdir, "keep", 65536, checkpointing="true", offload="true", precision="bf16")
    # QLORAD_KEEP_MLP=0: the attention outputs alone.
    on = json.loads(estimate(job, "--json", "--free-gib", "70", "--host-gib", "64", keep_mlp="0").stdout)
    assert on["keep_attention"] is True, on["keep_attention_why"]
    assert on["offload_host_bytes"] == kept_too and on["host_fits"] is True
    text = estimate(job, "--free-gib", "70", "--host-gib", "64", keep_mlp="0").stdout
    assert "attention outputs kept for the recompute on (offload pins" in text, text
    assert "every layer's input, attention output" in text, text
    assert on["keep_mlp"] is False and on["keep_mlp_why"] == "QLORAD_KEEP_MLP=0"
    # By default, at this context (at least 32K), the MLP's gate|up waits on the host too
    # ([tokens, 2 x intermediate] a layer).
    mlp = json.loads(estimate(job, "--json", "--free-gib", "70", "--host-gib", "64").stdout)
    assert mlp["keep_mlp"] is True, mlp["keep_mlp_why"]
    intermediate = config["intermediate_size"]
    assert mlp["offload_host_bytes"] == kept_too + layers * (tokens * 2 * intermediate * 2 + MIB)
    assert mlp["peak_bytes"] > on["peak_bytes"]
    # Under 32K the layer's attention is too short to hide the gate|up's copies.
    short = spec(workdir, "keep-short", 16384, checkpointing="true", offload="true", precision="bf16")
    short_json = json.loads(estimate(short, "--json", "--free-gib", "70", "--host-gib", "64").stdout)
    assert short_json["keep_mlp"] is False and "is under 32768" in short_json["keep_mlp_why"]

    room_for_inputs = repr((inputs + kept_too) / 2 / 0.9 / 2**30)
    tight = json.loads(estimate(job, "--json", "--free-gib", "70", "--host-gib", room_for_inputs,
                                keep_mlp="0").stdout)
    assert tight["keep_attention"] is False and tight["offload_host_bytes"] == inputs
    assert tight["host_fits"] is True and "of host memory" in tight["keep_attention_why"]

    no_device = json.loads(estimate(job, "--json", "--host-gib", "64").stdout)
    assert no_device["keep_attention"] is False and no_device["keep_attention_why"] == "on a CPU"
    fp32 = spec(workdir, "keep-fp32", 65536, checkpointing="true", offload="true")
    off = json.loads(estimate(fp32, "--json", "--free-gib", "70", "--host-gib", "64").stdout)
    assert off["keep_attention"] is False and "SDPA" in off["keep_attention_why"]


def refusal(events: list[dict]) -> dict:
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1, events
    return errors[0]


def test_a_job_that_does_not_fit_is_refused_naming_the_largest_context_that_does(workdir):
    # Free memory for 4096 tokens with these options; the job asks for 65536.
    fits_4096 = json.loads(estimate(spec(workdir, "fits", 4096), "--json").stdout)["peak_bytes"]
    free = -(-fits_4096 * 10 // 9 // MIB) * MIB + MIB  # whole MiB: exact as --free-gib below
    job = spec(workdir, "long", 65536)
    rc, events = run(job, free)
    assert rc == 2, events
    error = refusal(events)
    assert error["field"] == "data.max_seq_len", error
    same = json.loads(estimate(job, "--json", "--free-gib", repr(free / 2**30)).stdout)
    assert same["largest_seq_len"] >= 4096
    message = error["message"]
    assert message.startswith("data.max_seq_len: the memory estimate of this job is "), message
    assert (f"The largest data.max_seq_len that fits with these options (activation checkpointing off, "
            f"micro_batch_size 2) is {same['largest_seq_len']}.") in message, message
    for change in same["changes_that_fit"]:
        assert change in message, (change, message)
    assert "resources.ignore_memory_estimate: true runs the job anyway" in message
    assert not [e for e in events if e["event"] == "metrics"]  # refused before any step


def test_ignore_memory_estimate_runs_the_job_anyway(workdir):
    # 1 MiB free: not even 1024 tokens fit, which is the model's fault, not the context's.
    rc, events = run(spec(workdir, "nofit", 256), MIB)
    assert rc == 2
    assert refusal(events)["field"] == "model.path"
    rc, events = run(spec(workdir, "ignored", 256, ", ignore_memory_estimate: true"), MIB)
    assert rc == 0, events
    warnings = [e["message"] for e in events if e["event"] == "log" and e.get("level") == "warning"]
    assert any(m.startswith("running anyway (resources.ignore_memory_estimate): the memory estimate")
               for m in warnings), warnings
    assert [e for e in events if e["event"] == "metrics"]


@pytest.mark.parametrize("value", ["yes please", "3"])
def test_ignore_memory_estimate_must_be_a_boolean(workdir, value):
    rc, events = run(spec(workdir, "bad", 256, f", ignore_memory_estimate: {value}"), MIB)
    assert rc == 2
    assert refusal(events)["field"] == "resources.ignore_memory_estimate"
