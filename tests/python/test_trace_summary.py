"""bench/parallel/trace_summary.py on a small hand-made Kineto trace: the compute stream's gaps and
families, and --by-op's attribution of kernels to the op that launched them, with each product's
FLOPs counted once per call even when it launched a split-K reduce as well."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "parallel" / "trace_summary.py"


def op(ext, name, ts, dims):
    return {"ph": "X", "cat": "cpu_op", "name": name, "ts": ts, "dur": 5,
            "args": {"External id": ext, "Input Dims": dims}}


def kernel(ext, name, ts, dur, stream=7):
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur,
            "args": {"External id": ext, "stream": stream}}


def summarize(tmp_path, events, *args):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"traceEvents": events}))
    done = subprocess.run([sys.executable, str(SCRIPT), str(path), *args],
                          capture_output=True, text=True, check=True)
    return done.stdout


def test_kernels_are_charged_to_their_op_and_shape(tmp_path):
    m, k, n = 8192, 2048, 512
    events = [
        op(1, "aten::mm", 0, [[m, k], [k, n]]),
        kernel(1, "nvjet_sm90_tst_splitK", 10, 100),
        kernel(1, "cublasLt::splitKreduce_kernel", 110, 10),
        op(2, "aten::mm", 200, [[m, k], [k, n]]),
        kernel(2, "nvjet_sm90_tst_splitK", 200, 100),
        kernel(2, "cublasLt::splitKreduce_kernel", 300, 10),
        op(3, "aten::addmm_", 400, [[m, n], [m, 16], [16, n], [], []]),
        kernel(3, "nvjet_sm90_tss_badd", 400, 40),
        kernel(99, "void qlorad::kernels::cuda::kRope<bf16>", 500, 50),  # no op recorded
    ]
    out = summarize(tmp_path, events, "--steps", "2", "--by-op")
    lines = {line.split("  ")[-1].strip(): line.split() for line in out.splitlines()
             if line.startswith("  ") and ("aten::" in line or "(no op)" in line)}
    mm = lines[f"aten::mm [[{m}, {k}], [{k}, {n}]]"]
    # 220 us over 2 steps; 4 kernels over 2 steps; 2 calls of 2mkn FLOPs in 220 us.
    assert float(mm[0]) == 0.11 and float(mm[1]) == 2
    assert abs(float(mm[2]) - 2 * (2 * m * k * n) / 220e-6 / 1e12) < 0.1
    addmm = lines[f"aten::addmm_ [[{m}, {n}], [{m}, 16], [16, {n}], [], []]"]
    assert abs(float(addmm[2]) - (2 * m * 16 * n) / 40e-6 / 1e12) < 0.1
    assert float(lines["(no op) []"][0]) == 0.03
    assert "ours (qlorad kernels) 0.03" in out


def test_without_by_op_there_is_no_op_table(tmp_path):
    out = summarize(tmp_path, [op(1, "aten::mm", 0, []), kernel(1, "nvjet", 0, 10)], "--steps", "1")
    assert "matmul 0.01" in out
    assert "by launching op" not in out


def test_callers_name_the_nearest_enclosing_op_that_is_not_aten(tmp_path):
    # Named without namespaces: a C++ autograd Function's node by the Function's name.
    def span(name, ts, dur, cat="cpu_op"):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": 2,
                "args": {}}

    fill = op(1, "aten::fill_", 20, [[4, 8]])
    fill.update(pid=1, tid=2)
    copy = op(2, "aten::copy_", 120, [[4, 8], [4, 8]])
    copy.update(pid=1, tid=2)
    events = [
        span("autograd::engine::evaluate_function: RotaryAttentionFunctionBackward", 0, 100),
        span("aten::zeros", 10, 30),  # an aten op between: skipped for the caller
        fill,
        span("torch::autograd::CppNode<qlorad::trainer::(anonymous namespace)::"
             "FusedProjectionFunction>", 110, 50, cat="user_annotation"),
        copy,
        kernel(1, "fill kernel", 20, 10),
        kernel(2, "copy kernel", 130, 10),
    ]
    out = summarize(tmp_path, events, "--steps", "1", "--by-op", "--callers")
    assert "aten::fill_ in bwd RotaryAttentionFunctionBackward [[4, 8]]" in out
    assert "aten::copy_ in FusedProjectionFunction [[4, 8], [4, 8]]" in out
    plain = summarize(tmp_path, events, "--steps", "1", "--by-op")
    assert "aten::fill_ [[4, 8]]" in plain and " in bwd" not in plain
