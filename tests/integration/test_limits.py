"""The coordinator's limits against real processes on loopback (issue 19)."""
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
