"""Fixtures that run the real processes: qlorad, qlorad-worker, qlorad-train and qloractl from
the build folder (QLORAD_BIN_DIR), on loopback ports the coordinator picks itself."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("QLORAD_BIN_DIR", REPO / "build" / "bin"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a soak that takes minutes (deselect with -m 'not slow')")


def binary(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build first (make build) or set QLORAD_BIN_DIR")
    return path


def python_client():
    """The Python client package (client/python), its generated stubs made first if missing or
    older than proto/."""
    sys.path.insert(0, str(REPO / "client" / "python"))
    from qlorad._generate import generate_if_stale

    generate_if_stale()
    import qlorad

    return qlorad


def http_get(addr: str, path: str) -> str:
    """The body of http://addr/path (the coordinator's dashboard data and /metrics)."""
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=30) as res:
        return res.read().decode()


def wait_until(what: str, predicate, timeout: float = 60.0, on_fail=lambda: ""):
    """predicate()'s first truthy value, polled until `timeout` s; else an AssertionError naming
    `what`, followed by on_fail() (the daemons' logs, say)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_fail()}")


def wait_for_line(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = 20.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            m = re.search(pattern, log.read_text(errors="replace"))
            if m:
                return m
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"no line matching {pattern!r} in {log} after {timeout}s:\n{log.read_text()}")


class Cluster:
    """A coordinator and one CPU worker, stopped at teardown."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.addr = ""
        self.http_addr = ""
        self.ctl_flags: list = []  # qloractl flags every ctl call passes (a token, a CA)

    def _spawn(self, args, log_name, env=None):
        log = self.root / log_name
        proc = subprocess.Popen([str(a) for a in args], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                env=None if env is None else {**os.environ, **env})
        self.procs.append(proc)
        return proc, log

    def start_coordinator(self, *flags, listen="127.0.0.1:0", log_name="qlorad.log",
                          insecure_local=True):
        """qlorad on free loopback ports (gRPC and HTTP), with any further `flags`; `listen`
        names the gRPC address instead (a restart on the address the workers know). Calls need
        no token (--insecure-local) unless insecure_local is False (test_auth.py)."""
        local = ["--insecure-local"] if insecure_local else []
        proc, log = self._spawn([binary("qlorad"), "--listen", listen, "--http", "127.0.0.1:0",
                                 "--db", self.root / "qlorad.db", *local, *flags], log_name)
        self.coordinator, self.coordinator_log = proc, log
        m = wait_for_line(log, r"listening on (127\.0\.0\.1:\d+) \(http (127\.0\.0\.1:\d+)\)", proc)
        self.addr, self.http_addr = m.group(1), m.group(2)
        return self

    def start_worker(self, work_dir: Path, name="test-cpu", log_name="worker.log", *flags, roots=None, env=None):
        """A CPU worker. Its specs may read the whole pytest temp tree (the session's tiny model
        lives there) and the repository (the demo data), and write under this test's folder;
        `roots` gives its --read-root/--write-root flags instead; `env` adds variables to its
        environment, which its trainers inherit."""
        work_dir.mkdir(parents=True, exist_ok=True)
        if roots is None:
            roots = ["--read-root", self.root.parent, "--read-root", REPO, "--write-root", self.root]
        proc, log = self._spawn([binary("qlorad-worker"), "--coordinator", self.addr, "--cpu",
                                 "--name", name, "--work-dir", work_dir,
                                 "--grace-period-s", "5", *roots, *flags], log_name, env)
        self.worker, self.worker_log = proc, log
        return self

    def ctl(self, *args, timeout=300, check=False) -> subprocess.CompletedProcess:
        cmd = [str(binary("qloractl")), "--server", self.addr, *map(str, self.ctl_flags), *map(str, args)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{cmd} -> {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}")
        return res

    def job(self, job_id: str) -> dict:
        return json.loads(self.ctl("--json", "status", job_id, check=True).stdout)

    def wait_state(self, job_id: str, states, timeout=240.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            time.sleep(0.2)
        raise AssertionError(f"{job_id} never reached {states}: {job}\n{self.logs()}")

    def logs(self) -> str:
        out = []
        for log in sorted(self.root.glob("*.log")):
            out.append(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def kill_machine(proc: subprocess.Popen):
    """A worker's machine is lost: the worker and its trainers die with SIGKILL."""
    orphans = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for pid in orphans:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "tiny"
    subprocess.run([str(binary("qlorad-train")), "make-tiny-model", "--out", str(out)], check=True,
                   capture_output=True, timeout=120)
    return out


@pytest.fixture()
def cluster(tmp_path):
    c = Cluster(tmp_path)
    c.start_coordinator()
    c.start_worker(tmp_path / "work")
    yield c
    c.stop()


def write_spec(path: Path, model: Path, data: Path, out: Path, **train) -> Path:
    steps = train.pop("max_steps", 6)
    lines = [
        f"name: {path.stem}",
        f"model: {{path: {model}}}",
        "quantization: {type: nf4, double_quant: true, block_size: 64}",
        "lora: {r: 4, alpha: 8}",
        f"data: {{path: {data}, format: text, max_seq_len: 64}}",
        f"train: {{max_steps: {steps}, micro_batch_size: 2, lr: 2.0e-3, warmup_steps: 1, precision: fp32"
        + "".join(f", {k}: {v}" for k, v in train.items()) + "}",
        "scheduling: {max_restarts: 0}",
        f"checkpoint: {{every_steps: 0, output_dir: {out}}}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def checkpointed_spec(path: Path, model: Path, data: Path, out: Path, steps: int, every: int,
                      max_restarts: int) -> Path:
    """write_spec's job with a checkpoint every `every` steps (the newest 2 kept) and room for
    `max_restarts` retries."""
    write_spec(path, model, data, out, max_steps=steps)
    text = path.read_text()
    text = text.replace("checkpoint: {every_steps: 0,", f"checkpoint: {{every_steps: {every}, keep: 2,")
    text = text.replace("scheduling: {max_restarts: 0}", f"scheduling: {{max_restarts: {max_restarts}}}")
    path.write_text(text)
    return path
