"""The qlorad package without a server: stub generation, the error when stubs are missing, the
setuptools build hook, spec handling and the proto-to-dataclass conversion."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE_SRC = REPO / "client" / "python"
sys.path.insert(0, str(PACKAGE_SRC))

from qlorad._generate import generate, generate_if_stale  # noqa: E402  (no stubs needed)

generate_if_stale()

from qlorad._stubs import common_pb2  # noqa: E402
from qlorad.client import spec_text  # noqa: E402
from qlorad.types import BestEval, Job, JobState, LogLine, StepMetrics  # noqa: E402


def copy_package(tmp_path: Path) -> Path:
    """The package sources without generated stubs, as a fresh checkout has them."""
    dest = tmp_path / "src"
    shutil.copytree(PACKAGE_SRC / "qlorad", dest / "qlorad",
                    ignore=shutil.ignore_patterns("_gen", "__pycache__"))
    return dest


def run_python(code: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=path, env={"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"},
                          timeout=120)


def test_import_without_stubs_fails_saying_how_to_generate_them(tmp_path):
    src = copy_package(tmp_path)
    res = run_python("from qlorad import Client", src)
    assert res.returncode != 0
    assert "ImportError" in res.stderr
    assert "python -m qlorad._generate" in res.stderr


def test_generate_writes_importable_stubs_that_do_not_shadow_the_package(tmp_path):
    src = copy_package(tmp_path)
    target = generate(REPO / "proto", src / "qlorad" / "_gen")
    names = sorted(p.name for p in target.glob("*.py"))
    assert names == ["__init__.py", "common_pb2.py", "common_pb2_grpc.py", "jobs_pb2.py",
                     "jobs_pb2_grpc.py", "workers_pb2.py", "workers_pb2_grpc.py"]
    # protoc would have written `from qlorad.v1 import ...`, which resolves against this package.
    assert "from qlorad.v1 import" not in (target / "jobs_pb2_grpc.py").read_text()
    res = run_python("import qlorad; c = qlorad.Client('127.0.0.1:1'); print(type(c).__name__)", src)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "Client"


def test_generate_module_entry_point(tmp_path):
    src = copy_package(tmp_path)
    res = subprocess.run([sys.executable, "-m", "qlorad._generate", "--proto-dir", str(REPO / "proto")],
                         capture_output=True, text=True, cwd=src, env={"PYTHONPATH": str(src)},
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert (src / "qlorad" / "_gen" / "v1" / "jobs_pb2_grpc.py").is_file()


def test_stubs_are_made_again_once_a_proto_is_newer(tmp_path):
    protos = tmp_path / "proto"
    shutil.copytree(REPO / "proto", protos)
    out = tmp_path / "gen"
    assert generate_if_stale(protos, out)  # none yet
    assert not generate_if_stale(protos, out)  # up to date
    made = out / "v1" / "jobs_pb2_grpc.py"
    later = made.stat().st_mtime + 5
    os.utime(protos / "qlorad" / "v1" / "common.proto", (later, later))
    assert generate_if_stale(protos, out)  # proto/ changed since


def test_generate_names_where_it_looked_for_the_protos(tmp_path, monkeypatch):
    monkeypatch.setenv("QLORAD_PROTO_DIR", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"jobs\.proto not found under QLORAD_PROTO_DIR=.*empty"):
        generate(None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_wheel_build_runs_the_stub_generation_hook(tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "proto", checkout / "proto")
    shutil.copytree(PACKAGE_SRC, checkout / "client" / "python",
                    ignore=shutil.ignore_patterns("_gen", "__pycache__", "build", "*.egg-info"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path / "dist"), str(checkout / "client" / "python")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = (tmp_path / "dist").glob("qlorad-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("qlorad/client.py", "qlorad/frame.py", "qlorad/plot.py", "qlorad/py.typed",
                     "qlorad/_gen/__init__.py", "qlorad/_gen/v1/__init__.py",
                     "qlorad/_gen/v1/jobs_pb2.py", "qlorad/_gen/v1/jobs_pb2_grpc.py",
                     "qlorad/_gen/v1/common_pb2.pyi"):
        assert required in names, sorted(names)
    # Installed from the wheel alone (no checkout on the path), the client imports and works.
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site),
                          str(wheel)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    res = run_python("import qlorad; print(qlorad.Client('127.0.0.1:1').address)", site)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "127.0.0.1:1"


def test_spec_text_from_each_kind_of_input(tmp_path):
    as_dict = {"name": "x", "train": {"lr": 1e-4, "betas": [0.9, 0.99]}}
    assert json.loads(spec_text(as_dict)) == as_dict  # JSON is YAML
    path = tmp_path / "job.yaml"
    path.write_text("name: y\n")
    assert spec_text(path) == "name: y\n"
    assert spec_text(str(path)) == "name: y\n"
    assert spec_text("name: z\nmodel: {path: /m}\n") == "name: z\nmodel: {path: /m}\n"
    with pytest.raises(FileNotFoundError, match="missing.yml"):
        spec_text(str(tmp_path / "missing.yml"))
    with pytest.raises(TypeError, match="int"):
        spec_text(42)


@pytest.mark.parametrize("cls, message", [(Job, common_pb2.Job), (StepMetrics, common_pb2.StepMetrics),
                                          (LogLine, common_pb2.LogLine),
                                          (BestEval, common_pb2.BestEval)])
def test_dataclasses_have_exactly_the_proto_fields(cls, message):
    assert [f.name for f in dataclasses.fields(cls)] == [f.name for f in message.DESCRIPTOR.fields]


def test_job_from_proto_keeps_values_and_names_the_state():
    message = common_pb2.Job(id="job-1", state=common_pb2.JOB_STATE_FAILED, last_step=2**62,
                             last_loss=1.25, error="data.path: not found")
    job = Job.from_proto(message)
    assert job.state is JobState.FAILED and job.state.terminal
    assert job.last_step == 2**62 and job.last_loss == 1.25 and job.error == "data.path: not found"
    assert "spec_yaml" not in repr(job)  # the whole spec would swamp the repr


def test_unset_optional_fields_are_none():
    step = StepMetrics.from_proto(common_pb2.StepMetrics(step=3, loss=2.0))
    assert step.eval_loss is None and step.eval_perplexity is None
    evaluated = StepMetrics.from_proto(common_pb2.StepMetrics(step=4, eval_loss=0.0,
                                                              eval_perplexity=1.0))
    assert evaluated.eval_loss == 0.0 and evaluated.eval_perplexity == 1.0  # set, though zero
    assert Job.from_proto(common_pb2.Job(id="a")).best is None
    best = Job.from_proto(common_pb2.Job(id="a", best=common_pb2.BestEval(step=5, eval_loss=1.5),
                                         stopped_early=True))
    assert best.best == BestEval(step=5, eval_loss=1.5, checkpoint_path="", adapter_path="")
    assert best.stopped_early


def test_job_state_parse():
    assert JobState.parse("running") is JobState.RUNNING
    assert JobState.parse("Cancelled") is JobState.CANCELLED
    assert JobState.parse(JobState.QUEUED) is JobState.QUEUED
    assert not JobState.RUNNING.terminal
    with pytest.raises(ValueError, match="queued, running, completed, failed, cancelled"):
        JobState.parse("bogus")
