"""Pipelined steps (trainer.cc, QLORAD_PIPELINE_STEPS=1: the host queues step n + 1 before it reads
step n's loss; meant for a GPU), run on the CPU against the same job read step by step (=0): the
same losses and gradient norms bit for bit, the same checkpoints (a checkpoint or an evaluation is
a point where the next step waits to be queued), the same adapter; and a SIGTERM while the next
step is already queued ends at a checkpoint of a step that was read and reported, from which a
resumed run finishes as the uninterrupted one did. Needs build/bin/qlorad-train (QLORAD_BIN_DIR)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_during_training import (TRAIN, evals, metrics, parallel_workdir, spec,  # noqa: E402,F401
                                       workdir)  # noqa: F401  (the fixtures)


def run(job: Path, pipelined: bool, *extra: str) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", QLORAD_PIPELINE_STEPS="1" if pipelined else "0")
    proc = subprocess.run([TRAIN, "run", job, "--json", *extra], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def checkpoints(events: list[dict]) -> list[int]:
    return [e["step"] for e in events if e["event"] == "checkpoint"]


def adapter_bytes(events: list[dict]) -> bytes:
    done = next(e for e in events if e["event"] == "done")
    return (Path(done["adapter_path"]) / "adapter_model.safetensors").read_bytes()


def test_pipelined_steps_train_exactly_as_steps_read_one_by_one(workdir):
    evaluation = ", eval_steps: 4"
    kwargs = dict(steps=10, validation=str(workdir / "val.jsonl"), evaluation=evaluation, every=3, keep=10)
    plain = run(spec(workdir, "plain", **kwargs), pipelined=False)
    piped = run(spec(workdir, "piped", **kwargs), pipelined=True)
    assert [m["step"] for m in metrics(piped)] == list(range(1, 11))
    for key in ("loss", "grad_norm", "lr"):
        assert [m[key] for m in metrics(piped)] == [m[key] for m in metrics(plain)], key
    assert evals(piped) == evals(plain) and sorted(evals(piped)) == [4, 8, 10]
    assert checkpoints(piped) == checkpoints(plain) == [3, 6, 9]
    assert adapter_bytes(piped) == adapter_bytes(plain)


def test_a_stop_while_the_next_step_is_queued_checkpoints_a_step_that_was_read(workdir):
    whole = run(spec(workdir, "whole", steps=12), pipelined=True)

    job = spec(workdir, "stopped", steps=12)
    env = dict(os.environ, OMP_NUM_THREADS="1", QLORAD_PIPELINE_STEPS="1")
    proc = subprocess.Popen([TRAIN, "run", job, "--json"], stdout=subprocess.PIPE, text=True, env=env)
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "metrics" and events[-1]["step"] == 2:
            proc.send_signal(signal.SIGTERM)  # step 3 is queued by now: the stop waits for it
    assert proc.wait(timeout=300) == 3
    stopped_at = checkpoints(events)[-1]
    # The checkpoint is of the last step reported, and every step up to it was reported once.
    assert [m["step"] for m in metrics(events)] == list(range(1, stopped_at + 1))
    assert stopped_at < 12

    resumed = run(job, True, "--resume", str(workdir / "stopped" / "checkpoints" / f"step-{stopped_at}"))
    assert [m["step"] for m in metrics(resumed)] == list(range(stopped_at + 1, 13))
    assert [m["loss"] for m in metrics(events) + metrics(resumed)] == [m["loss"] for m in metrics(whole)]
    assert adapter_bytes(resumed) == adapter_bytes(whole)
