"""Placement by GPU memory, with real processes: two workers report GPUs of different memory
(qlorad-worker's test hook --test-gpu-memory-bytes: reported to the coordinator, training stays
on the CPU), the coordinator reads the tiny model's config.json (an absolute model.path), and
places a job only where its memory estimate fits. A job no worker has the memory for stays
QUEUED with a reason `qloractl status` shows, and holds back no other job."""
import json
import re
import subprocess
from pathlib import Path

from conftest import Cluster, binary, wait_for_line, wait_until, write_spec

GIB = 2**30
# The CUDA context (0.5 GiB) alone nearly fills the small one: the tiny model's step does not fit.
SMALL, BIG = 520 * 2**20, 64 * GIB


def submit(cluster: Cluster, spec: Path) -> str:
    return json.loads(cluster.ctl("--json", "submit", spec, check=True).stdout)["id"]


def needed(spec: Path) -> int:
    """The GPU memory the trainer's estimate says the job needs (what the coordinator computes)."""
    out = subprocess.run([str(binary("qlorad-train")), "estimate", str(spec), "--json"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return json.loads(out)["device_bytes_needed"]


def test_jobs_go_where_their_memory_estimate_fits(tmp_path, tiny_model):
    cluster = Cluster(tmp_path)
    try:
        cluster.start_coordinator()
        cluster.start_worker(tmp_path / "work-small", "small", "worker-small.log",
                             "--test-gpu-memory-bytes", str(SMALL))
        cluster.start_worker(tmp_path / "work-big", "big", "worker-big.log", "--test-gpu-memory-bytes", str(BIG))
        ids = {}
        for name in ("small", "big"):
            m = wait_for_line(cluster.coordinator_log, rf"worker {name} registered as (worker-\S+)",
                              cluster.coordinator)
            ids[name] = m.group(1)

        data = tmp_path / "data.jsonl"
        data.write_text("".join(json.dumps({"text": f"row {i} of the placement test"}) + "\n" for i in range(16)))
        # Too large for either GPU: 16 x 1M tokens per micro-batch. It stays queued, and says why.
        huge_spec = write_spec(tmp_path / "huge.yaml", tiny_model, data, tmp_path / "huge-out", max_steps=2)
        huge_spec.write_text(huge_spec.read_text().replace("max_seq_len: 64", "max_seq_len: 1048576")
                             .replace("micro_batch_size: 2", "micro_batch_size: 16"))
        assert needed(huge_spec) > BIG
        huge = submit(cluster, huge_spec)
        # Fits the big GPU only.
        fits_spec = write_spec(tmp_path / "fits.yaml", tiny_model, data, tmp_path / "fits-out", max_steps=2)
        assert SMALL < needed(fits_spec) < BIG
        fits = submit(cluster, fits_spec)

        done = cluster.wait_state(fits, ("COMPLETED", "FAILED", "CANCELLED"))
        assert done["state"] == "COMPLETED", cluster.logs()
        assert done["worker_id"] == ids["big"], done

        job = cluster.job(huge)
        assert job["state"] == "QUEUED", job
        need_gib = f"{needed(huge_spec) / GIB:.1f} GiB"
        assert job["waiting_reason"] == (
            f"waiting for a worker with at least {need_gib} of GPU memory (its memory estimate); "
            f"the largest registered GPU has 64.0 GiB"), job
        status = cluster.ctl("status", huge, check=True).stdout
        assert re.search(r"^waiting\s+waiting for a worker with at least", status, re.M), status
        logs = cluster.ctl("logs", huge, check=True).stdout
        assert "memory estimate: " in logs and f"placed only on GPU workers of at least {need_gib}" in logs, logs
        cluster.ctl("cancel", huge, check=True)
        wait_until("the huge job cancelled", lambda: cluster.job(huge)["state"] == "CANCELLED")
    finally:
        cluster.stop()


def test_a_relative_model_path_is_left_to_the_trainer(tmp_path, tiny_model):
    """The coordinator cannot see the worker's --work-dir: it places the job unchecked and says so."""
    cluster = Cluster(tmp_path)
    try:
        cluster.start_coordinator()
        work = tmp_path / "work"
        work.mkdir()
        (work / "model").symlink_to(tiny_model)
        cluster.start_worker(work, "small", "worker-small.log", "--test-gpu-memory-bytes", str(SMALL))
        data = tmp_path / "data.jsonl"
        data.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(8)))
        spec = write_spec(tmp_path / "rel.yaml", Path("model"), data, tmp_path / "rel-out", max_steps=1)
        job_id = submit(cluster, spec)
        done = cluster.wait_state(job_id, ("COMPLETED", "FAILED", "CANCELLED"))
        assert done["state"] == "COMPLETED", cluster.logs()
        logs = cluster.ctl("logs", job_id, check=True).stdout
        assert "memory estimate: not made by the coordinator: model.path model is relative" in logs, logs
    finally:
        cluster.stop()
