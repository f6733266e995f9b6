"""bench/context's search and harness, on the CPU: the doubling and bisection against a known
limit, and one real try of qlorad-train on the bench's tiny shape (its JSON and table)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "context"))
import context_bench  # noqa: E402


@pytest.mark.parametrize("limit", [32768, 40000, 65536, 300000, 360448, 524288])
def test_search_finds_the_limit_within_the_granularity(limit):
    tried = []

    def attempt(seq):
        tried.append(seq)
        return seq <= limit

    found = context_bench.double_then_bisect(attempt, 32768, 524288, 8192)
    assert found <= limit < found + 8192 or found == 524288
    assert found % 8192 == 0
    assert len(tried) == len(set(tried))  # no length tried twice
    assert len(tried) <= 5 + 6  # doublings 32K..512K, then log2(256K / 8K) bisections


def test_search_when_the_start_fails_or_nothing_fails():
    assert context_bench.double_then_bisect(lambda seq: False, 32768, 524288, 8192) is None
    tried = []
    assert context_bench.double_then_bisect(lambda seq: tried.append(seq) or True, 1024, 8192, 1024) == 8192
    assert tried == [1024, 2048, 4096, 8192]


def test_one_try_of_the_tiny_shape_on_the_cpu(tmp_path):
    bin_dir = pathlib.Path(os.environ.get("QLORAD_BIN_DIR", ROOT / "build" / "bin"))
    if not (bin_dir / "qlorad-train").exists():
        pytest.skip(f"no qlorad-train in {bin_dir} (set QLORAD_BIN_DIR)")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "context" / "context_bench.py"), "--out", str(out), "--work",
         str(tmp_path / "work"), "--bin", str(bin_dir), "--shape", "tiny", "--device", "cpu", "--no-quant",
         "--systems", "qlorad", "--contexts", "128,256", "--timed-contexts", "256", "--timeout", "300"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, QLORAD_KEEP_ATTENTION="0"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    tries = json.loads((out / "context_bench.json").read_text())["tries"]
    assert [(t["seq"], t["status"]) for t in tries] == [(128, "ok"), (256, "ok")], tries
    assert tries[1]["timed"] and not tries[0]["timed"]
    assert all(t["tokens_per_s"] > 0 and t["estimate_bytes"] > 0 for t in tries)
    assert "longest context trained, qlorad: 256" in proc.stdout
    # The trainer's switches of an A/B run are in the JSON and the table's heading.
    meta = json.loads((out / "context_bench.json").read_text())["meta"]
    assert meta["switches"].get("QLORAD_KEEP_ATTENTION") == "0", meta["switches"]
    assert "QLORAD_BIN_DIR" not in meta["switches"]
    assert "QLORAD_KEEP_ATTENTION=0" in proc.stdout
