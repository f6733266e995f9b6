"""qloractl following a job through what goes wrong around it: a job that waits in the queue
(the follower says so, on a terminal and in --json, with its place in line as it moves), and a coordinator that is killed and
restarted while `qloractl watch` follows (it reconnects, resumes without repeating a step and
ends with the job). Real processes on loopback; every wait is a bounded loop on an event."""
import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from conftest import REPO, Cluster, binary, wait_for_line, wait_until, write_spec

DEMO_DATA = REPO / "examples" / "data" / "demo.jsonl"


def json_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # the last line may be half written
    return out


def spawn_watch(cluster: Cluster, tmp_path: Path, name: str, *args) -> tuple:
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    proc = subprocess.Popen([str(binary("qloractl")), "--server", cluster.addr, *map(str, args)],
                            stdout=open(out, "w"), stderr=open(err, "w"))
    return proc, out, err


def spawn_on_terminal(cluster: Cluster, columns: int, *args) -> tuple:
    """qloractl with stdout and stderr on a pseudo-terminal `columns` wide; returns the process
    and a function that reads what it has written so far."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen([str(binary("qloractl")), "--server", cluster.addr, *map(str, args)],
                            stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    os.set_blocking(master, False)
    seen = bytearray()

    def read() -> str:
        try:
            while chunk := os.read(master, 65536):
                seen.extend(chunk)
        except (BlockingIOError, OSError):
            pass  # nothing more for now (or the terminal closed with the process)
        return seen.decode(errors="replace")

    return proc, read


def test_a_queued_job_shows_it_is_queued_until_a_worker_takes_it(tmp_path, tiny_model):
    cluster = Cluster(tmp_path)
    try:
        cluster.start_coordinator()  # no worker yet: the job stays queued
        spec = write_spec(tmp_path / "queued.yaml", tiny_model, DEMO_DATA, tmp_path / "out",
                          max_steps=8)
        job_id = json.loads(cluster.ctl("--json", "submit", spec, check=True).stdout)["id"]

        as_json, json_out, _ = spawn_watch(cluster, tmp_path, "json", "--json", "watch", job_id)
        as_text, _, text_err = spawn_watch(cluster, tmp_path, "text", "watch", job_id)
        on_tty, screen = spawn_on_terminal(cluster, 70, "watch", job_id)

        state = wait_until("a QUEUED state line", lambda: [
            o for o in json_lines(json_out) if o.get("type") == "state"], on_fail=cluster.logs)
        assert state[0]["state"] == "QUEUED" and state[0]["job_id"] == job_id, state
        wait_until("the queued note on stderr",
                   lambda: f"{job_id} is queued, waiting for a worker" in text_err.read_text())
        # The terminal line is redrawn with the time spent waiting.
        wait_until("the queued line on the terminal",
                   lambda: re.search(rf"{job_id} queued, waiting for a worker \(0:0\d\)", screen()))

        cluster.start_worker(tmp_path / "work")
        for proc in (as_json, as_text, on_tty):
            assert proc.wait(timeout=240) == 0, cluster.logs()

        objects = json_lines(json_out)
        assert [o["type"] for o in objects][0] == "state"
        assert [o["step"] for o in objects if o["type"] == "metrics"] == list(range(1, 9))
        assert objects[-1]["type"] == "done" and objects[-1]["state"] == "COMPLETED"

        # In 70 columns every redraw fits one line: no line reaches the last column, and steps
        # do not each start a new line.
        text = screen()
        assert f"job {job_id} COMPLETED at step 8/8" in text, text
        redrawn = [f for f in re.split(r"\r\n|\n|\r", text) if f.endswith("\x1b[K")]
        assert any(" 8/8  loss " in f for f in redrawn), repr(text)
        for frame in redrawn:  # the final state and adapter path are plain lines that may wrap
            assert len(frame) - len("\x1b[K") <= 69, repr(frame)
        assert text.count("\n") <= 4, repr(text)
    finally:
        cluster.stop()


def test_queued_jobs_show_their_place_in_line_until_they_start(cluster, tmp_path, tiny_model):
    # The one worker is busy with a job that runs until it is cancelled.
    busy_spec = write_spec(tmp_path / "busy.yaml", tiny_model, DEMO_DATA, tmp_path / "busy",
                           max_steps=1000000)
    busy = json.loads(cluster.ctl("--json", "submit", busy_spec, check=True).stdout)["id"]
    cluster.wait_state(busy, {"RUNNING"})

    # The first also runs until it is cancelled, so that the second's place 1 of 1 lasts until
    # the test has seen it (a 4-step job could end within one refresh of the follower).
    first_spec = write_spec(tmp_path / "first.yaml", tiny_model, DEMO_DATA, tmp_path / "first",
                            max_steps=1000000)
    second_spec = write_spec(tmp_path / "second.yaml", tiny_model, DEMO_DATA,
                             tmp_path / "second", max_steps=4)
    first = json.loads(cluster.ctl("--json", "submit", first_spec, check=True).stdout)
    assert (first["queue_position"], first["queue_length"]) == (1, 1), first
    # `submit --follow` in --json (its first line is the submitted job) and `watch` on a pipe.
    follow, follow_out, follow_err = spawn_watch(cluster, tmp_path, "follow", "--json", "submit",
                                                 second_spec, "--follow")
    watch, _, watch_err = spawn_watch(cluster, tmp_path, "watch", "watch", first["id"])

    def places():
        return [(o["position"], o["queue_length"]) for o in json_lines(follow_out)
                if o.get("type") == "queued"]

    wait_until("the second job at position 2 of 2", lambda: (2, 2) in places(), 60, cluster.logs)
    wait_until("the first job at position 1 of 2",
               lambda: f"{first['id']} is queued, position 1 of 2" in watch_err.read_text(), 60,
               cluster.logs)

    # The busy job ends: the first starts and the second moves up; the first ends: the second
    # starts.
    cluster.ctl("cancel", busy, check=True)
    wait_until("the second job at position 1 of 1", lambda: (1, 1) in places(), 60, cluster.logs)
    cluster.ctl("cancel", first["id"], check=True)
    assert watch.wait(timeout=240) == 1, watch_err.read_text() + cluster.logs()  # cancelled
    assert follow.wait(timeout=240) == 0, follow_err.read_text() + cluster.logs()

    objects = json_lines(follow_out)
    second = objects[0]
    assert second["type"] == "job" and second["state"] == "QUEUED", objects[0]
    assert places() == [(2, 2), (1, 1)], objects
    kinds = [o["type"] for o in objects]
    # queued lines, then the RUNNING state line, then the steps.
    running = kinds.index("state", kinds.index("queued") + 1)
    assert objects[running]["state"] == "RUNNING", objects
    assert kinds.index("queued") < running < kinds.index("metrics"), kinds
    assert [o["step"] for o in objects if o["type"] == "metrics"] == [1, 2, 3, 4]
    assert objects[-1]["type"] == "done" and objects[-1]["state"] == "COMPLETED", objects[-1]


def test_watch_reconnects_after_the_coordinator_restarts(tmp_path, tiny_model):
    cluster = Cluster(tmp_path)
    try:
        cluster.start_coordinator()
        cluster.start_worker(tmp_path / "work")
        spec = write_spec(tmp_path / "long.yaml", tiny_model, DEMO_DATA, tmp_path / "out",
                          max_steps=200)
        job_id = json.loads(cluster.ctl("--json", "submit", spec, check=True).stdout)["id"]
        watch, out, err = spawn_watch(cluster, tmp_path, "watch", "--json", "watch", job_id,
                                      "--reconnect-timeout", "60")

        def steps():
            return [o for o in json_lines(out) if o.get("type") == "metrics"]

        wait_until("two steps before the restart", lambda: len(steps()) >= 2, 120, cluster.logs)
        cluster.coordinator.send_signal(signal.SIGKILL)
        cluster.coordinator.wait(timeout=10)
        # What watch had printed when the coordinator died: the steps after it come through the
        # reconnect (on a loaded machine the job may even end before the restart, its steps then
        # arriving all at once from the worker's queue).
        before = len(steps())
        wait_until("watch to say it is reconnecting",
                   lambda: '"type":"reconnecting"' in err.read_text(), 30)
        assert watch.poll() is None, err.read_text()  # it did not give up (it used to exit 3)

        # The same address and database: what a supervisor restarting the service does.
        proc, log = cluster._spawn([binary("qlorad"), "--listen", cluster.addr, "--http",
                                    "127.0.0.1:0", "--db", tmp_path / "qlorad.db",
                                    "--insecure-local"], "qlorad2.log")
        cluster.coordinator = proc
        wait_for_line(log, r"listening on", proc)
        wait_until("watch to say it reconnected",
                   lambda: '"type":"reconnected"' in err.read_text(), 30, cluster.logs)

        # The restarted coordinator adopts the running attempt (reconciliation), so the job goes
        # on where it was and ends: watch shows every later step once and exits 0.
        rc = watch.wait(timeout=120)  # 200 steps take ~10 s on the tiny model
        objects = json_lines(out)
        seen = [(o["attempt"], o["rank"], o["step"]) for o in objects if o["type"] == "metrics"]
        assert len(seen) == len(set(seen)), "a step was printed twice after the reconnect"
        assert seen == sorted(seen), seen
        done = objects[-1]
        assert done["type"] == "done", objects[-3:]
        assert done["state"] == "COMPLETED", (done, cluster.logs())
        assert rc == 0, err.read_text() + cluster.logs()
        assert len(seen) > before
    finally:
        cluster.stop()
