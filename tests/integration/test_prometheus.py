"""/metrics through the real processes, read with prometheus_client's own parser (so the text
is valid exposition format, not just what our tests grep for): counters of jobs, steps and
tokens, per-rank series labelled with the worker, worker gauges."""
import json
import urllib.request

import pytest

from conftest import REPO, write_spec

parser = pytest.importorskip("prometheus_client.parser", reason="prometheus-client is not "
                             "installed (scripts/deps.sh installs it)")

DEMO_DATA = REPO / "examples" / "data" / "demo.jsonl"


def scrape(http_addr: str) -> dict:
    """{(sample name, sorted labels): value}, and every family's type by name."""
    with urllib.request.urlopen(f"http://{http_addr}/metrics", timeout=30) as res:
        text = res.read().decode()
    samples, types = {}, {}
    for family in parser.text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return {"samples": samples, "types": types}


def test_metrics_parse_and_count_a_job(cluster, tiny_model, tmp_path):
    spec = write_spec(tmp_path / "promjob.yaml", tiny_model, DEMO_DATA, tmp_path / "out",
                      max_steps=4)
    job_id = json.loads(cluster.ctl("--json", "submit", spec, check=True).stdout)["id"]
    assert cluster.wait_state(job_id, {"COMPLETED", "FAILED"})["state"] == "COMPLETED", cluster.logs()

    m = scrape(cluster.http_addr)
    samples, types = m["samples"], m["types"]
    # prometheus_client names a counter family without its _total suffix.
    for counter in ("qlorad_jobs_submitted", "qlorad_jobs_finished", "qlorad_steps",
                    "qlorad_tokens", "qlorad_attempts_requeued"):
        assert types[counter] == "counter", counter
    assert samples[("qlorad_jobs_submitted_total", ())] == 1
    assert samples[("qlorad_jobs_finished_total", (("state", "completed"),))] == 1
    assert samples[("qlorad_jobs_finished_total", (("state", "failed"),))] == 0
    assert samples[("qlorad_steps_total", ())] == 4
    assert samples[("qlorad_tokens_total", ())] > 0
    assert samples[("qlorad_jobs", (("state", "completed"),))] == 1

    # The job just finished: its series are still there, per rank with the worker's name.
    rank0 = (("job", job_id), ("name", "promjob"), ("rank", "0"), ("worker", "test-cpu"))
    assert ("qlorad_job_vram_allocated_bytes", rank0) in samples
    assert ("qlorad_job_vram_peak_bytes", rank0) in samples
    assert samples[("qlorad_job_rank_tokens_per_second", rank0)] > 0
    assert samples[("qlorad_job_step", (("job", job_id), ("name", "promjob")))] == 4
    assert samples[("qlorad_worker_running_ranks", (("worker", "test-cpu"),))] == 0
    assert samples[("qlorad_worker_heartbeat_age_seconds", (("worker", "test-cpu"),))] >= 0
