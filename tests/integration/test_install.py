"""`cmake --install` (make install PREFIX=...): the installed programs run from PREFIX alone.

The build folder's binaries carry a RUNPATH into the build tree and the virtualenv LibTorch came
from; the installed ones must not: qlorad-train and the operator library reach LibTorch only
through PREFIX/lib/qlorad, relative to themselves (cmake/QloradInstall.cmake). Then the demo job
runs through the installed coordinator, worker and trainer with no LD_LIBRARY_PATH, and again
after PREFIX has moved."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import conftest
from conftest import REPO, Cluster, write_spec

DEMO_DATA = REPO / "examples" / "data" / "demo.jsonl"
PROGRAMS = ("qlorad", "qlorad-worker", "qlorad-train", "qloractl")


def install(prefix: Path) -> subprocess.CompletedProcess:
    build = conftest.BIN.parent
    return subprocess.run(["cmake", "--install", str(build), "--prefix", str(prefix)], capture_output=True,
                          text=True, timeout=600)


def runpath(path: Path) -> list[str]:
    dynamic = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    for line in dynamic.splitlines():
        if "(RUNPATH)" in line or "(RPATH)" in line:
            return line.split("[", 1)[1].rstrip("]").split(":")
    return []


def run_demo_job(bin_dir: Path, root: Path, monkeypatch) -> dict:
    """The demo's tiny job through the programs of bin_dir, started as a user would start them."""
    monkeypatch.setattr(conftest, "BIN", bin_dir)
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    model = root / "tiny"
    subprocess.run([str(bin_dir / "qlorad-train"), "make-tiny-model", "--out", str(model)], check=True,
                   capture_output=True, timeout=120)
    cluster = Cluster(root)
    try:
        cluster.start_coordinator()
        cluster.start_worker(root / "work")
        spec = write_spec(root / "job.yaml", model, DEMO_DATA, root / "out", max_steps=3)
        res = cluster.ctl("--json", "submit", spec, check=True)
        return cluster.wait_state(json.loads(res.stdout)["id"], {"COMPLETED", "FAILED"})
    finally:
        cluster.stop()


def test_installed_programs_run_from_the_prefix_alone(tmp_path, monkeypatch):
    prefix = tmp_path / "prefix"
    res = install(prefix)
    assert res.returncode == 0, res.stdout + res.stderr

    for name in PROGRAMS:
        assert os.access(prefix / "bin" / name, os.X_OK), name
    # Shell completion where bash-completion and zsh look under a prefix (client/cli/README.md).
    completions = REPO / "client" / "cli" / "completions"
    for installed, source in ((prefix / "share/bash-completion/completions/qloractl", "qloractl.bash"),
                              (prefix / "share/zsh/site-functions/_qloractl", "_qloractl")):
        assert installed.read_text() == (completions / source).read_text(), installed
    lib = prefix / "lib" / "qlorad"
    assert (lib / "libqlorad_ops.so").is_file()
    assert (lib / "torch" / "lib" / "libtorch.so").exists(), "LibTorch is reached through PREFIX/lib/qlorad/torch"
    assert (prefix / "share" / "qlorad" / "deploy" / "systemd" / "qlorad.service").is_file()

    # Nothing of the build tree or of wherever LibTorch was found: only paths relative to PREFIX.
    for path in (prefix / "bin" / "qlorad-train", lib / "libqlorad_ops.so"):
        entries = runpath(path)
        assert entries, f"{path} has no RUNPATH"
        assert all(e.startswith("$ORIGIN") for e in entries), (path, entries)

    job = run_demo_job(prefix / "bin", tmp_path / "run1", monkeypatch)
    assert job["state"] == "COMPLETED", job

    # The install is relocatable: the same files under another name still run the job.
    moved = tmp_path / "moved"
    shutil.move(str(prefix), str(moved))
    version = subprocess.run([str(moved / "bin" / "qlorad-train"), "--help"], capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0, version.stderr
    job = run_demo_job(moved / "bin", tmp_path / "run2", monkeypatch)
    assert job["state"] == "COMPLETED", job
