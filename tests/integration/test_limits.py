"""The coordinator's limits against real processes on loopback (issue 19): a spec size cap at
submit, listings that page and leave specs out, a cap on open metric and log streams, an HTTP
side that idle connections do not stall, and trainer input that once crashed it (a data line
nested 100,000 deep, a config declaring a billion layers) refused naming the file."""
import json
import select
import shutil
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, Cluster, binary, write_spec

MIB = 1 << 20
NO_DATA = Path("/nonexistent/train.jsonl")  # the coordinator never reads it


@pytest.fixture()
def start(tmp_path):
    """start(*flags): a coordinator alone (no worker, so jobs stay QUEUED); stopped at teardown."""
    clusters = []

    def run(*flags):
        c = Cluster(tmp_path / f"c{len(clusters)}")
        c.root.mkdir()
        clusters.append(c)
        return c.start_coordinator(*flags)

    yield run
    for c in clusters:
        c.stop()


def padded_spec(path: Path, size: int) -> Path:
    """A valid spec grown to `size` bytes by a trailing YAML comment."""
    write_spec(path, Path("/models/none"), NO_DATA, Path("/runs/none"))
    text = path.read_text() + "# "
    path.write_text(text + "x" * (size - len(text) - 1) + "\n")
    assert path.stat().st_size == size
    return path


def submit(cluster: Cluster, spec: Path) -> str:
    res = cluster.ctl("--json", "submit", spec)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["id"]


def test_spec_over_the_cap_is_refused_naming_its_size_and_the_cap(start, tmp_path):
    cluster = start()
    # 2 MiB: under gRPC's own 4 MiB message limit, so the coordinator's cap (1 MiB) is what
    # refuses it, with its own message.
    big = padded_spec(tmp_path / "big.yaml", 2 * MIB)
    res = cluster.ctl("submit", big)
    assert res.returncode == 1, res.stdout
    assert res.stderr == (f"error: INVALID_ARGUMENT: spec_yaml: the spec is {2 * MIB} bytes, over the "
                          f"coordinator's limit of {MIB} bytes (qlorad --max-spec-bytes)\n")
    assert cluster.ctl("--json", "jobs", check=True).stdout == ""  # nothing was stored

    # The cap is a flag, up to 3 MiB: a job with its spec must still fit the 4 MiB message that
    # gRPC clients accept by default, since GetJob returns the spec.
    raised = start("--max-spec-bytes", str(3 * MIB))
    job_id = submit(raised, big)
    assert raised.job(job_id)["spec_yaml"] == big.read_text()
    refused = subprocess.run([str(binary("qlorad")), "--listen", "127.0.0.1:0", "--http", "off",
                              "--db", str(tmp_path / "never.db"), "--max-spec-bytes", str(4 * MIB)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "--max-spec-bytes" in refused.stderr, refused.stderr


def test_listing_leaves_specs_out_so_large_specs_do_not_break_it(start, tmp_path):
    # Five specs just under the cap add up to more than one gRPC message may carry (4 MiB):
    # listings that carried specs failed with RESOURCE_EXHAUSTED for everyone.
    cluster = start()
    spec = padded_spec(tmp_path / "large.yaml", MIB - 100)
    ids = {submit(cluster, spec) for _ in range(5)}
    listed = cluster.ctl("--json", "jobs")
    assert listed.returncode == 0, listed.stderr
    jobs = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {j["id"] for j in jobs} == ids
    assert {j["spec_yaml"] for j in jobs} == {""}
    table = cluster.ctl("jobs")
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 1 + 5, table.stderr
    # GetJob still has the spec, whole.
    assert cluster.job(next(iter(ids)))["spec_yaml"] == spec.read_text()


class Follower:
    """`qloractl logs JOB --follow`: one StreamLogs call held open. A queued job has a stored
    "submitted" line, so the first line printed proves the coordinator took the stream."""

    def __init__(self, cluster: Cluster, job_id: str):
        self.proc = subprocess.Popen([str(binary("qloractl")), "--server", cluster.addr, "logs", job_id,
                                      "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.first_line = ""
        self.reader = threading.Thread(target=self._read_first_line, daemon=True)
        self.reader.start()

    def _read_first_line(self):
        self.first_line = self.proc.stdout.readline()

    def started(self, timeout=60.0) -> bool:
        """True once a line came, False if qloractl exited without one (it was refused)."""
        self.reader.join(timeout)
        assert not self.reader.is_alive(), "qloractl logs printed nothing and did not exit"
        return bool(self.first_line)

    def refusal(self) -> tuple[int, str]:
        return self.proc.wait(timeout=60), self.proc.stderr.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture()
def two_streams_open(start, tmp_path):
    """two_streams_open(*flags): a coordinator with `flags`, a queued job and two followers of
    it; returns (cluster, job id, the list of followers, which the test may change). The
    followers are stopped at teardown."""
    followers = []

    def start_two(*flags):
        cluster = start(*flags)
        job_id = submit(cluster, padded_spec(tmp_path / "job.yaml", 1000))
        followers.extend(Follower(cluster, job_id) for _ in range(2))
        for f in followers:
            assert f.started(), f.refusal()
        return cluster, job_id, followers

    yield start_two
    for f in followers:
        f.stop()


def refusal_of_a_third(cluster, job_id) -> str:
    third = Follower(cluster, job_id)
    assert not third.started()
    code, err = third.refusal()
    assert code == 1, err
    return err


def test_streams_past_the_per_client_cap_are_refused_until_one_closes(two_streams_open):
    cluster, job_id, followers = two_streams_open("--max-streams-per-client", "2", "--max-streams", "100")
    err = refusal_of_a_third(cluster, job_id)
    assert err.startswith("error: RESOURCE_EXHAUSTED: too many streams from ipv4:127.0.0.1: 2 are "
                          "open, the most one client may have (qlorad --max-streams-per-client)"), err
    # Metric streams count against the same cap.
    watch = cluster.ctl("watch", job_id, timeout=60)
    assert watch.returncode == 1 and "RESOURCE_EXHAUSTED" in watch.stderr, watch.stderr
    # Unary calls are not streams: the client can still list and read jobs.
    assert cluster.job(job_id)["state"] == "QUEUED"

    # A stream that ends gives its place back (noticed by the coordinator within its poll).
    followers.pop().stop()
    for _ in range(100):  # bounded: each refused try is one short qloractl run
        again = Follower(cluster, job_id)
        if again.started():
            followers.append(again)
            break
        assert "RESOURCE_EXHAUSTED" in again.refusal()[1]
    else:
        pytest.fail("the closed stream's place never came back")


def test_streams_past_the_total_cap_are_refused(two_streams_open):
    cluster, job_id, _ = two_streams_open("--max-streams", "2", "--max-streams-per-client", "100")
    err = refusal_of_a_third(cluster, job_id)
    assert err.startswith("error: RESOURCE_EXHAUSTED: the coordinator has 2 streams open, the "
                          "most it serves at once (qlorad --max-streams)"), err


def idle_connections(http_addr: str, n: int) -> list[socket.socket]:
    host, port = http_addr.rsplit(":", 1)
    return [socket.create_connection((host, int(port)), timeout=60) for _ in range(n)]


def get(http_addr: str, path: str) -> str:
    # The timeout only bounds a hang; the test asserts what happened, not how fast.
    with urllib.request.urlopen(f"http://{http_addr}{path}", timeout=60) as res:
        assert res.status == 200
        return res.read().decode()


def still_open(sock: socket.socket) -> bool:
    """Not closed by the server: nothing to read right now, in particular no end of file."""
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable or sock.recv(1) != b""


def test_idle_http_connections_do_not_stall_metrics(start):
    # A long idle timeout: /metrics can only be served here while the 8 idle connections are
    # still held open, never because the server dropped them (the pool used to be 8 threads).
    cluster = start("--http-timeout-s", "300")
    idle = idle_connections(cluster.http_addr, 8)
    try:
        assert "qlorad_jobs" in get(cluster.http_addr, "/metrics")
        assert "id=\"jobs\"" in get(cluster.http_addr, "/")
        assert all(still_open(s) for s in idle), "served only after idle connections were dropped"
    finally:
        for s in idle:
            s.close()


def test_idle_http_connections_are_closed_after_the_timeout(start):
    cluster = start("--http-timeout-s", "1", "--http-threads", "2")
    idle = idle_connections(cluster.http_addr, 2)  # every thread of the pool
    try:
        for s in idle:
            assert s.recv(1) == b"", "the server closes an idle connection"  # blocks until then
        assert "qlorad_jobs" in get(cluster.http_addr, "/metrics")
    finally:
        for s in idle:
            s.close()


def deep_line(depth: int) -> str:
    return '{"text": ' + "[" * depth + "]" * depth + "}"


def test_deeply_nested_data_line_fails_the_job_naming_file_and_line(cluster, tiny_model, tmp_path):
    # It used to overflow the trainer's stack: "killed by signal 11" after every restart.
    data = tmp_path / "deep.jsonl"
    data.write_text('{"text": "fine"}\n' + deep_line(100000) + "\n")
    spec = write_spec(tmp_path / "deep.yaml", tiny_model, data, tmp_path / "out")
    spec.write_text(spec.read_text().replace("max_restarts: 0", "max_restarts: 3"))
    job_id = submit(cluster, spec)
    job = cluster.wait_state(job_id, {"FAILED", "COMPLETED", "CANCELLED"})
    assert job["state"] == "FAILED", job
    assert f"{data}:2: JSON nested deeper than 128 levels" in job["error"], job
    assert "signal" not in job["error"], job
    assert job["attempt"] == 0, "bad input is not retried"


def test_trainer_refuses_a_billion_layers_before_allocating(tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    config["num_hidden_layers"] = 1000000000
    (model / "config.json").write_text(json.dumps(config))
    spec = write_spec(tmp_path / "huge.yaml", model, REPO / "examples" / "data" / "demo.jsonl",
                      tmp_path / "out")
    # Under a 1 GiB data limit: the 8 GB this config once cost is not even attempted (then it
    # ended in "std::bad_alloc" here, instead of naming the field).
    res = subprocess.run(["prlimit", f"--data={1 << 30}", str(binary("qlorad-train")), "run", str(spec)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert (f"{model}/config.json: num_hidden_layers: 1000000000 is more than the trainer takes "
            "(at most 1024)") in res.stderr
