"""bench/service in its small mode: the bench itself works (a coordinator, a CPU worker, a job
with and without 50 subscribers) and every subscriber received every step. Speed is the bench's
to report, never this test's to judge."""
import json
import subprocess
import sys

from conftest import BIN, REPO, binary

BENCH = REPO / "bench" / "service" / "service_bench.py"


def test_the_service_bench_delivers_every_step_to_every_subscriber(tmp_path):
    binary("qlorad")  # fails with how to build when the binaries are missing
    out = tmp_path / "result.json"
    res = subprocess.run([sys.executable, str(BENCH), "--bin", str(BIN), "--subscribers", "50",
                          "--steps", "100", "--work", str(tmp_path / "work"), "--json", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text())
    baseline, followed = result["runs"]
    assert baseline["subscribers"] == 0 and baseline["steps"] == 100
    assert followed["subscribers"] == 50 and followed["steps"] == 100
    delivery = followed["delivery"]
    assert delivery["streams"] == 50 and delivery["complete"] == 50, delivery
    assert delivery["messages"] == delivery["expected_messages"] == 5000, delivery
    assert delivery["duplicated"] == 0 and delivery["failed_count"] == 0, delivery
    for run in (baseline, followed):
        assert run["steps_per_s"] > 0 and run["coordinator_threads_peak"] > 0
        assert run["coordinator_rss_peak_mib"] > 0
    assert "50/50 subscribers received every one of 100 steps" in res.stdout, res.stdout
    # 50 streams fit the default caps: the coordinator ran with its defaults.
    assert result["stream_cap_flags"] == []
