"""examples/notebook.ipynb, executed with nbclient in a real Jupyter kernel against a real
coordinator and CPU worker on loopback: every cell runs without an error, and what it shows (the
job it submitted, its DataFrame's rows, the final loss, the evaluated steps, the figures) are the
job's own values as the coordinator has them. The executed notebook is kept in
tests/artifacts/notebook/ (QLORAD_TEST_ARTIFACTS moves it)."""
import os
import re
from pathlib import Path

import pytest

from conftest import REPO, python_client

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (scripts/deps.sh)")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (scripts/deps.sh)")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (scripts/deps.sh)")
pytest.importorskip("pandas", reason="pandas is not installed (scripts/deps.sh)")
pytest.importorskip("matplotlib", reason="matplotlib is not installed (scripts/deps.sh)")

qlorad = python_client()

NOTEBOOK = REPO / "examples" / "notebook.ipynb"
ARTIFACTS = Path(os.environ.get("QLORAD_TEST_ARTIFACTS", REPO / "tests" / "artifacts")) / "notebook"
DEMO_DATA = REPO / "examples" / "data" / "demo.jsonl"
STEPS = 6


def write_notebook_spec(path: Path, model: Path, out: Path) -> Path:
    """The demo job made small: the session's tiny model, 6 fp32 steps, evaluated every 3."""
    path.write_text(f"""name: notebook
model: {{path: {model}}}
lora: {{r: 4, alpha: 8}}
data: {{path: {DEMO_DATA}, format: text, max_seq_len: 64, validation: 0.2}}
train: {{max_steps: {STEPS}, micro_batch_size: 2, lr: 2.0e-3, warmup_steps: 1, precision: fp32,
        eval_steps: 3, eval_batches: 2}}
scheduling: {{max_restarts: 0}}
checkpoint: {{every_steps: 0, output_dir: {out}}}
""")
    return path


def text_of(cell) -> str:
    """Everything a code cell printed or showed as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def mimetypes(cell) -> set:
    return {m for out in cell.get("outputs", []) for m in out.get("data", {})}


def test_the_example_notebook_runs_against_a_real_service(cluster, tiny_model, tmp_path,
                                                           monkeypatch):
    spec = write_notebook_spec(tmp_path / "notebook.yaml", tiny_model, tmp_path / "out")
    # The kernel is a child process: it inherits these (and finds the client on PYTHONPATH).
    monkeypatch.setenv("QLORAD_ADDRESS", cluster.addr)
    monkeypatch.setenv("QLORAD_JOB_SPEC", str(spec))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO / "client" / "python"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    runner = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        runner.execute()
    except nbclient.exceptions.CellExecutionError as e:
        raise AssertionError(f"a notebook cell failed:\n{e}\n{cluster.logs()}") from None
    finally:
        # Kept, executed as far as it went, for a person to open.
        nbformat.write(nb, ARTIFACTS / "notebook.ipynb")

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(o["output_type"] != "error" for c in code for o in c.get("outputs", []))
    submitted = re.search(r"submitted (job-\S+) \(notebook, 6 steps\)", text_of(code[0]))
    assert submitted, text_of(code[0])
    job_id = submitted.group(1)

    # What the notebook showed against what the coordinator has.
    with qlorad.Client(cluster.addr) as client:
        job = client.get(job_id)
        steps = [m for m in client.metrics(job_id) if m.rank == 0]
    assert job.state is qlorad.JobState.COMPLETED, job.error
    assert [m.step for m in steps] == list(range(1, STEPS + 1))
    watched = text_of(code[1])
    assert f"job {job_id} COMPLETED at step {STEPS} (loss {job.last_loss:.4f})" in watched
    assert "image/png" in mimetypes(code[1]), "the live loss plot was not shown"
    summary = text_of(code[2])
    assert f"rows: {STEPS}, steps: {STEPS}, final loss: {steps[-1].loss:.6f}" in summary, summary
    evaluated = [m.step for m in steps if m.eval_loss is not None]
    assert evaluated == [3, 6] and f"evaluated at steps {evaluated}" in text_of(code[3])
    assert "image/png" in mimetypes(code[4]), f"the figure was not shown: {code[4].get('outputs')}"
    assert job.adapter_path and job.adapter_path in text_of(code[5])
