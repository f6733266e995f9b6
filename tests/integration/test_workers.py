"""`qloractl workers` and Client.workers() (JobService.ListWorkers) through the real qlorad,
qlorad-worker, qlorad-train and qloractl on loopback: two CPU workers, one of them training, are
listed with their state, job and rank, devices and heartbeat age; a worker that dies turns LOST;
a user sees the job a worker runs only when it is theirs."""
import json
import re
import signal

from conftest import REPO, Cluster, checkpointed_spec, python_client, wait_until
from test_auth import ctl, secured  # noqa: F401 (secured is a fixture)
from test_reconcile import submit, wait_for_step

qlorad = python_client()

DEMO_DATA = REPO / "examples" / "data" / "demo.jsonl"
LONG = 3000  # steps: the job is still training while the test looks


def workers_json(cluster: Cluster, *auth) -> dict:
    res = cluster.ctl(*auth, "--json", "workers", check=True)
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert all(line["type"] == "worker" for line in lines), lines
    return {line["name"]: line for line in lines}


def test_two_cpu_workers_one_busy_then_one_lost(tmp_path, tiny_model):
    cluster = Cluster(tmp_path)
    try:
        cluster.start_coordinator("--heartbeat-timeout-ms", "2000")
        cluster.start_worker(tmp_path / "work-a", name="cpu-a", log_name="worker-a.log")
        worker_a = cluster.worker
        cluster.start_worker(tmp_path / "work-b", name="cpu-b", log_name="worker-b.log")
        wait_until("both workers to register", lambda: len(workers_json(cluster)) == 2, 60,
                   cluster.logs)
        spec = checkpointed_spec(tmp_path / "job.yaml", tiny_model, DEMO_DATA, tmp_path / "out",
                                 LONG, 1000, max_restarts=0)
        job_id = submit(cluster, spec)
        wait_for_step(cluster, job_id, 1)

        listed = workers_json(cluster)
        busy = [w for w in listed.values() if w["state"] == "BUSY"]
        idle = [w for w in listed.values() if w["state"] == "IDLE"]
        assert len(busy) == 1 and len(idle) == 1, listed
        assert (busy[0]["job_id"], busy[0]["rank"], busy[0]["attempt"]) == (job_id, 0, 0)
        assert busy[0]["id"] == cluster.job(job_id)["worker_id"]
        assert idle[0]["job_id"] == ""
        for w in listed.values():
            assert [d["kind"] for d in w["devices"]] == ["cpu"], w
            assert w["hostname"] and w["id"]
            assert 0 <= w["heartbeat_age_ms"] < 60000, w

        table = cluster.ctl("workers", check=True).stdout.splitlines()
        assert table[0].split() == ["NAME", "STATE", "JOB", "DEVICES", "HOST", "HEARTBEAT"]
        rows = {line.split()[0]: line for line in table[1:]}
        assert re.search(rf"\bBUSY +{job_id} rank 0 +cpu:0 ", rows[busy[0]["name"]]), table
        assert re.search(r"\bIDLE +- +cpu:0 .* [\d.]+s ago$", rows[idle[0]["name"]]), table

        with qlorad.Client(cluster.addr) as client:
            by_name = {w.name: w for w in client.workers()}
            assert by_name[busy[0]["name"]].state == "BUSY"
            assert by_name[busy[0]["name"]].job_id == job_id
            assert by_name[idle[0]["name"]].devices[0].kind == "cpu"

        # cpu-a dies: past the heartbeat timeout it is LOST, with no heartbeat age.
        worker_a.send_signal(signal.SIGKILL)
        worker_a.wait(timeout=30)
        lost = wait_until("cpu-a to be lost",
                          lambda: workers_json(cluster)["cpu-a"]["state"] == "LOST" and
                          workers_json(cluster)["cpu-a"], 60, cluster.logs)
        assert lost["heartbeat_age_ms"] is None and lost["devices"] == [] and lost["job_id"] == ""
        assert re.search(r"^cpu-a +LOST +- +- +\S+ +-$", cluster.ctl("workers", check=True).stdout,
                         re.M)
        cluster.ctl("cancel", job_id, check=True)
    finally:
        cluster.stop()


def test_users_see_only_their_own_jobs_on_workers(secured, tmp_path, tiny_model):
    secured.start_worker(tmp_path / "work", "enrolled-cpu", "worker.log", "--enroll-token",
                         secured.tokens["enroll"])
    wait_until("the worker to register",
               lambda: "enrolled-cpu" in ctl(secured, "root", "workers").stdout, 60, secured.logs)
    spec = checkpointed_spec(tmp_path / "job.yaml", tiny_model, DEMO_DATA, tmp_path / "out", LONG,
                             1000, max_restarts=0)
    job_id = json.loads(ctl(secured, "alice", "--json", "submit", spec).stdout)["id"]
    wait_until("alice's job to run", lambda: '"BUSY"' in ctl(secured, "root", "--json", "workers").stdout,
               120, secured.logs)

    def seen_by(who: str) -> dict:
        [line] = ctl(secured, who, "--json", "workers").stdout.splitlines()
        return json.loads(line)

    assert (seen_by("alice")["job_id"], seen_by("alice")["rank"]) == (job_id, 0)
    assert seen_by("root")["job_id"] == job_id
    bob = seen_by("bob")
    assert (bob["state"], bob["job_id"]) == ("BUSY", ""), bob
    assert "another user's" in ctl(secured, "bob", "workers").stdout
    assert job_id not in ctl(secured, "bob", "workers").stdout
    assert ctl(secured, "alice", "cancel", job_id).returncode == 0
