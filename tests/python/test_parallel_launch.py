"""Data-parallel training across real processes (`qlorad-train launch`, Gloo over loopback, CPU):
2 and 4 ranks under ddp and fsdp must train like one rank on the same global batch. One rank takes
grad_accum = 4 micro-batches per step; N ranks take 4 / N each, so every step sees the same rows.
The tiny model is NF4-quantized (fsdp gathers packed blocks), computes in fp32, and clips by the
global gradient norm. Losses agree within fp32 summation-order error (1e-5 relative) over 60 steps,
and so does the final adapter. Needs build/bin/qlorad-train (QLORAD_BIN_DIR)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

safetensors_numpy = pytest.importorskip("safetensors.numpy")
np = pytest.importorskip("numpy")

BIN_DIR = Path(os.environ.get("QLORAD_BIN_DIR", "/work/main/build/bin"))
TRAIN = BIN_DIR / "qlorad-train"
STEPS = 60
GLOBAL_MICRO_BATCHES = 4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("parallel")
    subprocess.run([TRAIN, "make-tiny-model", "--out", root / "model"], check=True,
                   capture_output=True)
    words = ["red", "green", "blue", "cyan", "magenta", "yellow", "black"]
    with open(root / "data.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"text": f"{words[i % 7]} then {words[(i * 3) % 7]} row {i}"}) + "\n")
    return root


def spec(root: Path, name: str, world: int, strategy: str, steps: int = STEPS, every: int = 0,
         timeout_s: float | None = None, precision: str = "fp32", lora_precision: str = "fp32") -> Path:
    path = root / f"{name}.yaml"
    timeout = f", timeout_s: {timeout_s}" if timeout_s else ""
    path.write_text(f"""
name: {name}
model: {{path: {root / 'model'}}}
quantization: {{type: nf4, block_size: 64, double_quant: true}}
lora: {{r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj],
       compute_precision: {lora_precision}}}
data: {{path: {root / 'data.jsonl'}, max_seq_len: 24, packing: true, shuffle: true, seed: 5}}
train: {{max_steps: {steps}, micro_batch_size: 1, grad_accum: {GLOBAL_MICRO_BATCHES // world},
        lr: 1.0e-2, scheduler: cosine, warmup_steps: 5, precision: {precision}, seed: 7, max_grad_norm: 0.5}}
resources: {{device: cpu}}
parallel: {{strategy: {strategy}{timeout}}}
checkpoint: {{every_steps: {every}, keep: 5, output_dir: {root / name}}}
""")
    return path


def command(job: Path, world: int, resume: Path | None = None) -> list:
    cmd = [TRAIN, "run", job] if world == 1 else [TRAIN, "launch", "--nproc", str(world), job]
    return cmd + ["--json"] + (["--resume", resume] if resume else [])


def run(root: Path, name: str, world: int, strategy: str, steps: int = STEPS, every: int = 0,
        resume: Path | None = None, **precisions) -> tuple[list[float], dict, list[dict]]:
    job = spec(root, name, world, strategy, steps, every, **precisions)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(command(job, world, resume), capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "metrics"]
    assert len(losses) == steps - (int(resume.name.split("-")[1]) if resume else 0)
    assert [e["event"] for e in events].count("done") == 1  # rank 0's stream only
    adapter = safetensors_numpy.load_file(root / name / "adapter" / "adapter_model.safetensors")
    return losses, adapter, events


def comm_bytes_per_step(events: list[dict]) -> int:
    """What rank 0 reports it received in collectives per step (its closing 'communication' log)."""
    [message] = [e["message"] for e in events if e["event"] == "log" and e["message"].startswith("communication:")]
    return int(message.split("(")[1].split(" ")[0])


@pytest.fixture(scope="module")
def reference(workdir):
    return run(workdir, "single", 1, "single")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parametrize("world", [2, 4])
def test_ranks_train_like_one(workdir, reference, world, strategy):
    ref_losses, ref_adapter, _ = reference
    losses, adapter, events = run(workdir, f"{strategy}{world}", world, strategy)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert ref_losses[-1] < ref_losses[0] - 0.5  # it learned: the comparison is not vacuous
    assert adapter.keys() == ref_adapter.keys()
    for key, value in ref_adapter.items():
        assert adapter[key].shape == value.shape, key
        np.testing.assert_allclose(adapter[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    if strategy == "ddp":
        # Per step, ddp all-reduces every LoRA gradient once (a ring moves 2 (w-1)/w of the bytes
        # into each rank), plus one fp64 pair: the step's loss and the stop flag.
        def ring(n: int) -> int:
            return n * (world - 1) // world
        lora_bytes = sum(v.nbytes for v in ref_adapter.values())
        assert comm_bytes_per_step(events) == 2 * ring(lora_bytes) + 2 * ring(16)
    else:
        # fsdp also gathers every layer's packed NF4 shards, forward and backward.
        assert comm_bytes_per_step(events) > 2 * sum(v.nbytes for v in ref_adapter.values())


def test_fsdp_gathers_bf16_lora_and_trains_like_one_rank(workdir):
    """lora.compute_precision: bf16 under bf16 training: fsdp gathers the adapters in bf16 (half
    the LoRA bytes of an fp32 gather) and reduces their gradients in fp32; one rank computes the
    same bf16 adapters, so the runs agree within the bf16 tolerance (1e-2 relative)."""
    bf16 = dict(precision="bf16", lora_precision="bf16")
    steps = 20
    ref_losses, _, _ = run(workdir, "single_bf16", 1, "single", steps=steps, **bf16)
    losses, _, events = run(workdir, "fsdp2_bf16", 2, "fsdp", steps=steps, **bf16)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-2)
    assert ref_losses[-1] < ref_losses[0] - 0.5
    _, _, fp32_events = run(workdir, "fsdp2_bf16_fp32lora", 2, "fsdp", steps=steps,
                            precision="bf16", lora_precision="fp32")
    assert comm_bytes_per_step(events) < comm_bytes_per_step(fp32_events)


def test_a_failing_job_fails_the_launch_with_its_message(workdir):
    job = spec(workdir, "broken", 2, "fsdp")
    job.write_text(job.read_text().replace(str(workdir / "data.jsonl"), str(workdir / "missing.jsonl")))
    proc = subprocess.run([TRAIN, "launch", "--nproc", "2", job, "--json"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert "missing.jsonl" in proc.stdout + proc.stderr


# Sharded checkpoints: 24-step runs that checkpoint every 4 steps; a resume from step 4 at another
# world size or strategy must continue exactly as the uninterrupted run did (the optimizer state is
# restored, so the losses agree to fp32 summation order) and end with the same adapter.
RESUME_STEPS = 24
EVERY = 4


@pytest.fixture(scope="module")
def checkpointed(workdir):
    """Uninterrupted runs that write checkpoints, one per (strategy, world), made on first use."""
    made = {}

    def get(strategy: str, world: int):
        name = f"ckpt-{strategy}{world}"
        if name not in made:
            made[name] = run(workdir, name, world, strategy, RESUME_STEPS, EVERY)
        return workdir / name, made[name]
    return get


def assert_continues(resumed, reference, from_step: int):
    losses, adapter, _ = resumed
    ref_losses, ref_adapter, _ = reference
    np.testing.assert_allclose(losses, ref_losses[from_step:], rtol=1e-5)
    assert adapter.keys() == ref_adapter.keys()
    for key, value in ref_adapter.items():
        np.testing.assert_allclose(adapter[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("source, target", [
    (("fsdp", 2), ("single", 1)),
    (("fsdp", 2), ("fsdp", 2)),
    (("fsdp", 2), ("fsdp", 4)),
    (("fsdp", 2), ("ddp", 2)),
    (("ddp", 2), ("fsdp", 2)),
    (("single", 1), ("fsdp", 4)),
], ids=lambda layout: f"{layout[0]}{layout[1]}")
def test_a_checkpoint_resumes_at_any_world_size(workdir, checkpointed, source, target):
    source_dir, reference = checkpointed(*source)
    checkpoints = [e["step"] for e in reference[2] if e["event"] == "checkpoint"]
    assert checkpoints == list(range(EVERY, RESUME_STEPS, EVERY))
    step_dir = source_dir / "checkpoints" / f"step-{EVERY}"
    shards = source[1] if source[0] == "fsdp" else 1
    assert sorted(p.name for p in step_dir.glob("shard-*")) == [
        f"shard-{i:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    name = f"resume-{source[0]}{source[1]}-{target[0]}{target[1]}"
    resumed = run(workdir, name, target[1], target[0], RESUME_STEPS, resume=step_dir)
    assert_continues(resumed, reference, EVERY)


def start_and_signal_rank_1(job: Path, after_step: int,
                            sig: int = signal.SIGKILL) -> tuple[subprocess.CompletedProcess, float]:
    """Launches 2 ranks and sends rank 1 `sig` once it has reported step `after_step`; returns the
    finished launch and the seconds it ran after the signal."""
    proc = subprocess.Popen([TRAIN, "launch", "--nproc", "2", job, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    victim = None
    for line in proc.stderr:  # rank 1's events come prefixed on stderr
        if not line.startswith("[rank 1] {"):
            continue
        event = json.loads(line.split(" ", 2)[2])
        if event["event"] == "started":
            victim = event["pid"]
        if victim and event["event"] == "metrics" and event["step"] >= after_step:
            break
    assert victim is not None
    os.kill(victim, sig)
    signalled = time.monotonic()
    out, rest = proc.communicate(timeout=90)
    return (subprocess.CompletedProcess(proc.args, proc.returncode, out, rest),
            time.monotonic() - signalled)


def test_a_killed_rank_fails_the_whole_launch(workdir):
    """SIGKILL one rank mid-run: its peer's next collective fails (Gloo sees the closed socket), the
    launcher stops what is left and exits non-zero well within the collective timeout."""
    job = spec(workdir, "killed", 2, "fsdp", steps=100000)
    proc, _ = start_and_signal_rank_1(job, after_step=1)
    assert proc.returncode != 0
    assert "rank 1 exited with 137" in proc.stderr


# A stopped rank closes nothing: its peers learn of it only by waiting parallel.timeout_s.
TIMEOUT_S = 5


def test_a_stopped_rank_fails_the_whole_launch_within_the_timeout(workdir):
    """SIGSTOP one rank mid-run: its peer waits in a collective until parallel.timeout_s, then its
    watchdog (or the collective's own timeout) ends it naming the field; the launcher continues the
    stopped rank along with its SIGTERM (SIGKILL would follow after 10 s) and exits non-zero
    instead of waiting forever."""
    job = spec(workdir, "stopped", 2, "fsdp", steps=100000, timeout_s=TIMEOUT_S)
    proc, seconds = start_and_signal_rank_1(job, after_step=1, sig=signal.SIGSTOP)
    assert proc.returncode != 0
    assert "rank 0 exited with" in proc.stderr, proc.stderr[-4000:]
    assert "parallel.timeout_s" in proc.stdout + proc.stderr
    assert seconds < TIMEOUT_S + 30  # generous: a loaded 2-core machine; a hang would be forever


def test_a_rank_that_cannot_resolve_the_rendezvous_host_fails_within_the_timeout(workdir):
    """A rank whose rendezvous host has no address (.invalid never has one) fails once
    parallel.timeout_s has passed, naming the host and the field, with exit code 1: a failure the
    coordinator retries like any other. c10d's store alone would ask the resolver again for its
    whole connect timeout (minutes)."""
    job = spec(workdir, "unresolvable", 2, "fsdp", steps=10, timeout_s=TIMEOUT_S)
    started = time.monotonic()
    proc = subprocess.run([TRAIN, "run", job, "--json", "--device", "cpu", "--rank", "1",
                           "--world-size", "2", "--rendezvous", "no-such-host.invalid:29500"],
                          capture_output=True, text=True, timeout=240)
    seconds = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [e for e in map(json.loads, proc.stdout.splitlines()) if e["event"] == "error"]
    assert len(errors) == 1, proc.stdout
    assert ("rank 1 of 2: cannot resolve the rendezvous host 'no-such-host.invalid' within "
            f"parallel.timeout_s ({TIMEOUT_S} s)") in errors[0]["message"], errors
    assert seconds < TIMEOUT_S + 30  # generous: a loaded 2-core machine; the old wait was 5 min


@pytest.mark.parametrize("sig, first_failure", [
    (signal.SIGKILL, "rank 1 exited with 137"),
    (signal.SIGSTOP, "rank 0 exited with"),  # the stopped rank's peer times out first
], ids=["killed", "stopped"])
def test_a_failed_fsdp_launch_resumes_from_its_last_checkpoint(workdir, checkpointed, sig,
                                                               first_failure):
    """The failed job's rerun with --resume picks the newest complete step-N (a half-written one is a
    hidden temporary directory) and gives the uninterrupted run's remaining losses and adapter."""
    _, reference = checkpointed("fsdp", 2)
    name = f"{signal.Signals(sig).name.lower()}-resume"
    job = spec(workdir, name, 2, "fsdp", RESUME_STEPS, EVERY, timeout_s=TIMEOUT_S)
    proc, _ = start_and_signal_rank_1(job, after_step=EVERY + 1, sig=sig)
    assert proc.returncode != 0
    assert first_failure in proc.stderr, proc.stderr[-4000:]
    saved = [json.loads(line)["step"] for line in proc.stdout.splitlines()
             if json.loads(line)["event"] == "checkpoint"]
    assert saved and saved[-1] < RESUME_STEPS  # killed mid-run, after at least one checkpoint
    rerun = subprocess.run(command(job, 2, workdir / name), capture_output=True,
                           text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-4000:]
    events = [json.loads(line) for line in rerun.stdout.splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "metrics"]
    assert len(losses) == RESUME_STEPS - saved[-1]
    adapter = safetensors_numpy.load_file(workdir / name / "adapter" / "adapter_model.safetensors")
    assert_continues((losses, adapter, events), reference, saved[-1])


def refused_resume(workdir: Path, checkpointed, name: str, world: int, strategy: str,
                   old: str, new: str) -> tuple[Path, str]:
    """Resumes the fsdp2 run's newest checkpoint with `old` replaced by `new` in the spec, which
    must fail; returns that checkpoint's manifest and the output."""
    source_dir, _ = checkpointed("fsdp", 2)
    job = spec(workdir, name, world, strategy, RESUME_STEPS)
    job.write_text(job.read_text().replace(old, new))
    proc = subprocess.run(command(job, world, source_dir), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    manifest = source_dir / "checkpoints" / f"step-{RESUME_STEPS - EVERY}" / "manifest.json"
    return manifest, proc.stdout + proc.stderr


def test_a_checkpoint_of_another_lora_rank_is_refused_naming_the_tensor(workdir, checkpointed):
    manifest, output = refused_resume(workdir, checkpointed, "other-rank", 2, "fsdp", "lora: {r: 4,",
                                      "lora: {r: 8,")
    assert f"{manifest}: model.layers.0.self_attn.q_proj.lora_A has shape [4,64]" in output


def test_a_checkpoint_with_tensors_the_model_lacks_is_refused_naming_one(workdir, checkpointed):
    manifest, output = refused_resume(workdir, checkpointed, "fewer-targets", 1, "single",
                                      ", gate_proj, up_proj, down_proj]", "]")
    assert f"{manifest}: LoRA tensor model.layers.0.mlp.down_proj.lora_A is not in the model" in output
