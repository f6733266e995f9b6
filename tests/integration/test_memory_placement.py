"""Placement by GPU memory, with real processes: two workers report GPUs of different memory
(qlorad-worker's test hook --test-gpu-memory-bytes: reported to the coordinator, training stays
on the CPU), the coordinator reads the tiny model's config.json (an absolute model.path), and
places a job only where its memory estimate fits. A job no worker has the memory for stays
QUEUED with a reason `qloractl status` shows, and holds back no other job."""
import json
import re
import subprocess
from pathlib import Path

from conftest import Cluster, binary, http_get, wait_for_line, wait_until, write_spec

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


def start_workers(cluster: Cluster, tmp_path: Path, workers: dict, env: dict | None = None) -> dict:
    """One worker per name with its flags (`env` for the first's environment, and its trainers'),
    and the worker ids the coordinator gave them, by name."""
    for i, (name, flags) in enumerate(workers.items()):
        cluster.start_worker(tmp_path / f"work-{name}", name, f"worker-{name}.log", *flags,
                             env=env if i == 0 else None)
    return {name: wait_for_line(cluster.coordinator_log, rf"worker {name} registered as (worker-\S+)",
                                cluster.coordinator).group(1) for name in workers}


def test_jobs_go_where_their_memory_estimate_fits(tmp_path, tiny_model):
    cluster = Cluster(tmp_path)
    try:
        cluster.start_coordinator()
        ids = start_workers(cluster, tmp_path, {"small": ["--test-gpu-memory-bytes", SMALL],
                                                "big": ["--test-gpu-memory-bytes", BIG]})

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


def test_jobs_go_where_the_free_memory_fits(tmp_path, tiny_model):
    """Workers report free GPU memory too (--test-gpu-free-memory-bytes): a GPU whose total would
    fit, and would be the best fit, but whose memory other processes hold is passed over; the
    figure shows on /api/workers, the workers page and /metrics, and a waiting reason names it."""
    cluster = Cluster(tmp_path)
    try:
        cluster.start_coordinator()
        ids = start_workers(cluster, tmp_path, {
            "held": ["--test-gpu-memory-bytes", 24 * GIB, "--test-gpu-free-memory-bytes", SMALL],
            "roomy": ["--test-gpu-memory-bytes", BIG, "--test-gpu-free-memory-bytes", BIG // 2]})

        workers = {w["name"]: w for w in json.loads(http_get(cluster.http_addr, "/api/workers"))["workers"]}
        assert workers["held"]["devices"][0]["free_memory_bytes"] == SMALL, workers
        assert workers["roomy"]["devices"][0]["free_memory_bytes"] == BIG // 2, workers
        assert "32.00 GiB free of 64.00 GiB" in http_get(cluster.http_addr, "/workers")
        metrics = http_get(cluster.http_addr, "/metrics")
        assert re.search(r'^qlorad_worker_device_free_memory_bytes\{worker="held",[^}]*\} 545259520$',
                         metrics, re.M), metrics

        data = tmp_path / "data.jsonl"
        data.write_text("".join(json.dumps({"text": f"row {i} of the free memory test"}) + "\n" for i in range(16)))
        fits_spec = write_spec(tmp_path / "fits.yaml", tiny_model, data, tmp_path / "fits-out", max_steps=2)
        assert SMALL < needed(fits_spec) < 24 * GIB
        fits = submit(cluster, fits_spec)
        done = cluster.wait_state(fits, ("COMPLETED", "FAILED", "CANCELLED"))
        assert done["state"] == "COMPLETED", cluster.logs()
        assert done["worker_id"] == ids["roomy"], done

        # More than any GPU has free, though the roomy one's total would hold it: the first
        # context (doubling) whose estimate lands between the two.
        huge_spec = write_spec(tmp_path / "huge.yaml", tiny_model, data, tmp_path / "huge-out", max_steps=2)
        base = huge_spec.read_text().replace("micro_batch_size: 2", "micro_batch_size: 16")
        for seq in (2**k for k in range(12, 24)):
            huge_spec.write_text(base.replace("max_seq_len: 64", f"max_seq_len: {seq}"))
            if BIG // 2 < needed(huge_spec) < BIG:
                break
        else:
            raise AssertionError("no max_seq_len puts the estimate between 32 and 64 GiB")
        huge = submit(cluster, huge_spec)
        job = cluster.job(huge)
        assert job["state"] == "QUEUED", job
        assert job["waiting_reason"].endswith(
            "the registered GPU with the most free memory has 32.0 GiB free of 64.0 GiB"), job
        cluster.ctl("cancel", huge, check=True)
    finally:
        cluster.stop()


def test_a_job_its_trainer_refuses_for_memory_moves_to_a_worker_with_room(tmp_path, tiny_model):
    """The small worker said it had room, but its trainer finds 1 MiB free (the trainer's test hook
    QLORAD_TEST_FREE_MEMORY_BYTES: another process took the memory since the worker measured) and
    refuses the job before loading it. The coordinator moves the job to the big worker, spending no
    restart, and it completes there."""
    cluster = Cluster(tmp_path)
    try:
        cluster.start_coordinator()
        ids = start_workers(cluster, tmp_path, {
            "small": ["--test-gpu-memory-bytes", 24 * GIB, "--test-gpu-free-memory-bytes", 24 * GIB],
            "big": ["--test-gpu-memory-bytes", BIG, "--test-gpu-free-memory-bytes", BIG]},
            env={"QLORAD_TEST_FREE_MEMORY_BYTES": str(2**20)})
        data = tmp_path / "data.jsonl"
        data.write_text("".join(json.dumps({"text": f"row {i} of the refusal test"}) + "\n" for i in range(16)))
        spec = write_spec(tmp_path / "moved.yaml", tiny_model, data, tmp_path / "moved-out", max_steps=2)
        job_id = submit(cluster, spec)
        done = cluster.wait_state(job_id, ("COMPLETED", "FAILED", "CANCELLED"))
        assert done["state"] == "COMPLETED", cluster.logs()
        assert done["worker_id"] == ids["big"], done
        assert done.get("restarts", 0) == 0, done
        logs = cluster.ctl("logs", job_id, check=True).stdout
        # The best fit was the small GPU; its trainer refused, naming the free memory it found.
        assert "assigned to worker small" in logs and "the memory estimate of this job is" in logs, logs
        assert "was refused by worker small for GPU memory" in logs, logs
    finally:
        cluster.stop()
