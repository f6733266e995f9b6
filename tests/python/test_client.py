"""qlorad.Client against a real coordinator: the `qlorad` binary from QLORAD_BIN_DIR (default
<repo>/build/bin), on a loopback port it picks itself, with its own SQLite file. No worker runs,
so jobs stay QUEUED until cancelled; training itself is covered by tests/integration."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("QLORAD_BIN_DIR", REPO / "build" / "bin"))
sys.path.insert(0, str(REPO / "client" / "python"))

from qlorad._generate import generate_if_stale  # noqa: E402  (importable before the stubs exist)

generate_if_stale()

import qlorad  # noqa: E402
import qlorad.notebook  # noqa: E402
from qlorad import JobState, QloradError  # noqa: E402

LISTENING = re.compile(r"qlorad listening on (127\.0\.0\.1:\d+)")


def spec(name: str, **train) -> dict:
    return {
        "name": name,
        "model": {"path": "/models/none"},  # the coordinator does not read files
        "data": {"path": "data/train.jsonl"},
        "train": {"max_steps": 7, **train},
        "scheduling": {"priority": 70, "max_restarts": 2},
    }


@pytest.fixture()
def server(tmp_path):
    binary = BIN_DIR / "qlorad"
    if not binary.exists():
        pytest.skip(f"{binary} is missing: build the qlorad target or set QLORAD_BIN_DIR")
    log = tmp_path / "qlorad.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(binary), "--listen", "127.0.0.1:0", "--http", "off", "--db",
                                 str(tmp_path / "q.db"), "--insecure-local"], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (match := LISTENING.search(log.read_text())):
            assert proc.poll() is None, f"qlorad exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"qlorad did not start:\n{log.read_text()}"
            time.sleep(0.05)
        yield match.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture()
def client(server):
    with qlorad.Client(server) as c:
        yield c


def run_with_timeout(fn, timeout: float):
    """fn() in a thread; fails the test if it has not returned after `timeout` seconds."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # re-raised in the test thread
            result["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_submit_returns_the_job_queued_and_get_agrees(client):
    job = client.submit(spec("first"))
    assert job.id
    assert job.name == "first"
    assert job.state is JobState.QUEUED
    assert job.total_steps == 7 and job.last_step == 0
    assert job.priority == 70 and job.max_restarts == 2 and job.gpus == 1
    assert job.worker_id == "" and job.started_unix_ms == 0 and job.created_unix_ms > 0
    assert client.get(job.id) == job


def test_submit_accepts_a_file_or_yaml_text(client, tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: from-file\nmodel: {path: /m}\ndata: {path: d.jsonl}\n")
    by_path = client.submit(path)
    by_str_path = client.submit(str(path))
    by_text = client.submit("name: from-text\nmodel: {path: /m}\ndata: {path: d.jsonl}\n")
    assert (by_path.name, by_str_path.name, by_text.name) == ("from-file", "from-file", "from-text")
    assert by_path.spec_yaml == path.read_text()  # stored exactly as submitted
    assert len({by_path.id, by_str_path.id, by_text.id}) == 3
    with pytest.raises(FileNotFoundError, match="no-such.yaml"):
        client.submit(str(tmp_path / "no-such.yaml"))


def test_list_filters_by_state(client):
    queued = client.submit(spec("stays-queued"))
    cancelled = client.submit(spec("gets-cancelled"))
    client.cancel(cancelled.id)
    assert {j.id for j in client.list()} == {queued.id, cancelled.id}
    assert [j.id for j in client.list(states=["cancelled"])] == [cancelled.id]
    assert [j.id for j in client.list(states=[JobState.QUEUED])] == [queued.id]
    assert {j.id for j in client.list(states=["queued", "CANCELLED"])} == {queued.id, cancelled.id}
    assert client.list(states=["running", "completed", "failed"]) == []
    assert len(client.list(limit=1)) == 1
    with pytest.raises(ValueError, match="sleeping"):
        client.list(states=["sleeping"])


def test_list_walks_every_page_and_leaves_specs_out(client):
    # More jobs than the coordinator's default page (100): listing them all takes two pages.
    ids = [client.submit(spec(f"paged-{i}")).id for i in range(105)]
    jobs = client.list()
    assert len(jobs) == 105 and {j.id for j in jobs} == set(ids)  # each job once
    created = [j.created_unix_ms for j in jobs]
    assert created == sorted(created, reverse=True)  # newest first across the page boundary
    assert {j.spec_yaml for j in jobs} == {""}  # a listing never carries specs...
    assert client.get(ids[0]).spec_yaml.startswith("{")  # ...GetJob does (dicts go as JSON)
    assert [j.id for j in client.list(limit=102)] == [j.id for j in jobs[:102]]
    with pytest.raises(ValueError, match="limit"):
        client.list(limit=-1)


def test_cancel_a_queued_job(client):
    job = client.submit(spec("to-cancel"))
    cancelled = client.cancel(job.id)
    assert cancelled.id == job.id
    assert cancelled.state is JobState.CANCELLED and cancelled.state.terminal
    again = client.get(job.id)
    assert again.state is JobState.CANCELLED and again.finished_unix_ms >= again.created_unix_ms
    assert client.wait(job.id, timeout=10).state is JobState.CANCELLED


@pytest.mark.parametrize("train, field", [({"lr": -1}, "train.lr"),
                                          ({"max_steps": 0}, "train.max_steps"),
                                          ({"no_such_key": 1}, "no_such_key")])
def test_an_invalid_spec_raises_naming_the_field(client, train, field):
    with pytest.raises(QloradError) as error:
        client.submit(spec("bad", **train))
    assert error.value.code == "INVALID_ARGUMENT"
    assert field in error.value.message, error.value.message
    assert client.list() == []  # nothing was stored


def test_unknown_job_is_not_found(client):
    with pytest.raises(QloradError) as error:
        client.get("job-does-not-exist")
    assert error.value.code == "NOT_FOUND"
    assert "job-does-not-exist" in str(error.value)


def test_metrics_of_a_cancelled_job_end(client):
    job = client.submit(spec("no-steps"))
    client.cancel(job.id)
    assert run_with_timeout(lambda: list(client.metrics(job.id)), timeout=20) == []


def test_a_metrics_stream_stays_open_until_the_job_ends(client):
    job = client.submit(spec("live"))
    stream = client.metrics(job.id)
    ended = threading.Event()

    def drain():
        for _ in stream:
            pass
        ended.set()

    threading.Thread(target=drain, daemon=True).start()
    assert not ended.wait(1.0), "the stream of a queued job ended before the job did"
    client.cancel(job.id)
    assert ended.wait(20), "the stream did not end after the job was cancelled"


def test_logs_of_a_cancelled_job_end_and_resume_from_a_sequence_number(client):
    job = client.submit(spec("logged"))
    client.cancel(job.id)
    lines = run_with_timeout(lambda: list(client.logs(job.id)), timeout=20)
    assert len(lines) >= 2, lines
    assert all(line.job_id == job.id for line in lines)
    seqs = [line.seq for line in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert "cancel" in lines[-1].message
    later = run_with_timeout(lambda: list(client.logs(job.id, from_seq=seqs[1])), timeout=20)
    assert [line.seq for line in later] == seqs[1:]


def test_wait_gives_up_after_its_timeout(client):
    job = client.submit(spec("never-runs"))  # no worker: it stays queued
    start = time.monotonic()
    with pytest.raises(qlorad.DeadlineExceeded, match=job.id):
        client.wait(job.id, timeout=1.0)
    assert 0.9 <= time.monotonic() - start < 10


def test_wait_returns_when_the_job_ends(client):
    job = client.submit(spec("ends-later"))
    threading.Timer(0.5, client.cancel, args=(job.id,)).start()
    final = run_with_timeout(lambda: client.wait(job.id, timeout=20), timeout=30)
    assert final.state is JobState.CANCELLED


def test_notebook_watch_prints_text_without_a_notebook(client):
    job = client.submit(spec("watched"))
    client.cancel(job.id)
    out = io.StringIO()
    final = run_with_timeout(lambda: qlorad.notebook.watch(client, job.id, file=out), timeout=20)
    assert final.state is JobState.CANCELLED
    assert out.getvalue() == f"job {job.id} CANCELLED\n"


def test_no_server_raises_server_unavailable_naming_the_address():
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    with qlorad.Client(address, timeout=10) as c:
        with pytest.raises(qlorad.ServerUnavailable, match=re.escape(address)):
            c.list()
