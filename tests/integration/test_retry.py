"""`qloractl retry` and Client.retry (JobService.RetryJob) through the real qlorad, qlorad-worker,
qlorad-train and qloractl on loopback: a failed job retried as a new job goes on from the
original's newest checkpoint and completes; --from-scratch starts at step 0; jobs that are not
FAILED or CANCELLED are refused naming their state; only the owner or an admin may retry, and the
new job stays the owner's."""
import json
import os
import re
import signal

import pytest

from conftest import REPO, Cluster, checkpointed_spec, children, python_client
from test_auth import SPEC, ctl, secured  # noqa: F401 (secured is a fixture)
from test_reconcile import job_logs, metrics, submit, wait_for_step

qlorad = python_client()

DEMO_DATA = REPO / "examples" / "data" / "demo.jsonl"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
EVERY = 20  # checkpoint interval, in steps
# Long enough that the trainer is still running when the test acts on it past the first
# checkpoint (the tiny model trains about 75 steps/s on a 2-core CI machine), short enough that
# the retry's remaining steps take a few seconds.
STEPS = 300
LONG = 3000


def retry(cluster: Cluster, job_id: str, *flags) -> dict:
    line = json.loads(cluster.ctl("--json", "retry", job_id, *flags, check=True).stdout)
    assert line["type"] == "job" and line["retry_of"] == job_id, line
    return line


def running_past_a_checkpoint(cluster: Cluster, tiny_model, tmp_path, steps: int) -> str:
    """A job of `steps` steps (no restarts), once it has trained past its first checkpoint."""
    spec = checkpointed_spec(tmp_path / "job.yaml", tiny_model, DEMO_DATA, tmp_path / "out", steps,
                             EVERY, max_restarts=0)
    job_id = submit(cluster, spec)
    wait_for_step(cluster, job_id, EVERY + 2)
    return job_id


def test_a_failed_job_retried_goes_on_from_its_checkpoint_and_completes(cluster, tiny_model,
                                                                         tmp_path):
    original = running_past_a_checkpoint(cluster, tiny_model, tmp_path, STEPS)
    # The worker's only child is the trainer; read from /proc, which is quicker than the job's
    # log (a live job's `qloractl logs` waits out a second of quiet), so the job is still running.
    [trainer] = children(cluster.worker.pid)
    os.kill(trainer, signal.SIGKILL)
    failed = cluster.wait_state(original, TERMINAL)
    assert failed["state"] == "FAILED", f"{failed}\n{cluster.logs()}"

    new = retry(cluster, original)
    assert new["id"] != original
    assert (new["owner"], new["priority"], new["name"]) == (failed["owner"], failed["priority"],
                                                            failed["name"])
    done = cluster.wait_state(new["id"], TERMINAL)
    assert done["state"] == "COMPLETED", f"{done}\n{cluster.logs()}"
    assert done["last_step"] == STEPS and done["retry_of"] == original
    # Its first attempt comes after the original's, so its checkpoints have a folder of their own.
    assert done["attempt"] == failed["attempt"] + 1, done
    assert (tmp_path / "out" / "checkpoints" / f"attempt-{done['attempt']}").is_dir()

    logs = job_logs(cluster, new["id"])
    assert f"retry of {original} (FAILED) by local, resuming from" in logs, logs
    resumed = int(re.search(r"resumed from \S+ at step (\d+)", logs).group(1))
    assert resumed >= EVERY and resumed % EVERY == 0, logs
    steps = [s for _, s in metrics(cluster, new["id"])]
    assert min(steps) == resumed + 1 and max(steps) == STEPS, steps
    status = cluster.ctl("status", new["id"], check=True).stdout
    assert re.search(rf"^retry of +{original}$", status, re.M), status

    # A completed job is not retried: it says why.
    res = cluster.ctl("retry", new["id"])
    assert res.returncode == 1, res
    assert "FAILED_PRECONDITION" in res.stderr and "is COMPLETED" in res.stderr, res.stderr


def test_a_running_job_is_refused_and_from_scratch_starts_at_step_zero(cluster, tiny_model,
                                                                       tmp_path):
    original = running_past_a_checkpoint(cluster, tiny_model, tmp_path, LONG)
    res = cluster.ctl("retry", original)
    assert res.returncode == 1, res
    assert "FAILED_PRECONDITION" in res.stderr and f"job {original} is RUNNING" in res.stderr
    assert "cancel it first" in res.stderr, res.stderr

    cluster.ctl("cancel", original, check=True)
    assert cluster.wait_state(original, TERMINAL)["state"] == "CANCELLED"
    with qlorad.Client(cluster.addr) as client:
        new = client.retry(original, from_scratch=True)
        assert new.retry_of == original and new.id != original
        wait_for_step(cluster, new.id, 2)
        client.cancel(new.id)
        assert client.wait(new.id, timeout=120).state.value == "CANCELLED"
    assert "by local, from step 0 (from scratch)" in job_logs(cluster, new.id)
    assert min(s for _, s in metrics(cluster, new.id)) == 1


def test_only_the_owner_or_an_admin_may_retry(secured, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC)
    job_id = json.loads(ctl(secured, "alice", "--json", "submit", spec).stdout)["id"]
    assert ctl(secured, "alice", "cancel", job_id).returncode == 0  # queued: no worker

    res = ctl(secured, "bob", "retry", job_id)
    assert res.returncode == 1 and "PERMISSION_DENIED" in res.stderr, res
    assert "belongs to another user" in res.stderr
    with pytest.raises(qlorad.QloradError) as refused:
        qlorad.Client(secured.addr, token=secured.tokens["bob"]).retry(job_id)
    assert refused.value.code == "PERMISSION_DENIED"

    # An admin's retry stays alice's job; alice may retry her own.
    by_root = json.loads(ctl(secured, "root", "--json", "retry", job_id).stdout)
    assert (by_root["owner"], by_root["retry_of"]) == ("alice", job_id), by_root
    alice = qlorad.Client(secured.addr, token=secured.tokens["alice"])
    assert by_root["id"] in [j.id for j in alice.list()]
    mine = alice.retry(job_id)
    assert (mine.owner, mine.retry_of) == ("alice", job_id)
    assert f"retry of {job_id} (CANCELLED) by root" in ctl(secured, "alice", "logs", by_root["id"]).stdout
