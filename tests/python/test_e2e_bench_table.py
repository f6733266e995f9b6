"""bench/e2e's table marks runs whose timed steps were unsteady, and the ratios drawn from them, on
real results: the 2026-12-07 H100 call in which Unsloth's steps spread 11% and 45% (its medians
163.1 and 288.7 ms for jobs that took 116.8 and 159.0 ms in an earlier call, whose steps spread
under 1%)."""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "e2e"))
import e2e_bench  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def table(name, capsys):
    data = json.loads((RESULTS / name).read_text())
    runs = [dict(r, spread=e2e_bench.spread(r["step_s"])) if r["status"] == "ok" else r
            for r in data["runs"]]
    e2e_bench.print_table(runs, data["meta"])
    return capsys.readouterr().out.splitlines()


def lines_with(lines, *words):
    return [line for line in lines if all(w in line for w in words)]


def test_spread_is_the_interquartile_range_over_the_median():
    assert e2e_bench.spread([0.1, 0.1, 0.1, 0.1]) == 0
    assert e2e_bench.spread([0.1, 0.1, 0.1]) is None  # too few steps to tell
    steady = [0.1021, 0.1019, 0.1017, 0.1016, 0.1019, 0.1022, 0.1017, 0.1039]
    erratic = [0.1641, 0.1633, 0.1429, 0.1805, 0.1454, 0.1630, 0.1573, 0.1670]
    assert e2e_bench.spread(steady) < 0.01
    assert e2e_bench.spread(erratic) > e2e_bench.UNSTEADY_SPREAD


def test_unsteady_runs_and_their_ratios_are_marked(capsys):
    lines = table("2026-12-07-h100-c32a380-e2e_bench-1b.json", capsys)
    unsteady = lines_with(lines, "UNSTEADY: steps spread")
    assert len(unsteady) == 2 and all("unsloth" in line for line in unsteady), lines
    assert "steps spread 10.9%" in unsteady[0]
    ratios = lines_with(lines, "vs unsloth")
    assert len(ratios) == 2 and all("not to be quoted" in line for line in ratios), lines
    assert not lines_with(lines, "qlorad ", "UNSTEADY: steps spread")


def test_steady_runs_are_not_marked(capsys):
    lines = table("2026-12-07-h100-b72cef7-e2e_bench-1b.json", capsys)
    assert not lines_with(lines, "UNSTEADY"), lines
    assert len(lines_with(lines, "vs unsloth: tok/s 1.13x")) == 1, lines


def runs_of(name, ckpt="off"):
    data = json.loads((RESULTS / name).read_text())
    return {r["system"]: dict(r, spread=e2e_bench.spread(r["step_s"]))
            for r in data["runs"] if r["ckpt"] == ckpt}, data["meta"]


def test_rounds_quote_the_median_of_their_steady_runs(capsys):
    """Two rounds: Unsloth erratic in the first (c32a380's run), steady in the second (b72cef7's):
    the ratio takes the steady round alone, and is quotable."""
    erratic, meta = runs_of("2026-12-07-h100-c32a380-e2e_bench-1b.json")
    steady, _ = runs_of("2026-12-07-h100-b72cef7-e2e_bench-1b.json")
    runs = [dict(source[system], round=n) for n, source in ((1, erratic), (2, steady))
            for system in ("qlorad", "unsloth")]
    e2e_bench.print_table(runs, meta)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines_with(lines, "unsloth r1", "UNSTEADY")) == 1, lines
    assert len(lines_with(lines, "unsloth r2")) == 1 and not lines_with(lines, "unsloth r2", "UNSTEADY")
    assert lines_with(lines, "unsloth: 116.8 ms/step, the median of 1 of 2 rounds steady"), lines
    # qlorad: both rounds steady (101.9 and 103.0 ms); the lower median of two is the first.
    assert lines_with(lines, "qlorad: 101.9 ms/step, the median of 2 of 2 rounds steady"), lines
    ratios = lines_with(lines, "vs unsloth")
    assert len(ratios) == 1 and "tok/s 1.15x" in ratios[0] and "not to be quoted" not in ratios[0]


def test_rounds_all_unsteady_stay_unquotable(capsys):
    erratic, meta = runs_of("2026-12-07-h100-c32a380-e2e_bench-1b.json")
    runs = [dict(erratic[system], round=n) for n in (1, 2) for system in ("qlorad", "unsloth")]
    e2e_bench.print_table(runs, meta)
    lines = capsys.readouterr().out.splitlines()
    assert lines_with(lines, "unsloth: 163.1 ms/step, the median of 0 of 2 rounds steady"), lines
    ratios = lines_with(lines, "vs unsloth")
    assert len(ratios) == 1 and "not to be quoted" in ratios[0]
