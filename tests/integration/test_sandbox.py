"""The path sandbox through the service (issue #19): a worker's specs read only under its read
roots and write only under its write root. The coordinator refuses at submit what no registered
worker may run (paths as written: `..`, absolute paths outside); the worker checks again with
symbolic links followed before it starts the trainer. Relative paths still resolve against the
worker's --work-dir. Placement follows the roots too: a job goes only to a worker whose roots
allow its paths."""
import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, Cluster, wait_for_line, write_spec

DEMO_DATA = REPO / "examples" / "data" / "demo.jsonl"


def spec(path: Path, model, data, out) -> Path:
    path.write_text(
        f"name: {path.stem}\nmodel: {{path: {model}}}\nlora: {{r: 4, alpha: 8}}\n"
        f"data: {{path: {data}, format: text, max_seq_len: 64}}\n"
        "train: {max_steps: 2, micro_batch_size: 2, lr: 2.0e-3, warmup_steps: 1, precision: fp32}\n"
        f"scheduling: {{max_restarts: 2}}\ncheckpoint: {{every_steps: 0, output_dir: {out}}}\n")
    return path


@pytest.fixture()
def sandboxed(tmp_path, tiny_model):
    """A coordinator and a worker that may read the tiny model's folder and the demo data's, and
    write under its work dir (the default). tmp_path/secret holds readable training data outside
    every root, so a sandbox that let it through would run the job."""
    secret = tmp_path / "secret"
    secret.mkdir()
    shutil.copy(DEMO_DATA, secret / "train.jsonl")
    c = Cluster(tmp_path)
    c.start_coordinator()
    c.start_worker(tmp_path / "work", roots=["--read-root", tiny_model.parent,
                                             "--read-root", DEMO_DATA.parent])
    wait_for_line(c.worker_log, r"registered with", c.worker)
    yield c
    c.stop()


def test_relative_paths_resolve_in_the_work_dir(sandboxed, tiny_model, tmp_path):
    res = sandboxed.ctl("--json", "submit", spec(tmp_path / "rel.yaml", tiny_model, DEMO_DATA, "runs/rel"))
    assert res.returncode == 0, res.stderr
    job = sandboxed.wait_state(json.loads(res.stdout)["id"], {"COMPLETED", "FAILED"})
    assert job["state"] == "COMPLETED", sandboxed.logs()
    assert (tmp_path / "work" / "runs" / "rel" / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize("field,model,data,out", [
    ("data.path", None, "{tmp}/secret/train.jsonl", "runs/x"),
    ("data.path", None, "../secret/train.jsonl", "runs/x"),
    ("model.path", "/", None, "runs/x"),
    ("checkpoint.output_dir", None, None, "../escaped"),
    ("checkpoint.output_dir", None, None, "{tmp}/secret/out"),
])
def test_a_path_outside_the_roots_is_refused_at_submit(sandboxed, tiny_model, tmp_path,
                                                       field, model, data, out):
    fill = lambda v, default: str(default) if v is None else v.format(tmp=tmp_path)
    path = spec(tmp_path / "escape.yaml", fill(model, tiny_model), fill(data, DEMO_DATA), fill(out, ""))
    res = sandboxed.ctl("submit", path)
    assert res.returncode == 1, res.stdout
    assert f"INVALID_ARGUMENT: {field}: " in res.stderr, res.stderr
    verb = "write" if field.startswith("checkpoint") else "read"
    assert f"is outside the folders this worker may {verb}: " in res.stderr, res.stderr
    roots = [str(tmp_path / "work")] + ([] if verb == "write" else [str(tiny_model.parent)])
    assert all(r in res.stderr for r in roots), res.stderr
    assert "(worker test-cpu)" in res.stderr, res.stderr
    assert sandboxed.ctl("--json", "jobs", check=True).stdout.strip() == ""
    assert not (tmp_path / "escaped").exists()


def test_a_symbolic_link_out_of_a_root_is_refused_by_the_worker(sandboxed, tiny_model, tmp_path):
    # The coordinator sees only "data/train.jsonl" under the work dir; the worker sees the link.
    (tmp_path / "work" / "data").symlink_to(tmp_path / "secret", target_is_directory=True)
    res = sandboxed.ctl("--json", "submit", spec(tmp_path / "link.yaml", tiny_model, "data/train.jsonl", "runs/link"))
    assert res.returncode == 0, res.stderr
    job_id = json.loads(res.stdout)["id"]
    job = sandboxed.wait_state(job_id, {"COMPLETED", "FAILED"})
    assert job["state"] == "FAILED", sandboxed.logs()
    assert "data.path: data/train.jsonl (resolves to " in job["error"], job
    assert str(tmp_path / "secret" / "train.jsonl") in job["error"], job
    assert job["attempt"] == 0 and job.get("restarts", 0) == 0, "a refused path is not retried"
    # Refused before the trainer ran: no spec written for it, no outputs.
    assert not (tmp_path / "work" / "jobs" / job_id).exists()
    assert not (tmp_path / "work" / "runs" / "link").exists()


def test_a_job_waits_for_a_worker_whose_roots_allow_it(tmp_path, tiny_model):
    """Two workers with different --read-root: "wide" may read the tiny model, "narrow" may not.
    With wide busy and narrow free, a job on the tiny model waits in line instead of going to
    narrow (whose sandbox would refuse it: a failed job), then runs on wide."""
    c = Cluster(tmp_path)
    try:
        c.start_coordinator()
        wide_log = "wide.log"
        c.start_worker(tmp_path / "wide", "wide", wide_log,
                       roots=["--read-root", tiny_model.parent, "--read-root", DEMO_DATA.parent,
                              "--write-root", tmp_path])
        wait_for_line(tmp_path / wide_log, r"registered with", c.worker)
        busy = write_spec(tmp_path / "busy.yaml", tiny_model, DEMO_DATA, tmp_path / "busy",
                          max_steps=1000000)
        busy_id = json.loads(c.ctl("--json", "submit", busy, check=True).stdout)["id"]
        wide_id = c.wait_state(busy_id, {"RUNNING"})["worker_id"]

        c.start_worker(tmp_path / "narrow", "narrow", "narrow.log",
                       roots=["--read-root", tmp_path / "narrow", "--read-root", DEMO_DATA.parent,
                              "--write-root", tmp_path])
        wait_for_line(tmp_path / "narrow.log", r"registered with", c.worker)
        # A job only narrow may run (its own copy of the model): once it has run, narrow is
        # attached and free, while wide still runs the busy job.
        shutil.copytree(tiny_model, tmp_path / "narrow" / "model")
        probe = write_spec(tmp_path / "probe.yaml", tmp_path / "narrow" / "model", DEMO_DATA,
                           tmp_path / "probe", max_steps=2)
        probe_id = json.loads(c.ctl("--json", "submit", probe, check=True).stdout)["id"]
        probed = c.wait_state(probe_id, {"COMPLETED", "FAILED"})
        assert probed["state"] == "COMPLETED" and probed["worker_id"] != wide_id, probed

        job = write_spec(tmp_path / "wants-wide.yaml", tiny_model, DEMO_DATA, tmp_path / "out",
                         max_steps=2)
        submitted = json.loads(c.ctl("--json", "submit", job, check=True).stdout)
        # The submit's plan saw narrow free and left the job in line for wide.
        assert submitted["state"] == "QUEUED", (submitted, c.logs())
        assert submitted["queue_position"] == 1, submitted

        c.ctl("cancel", busy_id, check=True)
        done = c.wait_state(submitted["id"], {"COMPLETED", "FAILED"})
        assert done["state"] == "COMPLETED", (done, c.logs())
        assert done["worker_id"] == wide_id, (done, wide_id)
    finally:
        c.stop()
