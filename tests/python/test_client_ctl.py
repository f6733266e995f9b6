"""qloractl against a real coordinator, with jobs driven through the real WorkerService by a
scripted worker (see test_client_training.py): what watch and logs print and how they exit.
qloractl comes from $QLORACTL, else QLORAD_BIN_DIR; the tests skip when it is missing."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from test_client import BIN_DIR, client, server, spec  # noqa: F401  (fixtures)
from test_client_training import LOSSES, ScriptedWorker, completed_job_spec, crash_on_bad_data, \
    train_and_finish

from qlorad._gen.v1 import common_pb2, workers_pb2  # noqa: E402

QLORACTL = Path(os.environ.get("QLORACTL", BIN_DIR / "qloractl"))


@pytest.fixture()
def ctl(server):  # noqa: F811
    if not QLORACTL.exists():
        pytest.skip(f"{QLORACTL} is missing: build the qloractl target or set QLORACTL")

    def run(*args, timeout=60):
        return subprocess.run([str(QLORACTL), "--server", server, *map(str, args)],
                              capture_output=True, text=True, timeout=timeout)

    return run


def test_watch_prints_each_step_then_the_adapter_and_exits_zero(server, client, ctl):  # noqa: F811
    job = client.submit(completed_job_spec("watched"))
    worker = ScriptedWorker(server, train_and_finish)
    res = ctl("watch", job.id)
    worker.join()
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "step 1/5  loss 2.5000  lr 1.00e-04  grad_norm 0.0000  1.5k tok/s  ETA --:--"
    # Steps are 0.5 s apart on the trainer's clock: 3 steps left at step 2 is 1.5 s.
    assert lines[1] == "step 2/5  loss 2.0000  lr 1.00e-04  grad_norm 0.0000  1.5k tok/s  ETA 0:02"
    assert len(lines) == len(LOSSES) + 2
    assert lines[-2:] == [f"job {job.id} COMPLETED at step 5/5 (loss 1.2500)",
                          "adapter written to /runs/x/adapter"]


def test_watch_of_a_failed_job_prints_the_error_and_exits_one(server, client, ctl):  # noqa: F811
    job = client.submit(completed_job_spec("fails"))
    worker = ScriptedWorker(server, crash_on_bad_data)
    res = ctl("watch", job.id)
    worker.join()
    assert res.returncode == 1, res.stderr
    assert f"job {job.id} FAILED at step 1/5 (loss 3.0000)" in res.stdout
    assert "error: trainer exited with code 1: data.path: line 7 is not JSON" in res.stdout


def test_watch_json_gives_one_object_per_step_then_the_job(server, client, ctl):  # noqa: F811
    job = client.submit(completed_job_spec("json"))
    worker = ScriptedWorker(server, train_and_finish)
    res = ctl("--json", "watch", job.id, "--from-step", "3")
    worker.join()
    assert res.returncode == 0, res.stderr
    objects = [json.loads(line) for line in res.stdout.splitlines()]
    # A "state" line comes first if the job was still queued when watch started.
    steps = [o for o in objects if o["type"] == "metrics"]
    assert [(o["step"], o["loss"]) for o in steps] == [(3, 1.75), (4, 1.5), (5, 1.25)]
    assert {o["type"] for o in objects} <= {"state", "metrics", "done"}
    assert objects[-1]["type"] == "done"
    assert objects[-1]["id"] == job.id and objects[-1]["state"] == "COMPLETED"
    assert objects[-1]["last_step"] == 5


def test_watch_of_a_cancelled_job_exits_one(client, ctl):  # noqa: F811
    job = client.submit(spec("cancelled"))
    client.cancel(job.id)
    res = ctl("watch", job.id)
    assert res.returncode == 1
    assert res.stdout == f"job {job.id} CANCELLED\n"


def test_logs_of_a_running_job_stop_after_the_stored_lines(server, client, ctl):  # noqa: F811
    job = client.submit(completed_job_spec("logs"))
    reported, finish = threading.Event(), threading.Event()

    def start_then_hold(report, start):
        report(start, started=workers_pb2.TrainerEvent.Started(pid=77))
        # ReportEvents returns once the coordinator has stored the events.
        report(start, log=common_pb2.LogLine(message="loading model", level="info"))
        reported.set()
        finish.wait(30)
        train_and_finish(report, start)

    worker = ScriptedWorker(server, start_then_hold)
    assert reported.wait(20), "the scripted worker never got its assignment"
    try:
        start = time.monotonic()
        res = ctl("logs", job.id)  # the job is RUNNING: no end of stream from the server
        elapsed = time.monotonic() - start
        assert res.returncode == 0, res.stderr
        assert "loading model" in res.stdout and "trainer[0]" in res.stdout
        assert elapsed < 15, f"logs without --follow took {elapsed:.1f} s"
        assert client.get(job.id).state.value == "RUNNING"
    finally:
        finish.set()
        worker.join()


def test_logs_follow_ends_with_the_job(server, client, ctl):  # noqa: F811
    job = client.submit(completed_job_spec("follow"))
    worker = ScriptedWorker(server, train_and_finish)
    res = ctl("--json", "logs", job.id, "--follow")
    worker.join()
    assert res.returncode == 0, res.stderr
    messages = [json.loads(line)["message"] for line in res.stdout.splitlines()]
    assert messages[-1].startswith("completed; adapter at /runs/x/adapter"), messages


def test_jobs_table_and_state_filter(client, ctl):  # noqa: F811
    queued = client.submit(spec("queued-one"))
    cancelled = client.submit(spec("cancelled-one"))
    client.cancel(cancelled.id)
    table = ctl("jobs").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "STATE", "STEP/TOTAL", "LOSS", "WORKER", "AGE"]
    assert sorted(line.split()[0] for line in table[1:]) == sorted([queued.id, cancelled.id])
    only = ctl("--json", "jobs", "--state", "queued")
    assert [json.loads(line)["id"] for line in only.stdout.splitlines()] == [queued.id]


def test_jobs_walks_every_page(client, ctl):  # noqa: F811
    # More jobs than the coordinator's default page (100).
    ids = {client.submit(spec(f"paged-{i}")).id for i in range(105)}
    table = ctl("jobs")
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()[1:]
    assert len(rows) == 105 and {row.split()[0] for row in rows} == ids
    limited = ctl("--json", "jobs", "--limit", "101")
    assert limited.returncode == 0, limited.stderr
    listed = [json.loads(line) for line in limited.stdout.splitlines()]
    assert len(listed) == 101 and {j["spec_yaml"] for j in listed} == {""}


def test_submit_errors_name_the_field_and_exit_one(ctl, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmodel: {path: /m}\ndata: {path: d.jsonl}\ntrain: {lr: -1}\n")
    res = ctl("submit", bad)
    assert res.returncode == 1
    assert res.stderr == "error: INVALID_ARGUMENT: train.lr: must be > 0, got -1\n"


def test_ctrl_c_stops_watching_and_says_the_job_keeps_running(server, client):  # noqa: F811
    """SIGINT while following: exit 130 with a word that the job is still the coordinator's, which
    goes on with it (it completes afterwards)."""
    if not QLORACTL.exists():
        pytest.skip(f"{QLORACTL} is missing: build the qloractl target or set QLORACTL")
    import signal
    job = client.submit(completed_job_spec("interrupted"))
    reported, finish = threading.Event(), threading.Event()

    def one_step_then_hold(report, start):
        report(start, started=workers_pb2.TrainerEvent.Started(pid=78))
        report(start, metrics=common_pb2.StepMetrics(step=1, total_steps=len(LOSSES), loss=LOSSES[0],
                                                     wall_time_s=0.5))
        reported.set()
        finish.wait(30)
        train_and_finish(report, start)

    worker = ScriptedWorker(server, one_step_then_hold)
    try:
        assert reported.wait(20), "the scripted worker never got its assignment"
        proc = subprocess.Popen([str(QLORACTL), "--server", server, "watch", job.id],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # the stored step: qloractl is inside the stream now
        assert "step" in first and "1" in first, first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, (proc.returncode, out, err)
        assert f"stopped following {job.id}; the job keeps running (qloractl cancel {job.id} stops it)" in err
        assert client.get(job.id).state.value == "RUNNING"
    finally:
        finish.set()
        worker.join()
    assert client.wait(job.id, timeout=30).state.value == "COMPLETED"
