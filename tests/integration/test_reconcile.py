"""Reconciliation under faults (issue 19), with real processes on loopback and the tiny model.

What broke before: a coordinator killed with -9 and restarted after 0.3 s left the job RUNNING
for good and the worker wedged; after 3 s the orphaned trainer pruned the checkpoint its retry
was told to resume from, and the retry failed as an "invalid job"; after 7 s the job was redone
from step 0 and the events the worker had queued were dropped. A lost worker spent one of the
job's restarts, and a retry whose checkpoint was gone failed as bad input.

Every wait is a bounded loop on what the processes report; the only sleep is how long the
coordinator stays down, which is the scenario itself."""
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, Cluster, checkpointed_spec, wait_until

DEMO_DATA = REPO / "examples" / "data" / "demo.jsonl"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
EVERY = 20  # checkpoint interval, in steps
# Steps of a job whose trainer the test kills or stops mid-run: enough that the tiny model (about
# 75 steps/s on a 2-core CI machine) is still training when the test acts on it, which it does as
# soon as it sees a step past the first checkpoint.
LONG = 3000


def job_spec(path: Path, model: Path, out: Path, steps: int, max_restarts: int = 0) -> Path:
    return checkpointed_spec(path, model, DEMO_DATA, out, steps, EVERY, max_restarts)


def submit(cluster: Cluster, spec: Path) -> str:
    res = cluster.ctl("--json", "submit", spec, check=True)
    return json.loads(res.stdout)["id"]


def wait_for_step(cluster: Cluster, job_id: str, step: int) -> dict:
    def reached():
        job = cluster.job(job_id)
        assert job["state"] not in TERMINAL, f"{job_id} ended early: {job}\n{cluster.logs()}"
        return job if job["last_step"] >= step else None
    return wait_until(f"{job_id} to reach step {step}", reached, 240, cluster.logs)


def job_logs(cluster: Cluster, job_id: str) -> str:
    return cluster.ctl("logs", job_id, check=True).stdout


def metrics(cluster: Cluster, job_id: str) -> list[tuple[int, int]]:
    """(attempt, step) of every stored step of a finished job, in stream order."""
    res = cluster.ctl("--json", "watch", job_id)
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return [(r["attempt"], r["step"]) for r in rows if "loss" in r and "step" in r]


def restart_coordinator(cluster: Cluster, down_s: float, *flags):
    """kill -9, stay down `down_s` seconds, come back on the address the workers know."""
    cluster.coordinator.send_signal(signal.SIGKILL)
    cluster.coordinator.wait(timeout=30)
    time.sleep(down_s)
    cluster.start_coordinator(*flags, listen=cluster.addr, log_name=f"qlorad-after-{down_s}s.log")


def trainer_pid(cluster: Cluster, job_id: str, attempt: int) -> int:
    def started():
        m = re.findall(r"trainer started on worker \S+ \(rank 0, pid (\d+)\)", job_logs(cluster, job_id))
        return int(m[attempt]) if len(m) > attempt else None
    return wait_until(f"the trainer of {job_id} attempt {attempt}", started, 240, cluster.logs)


@pytest.fixture()
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.stop()


@pytest.mark.parametrize("down_s", [0.3, 3.0, 7.0])
def test_coordinator_kill_adopts_the_running_attempt(cluster, tiny_model, tmp_path, down_s):
    cluster.start_coordinator()
    cluster.start_worker(tmp_path / "work")
    steps = 200
    job_id = submit(cluster, job_spec(tmp_path / "job.yaml", tiny_model, tmp_path / "out", steps))
    wait_for_step(cluster, job_id, EVERY + 5)

    restart_coordinator(cluster, down_s)

    job = cluster.wait_state(job_id, TERMINAL)
    assert job["state"] == "COMPLETED", f"{job}\n{cluster.logs()}"
    # The trainer that ran through the outage finished the job: no second attempt, nothing redone.
    assert (job["attempt"], job["restarts"]) == (0, 0), job
    assert "attempt 0 rank 0 adopted from worker test-cpu" in job_logs(cluster, job_id)
    assert Path(job["adapter_path"], "adapter_model.safetensors").exists()
    # The steps the worker queued while the coordinator was away were delivered, not dropped.
    seen = metrics(cluster, job_id)
    assert {a for a, _ in seen} == {0}
    assert sorted({s for _, s in seen}) == list(range(1, steps + 1))

    # The worker is free again: the next job runs (it stayed QUEUED for good before).
    next_id = submit(cluster, job_spec(tmp_path / "next.yaml", tiny_model, tmp_path / "next", 4))
    assert cluster.wait_state(next_id, TERMINAL)["state"] == "COMPLETED", cluster.logs()


def test_worker_kill_requeues_without_spending_a_restart(cluster, tiny_model, tmp_path):
    cluster.start_coordinator("--heartbeat-timeout-ms", "2000")
    cluster.start_worker(tmp_path / "work-a", name="cpu-a", log_name="worker-a.log")
    lost_worker = cluster.worker
    # max_restarts 0: had the lost worker counted as a failure, the job would fail.
    job_id = submit(cluster, job_spec(tmp_path / "job.yaml", tiny_model, tmp_path / "out", LONG))
    wait_for_step(cluster, job_id, EVERY + 5)
    pid = trainer_pid(cluster, job_id, 0)
    lost_worker.send_signal(signal.SIGKILL)
    lost_worker.wait(timeout=30)
    os.kill(pid, signal.SIGKILL)  # its trainer would only die at its next write to the pipe
    cluster.start_worker(tmp_path / "work-b", name="cpu-b", log_name="worker-b.log")

    job = cluster.wait_state(job_id, TERMINAL)
    assert job["state"] == "COMPLETED", f"{job}\n{cluster.logs()}"
    assert (job["attempt"], job["restarts"]) == (1, 0), job
    assert "no restart spent" in job_logs(cluster, job_id)
    # Attempt 1 went on from a checkpoint, so at most one interval was redone.
    seen = metrics(cluster, job_id)
    first_resumed = min(s for a, s in seen if a == 1)
    last_lost = max(s for a, s in seen if a == 0)
    assert first_resumed > EVERY and last_lost - first_resumed < EVERY, seen


def test_cancel_ends_cancelled_when_the_worker_is_gone(cluster, tiny_model, tmp_path):
    cluster.start_coordinator("--heartbeat-timeout-ms", "60000")
    cluster.start_worker(tmp_path / "work")
    job_id = submit(cluster, job_spec(tmp_path / "job.yaml", tiny_model, tmp_path / "out", LONG))
    wait_for_step(cluster, job_id, 5)
    pid = trainer_pid(cluster, job_id, 0)
    cluster.worker.send_signal(signal.SIGKILL)
    cluster.worker.wait(timeout=30)
    os.kill(pid, signal.SIGKILL)
    # After a restart no worker holds the job: the cancel cannot wait for a trainer's exit.
    restart_coordinator(cluster, 0.3, "--heartbeat-timeout-ms", "60000")
    cluster.ctl("cancel", job_id, check=True)
    assert cluster.job(job_id)["state"] == "CANCELLED"


def test_a_retry_whose_checkpoints_are_gone_still_completes(cluster, tiny_model, tmp_path):
    cluster.start_coordinator()
    cluster.start_worker(tmp_path / "work")
    out = tmp_path / "out"
    job_id = submit(cluster, job_spec(tmp_path / "job.yaml", tiny_model, out, LONG, max_restarts=1))
    wait_for_step(cluster, job_id, EVERY + 5)
    pid = trainer_pid(cluster, job_id, 0)
    # The checkpoint the coordinator will name is gone (deleted, or pruned by an orphan), and so
    # is every other: the trainer is stopped first so that it writes no new one.
    os.kill(pid, signal.SIGSTOP)
    shutil.rmtree(out / "checkpoints")
    os.kill(pid, signal.SIGKILL)

    job = cluster.wait_state(job_id, TERMINAL)
    assert job["state"] == "COMPLETED", f"{job}\n{cluster.logs()}"
    assert (job["attempt"], job["restarts"]) == (1, 1), job
    logs = job_logs(cluster, job_id)
    assert "no complete checkpoint in" in logs and "starting from step 0" in logs
    assert "invalid job" not in logs


def test_a_stale_attempt_is_stopped_and_cannot_touch_the_new_one(cluster, tiny_model, tmp_path):
    cluster.start_coordinator("--heartbeat-timeout-ms", "2000")
    cluster.start_worker(tmp_path / "work-a", name="cpu-a", log_name="worker-a.log")
    stale_worker = cluster.worker
    out = tmp_path / "out"
    steps = 600  # more than the frozen worker's trainer gets through before its pipe fills
    job_id = submit(cluster, job_spec(tmp_path / "job.yaml", tiny_model, out, steps))
    wait_for_step(cluster, job_id, EVERY + 5)
    # The worker freezes (its trainer runs on): the coordinator drops it and the job goes on
    # elsewhere as attempt 1.
    stale_worker.send_signal(signal.SIGSTOP)
    try:
        cluster.start_worker(tmp_path / "work-b", name="cpu-b", log_name="worker-b.log")
        wait_until("attempt 1 to resume",
                   lambda: "resumed from" in job_logs(cluster, job_id), 240, cluster.logs)
    finally:
        stale_worker.send_signal(signal.SIGCONT)
    # Back, it registers again still running attempt 0, and is told to stop it.
    wait_until("the stale attempt to be stopped",
               lambda: "still runs attempt 0 rank 0" in job_logs(cluster, job_id), 240, cluster.logs)

    job = cluster.wait_state(job_id, TERMINAL)
    assert job["state"] == "COMPLETED", f"{job}\n{cluster.logs()}"
    assert (job["attempt"], job["restarts"]) == (1, 0), job
    # Attempt 0's last words (its steps, its checkpoint on SIGTERM, its exit) changed nothing:
    # no step of it after attempt 1 began, and attempt 1's checkpoints are where it left them.
    seen = metrics(cluster, job_id)
    first_new = next(i for i, (a, _) in enumerate(seen) if a == 1)
    assert all(a == 1 for a, _ in seen[first_new:]), seen
    # Attempt 1 may resume from a later checkpoint of attempt 0 (the stale trainer runs on while
    # its worker is frozen, pruning the one named): whichever, it keeps its own newest two.
    resumed = int(re.search(r"resumed from \S+ at step (\d+)", job_logs(cluster, job_id)).group(1))
    written = [f"step-{s}" for s in range(resumed + 1, steps) if s % EVERY == 0]
    kept = sorted((p.name for p in (out / "checkpoints" / "attempt-1").iterdir()),
                  key=lambda name: int(name.split("-")[1]))
    assert kept == written[-2:], (kept, resumed)
