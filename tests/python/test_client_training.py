"""qlorad.Client following jobs that run: a real coordinator, and a worker played by this test
over the real WorkerService (register, take the START assignment, report trainer events), so the
steps, the adapter path and the errors the client sees come through the coordinator's own store
and streams. Real training (qlorad-worker + qlorad-train) is covered by tests/integration."""

from __future__ import annotations

import io
import threading

import grpc
import pytest

from test_client import client, run_with_timeout, server, spec  # noqa: F401  (fixtures)

import qlorad.notebook  # noqa: E402
from qlorad import JobState, StepMetrics  # noqa: E402
from qlorad._gen.v1 import common_pb2, workers_pb2, workers_pb2_grpc  # noqa: E402

LOSSES = [2.5, 2.0, 1.75, 1.5, 1.25]


class ScriptedWorker:
    """Registers as a CPU worker and, for the first START it gets, runs `script(report, start)`."""

    def __init__(self, address: str, script, name: str = "scripted"):
        self.channel = grpc.insecure_channel(address)
        self.stub = workers_pb2_grpc.WorkerServiceStub(self.channel)
        device = common_pb2.DeviceInfo(kind="cpu", name="test cpu")
        self.worker_id = self.stub.Register(
            workers_pb2.RegisterRequest(name=name, hostname="localhost", devices=[device],
                                        version="test"), timeout=10).worker_id
        self.script = script
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        assignments = self.stub.Assignments(workers_pb2.AssignmentsRequest(worker_id=self.worker_id))
        try:
            for a in assignments:
                if a.kind == workers_pb2.Assignment.KIND_START:
                    self.script(self.report, a)
                    return
        except BaseException as e:  # surfaced by join()
            self.error = e
        finally:
            assignments.cancel()

    def report(self, start, **payload):
        event = workers_pb2.TrainerEvent(job_id=start.job_id, attempt=start.attempt,
                                         rank=start.rank, **payload)
        self.stub.ReportEvents(workers_pb2.ReportEventsRequest(worker_id=self.worker_id,
                                                               events=[event]), timeout=10)

    def join(self):
        self.thread.join(30)
        assert not self.thread.is_alive(), "the scripted worker never got its assignment"
        if self.error:
            raise self.error
        self.channel.close()


def train_and_finish(report, start):
    Event = workers_pb2.TrainerEvent
    report(start, started=Event.Started(pid=4242))
    for step, loss in enumerate(LOSSES, start=1):
        report(start, metrics=common_pb2.StepMetrics(step=step, total_steps=len(LOSSES), loss=loss,
                                                     lr=1e-4, tokens_per_s=1500.0,
                                                     wall_time_s=0.5 * step))
    report(start, done=Event.Done(steps=len(LOSSES), adapter_path="/runs/x/adapter",
                                  final_loss=LOSSES[-1]))
    report(start, exit=Event.Exit(exit_code=0))


def crash_on_bad_data(report, start):
    Event = workers_pb2.TrainerEvent
    report(start, metrics=common_pb2.StepMetrics(step=1, loss=3.0, wall_time_s=1.0))
    report(start, error=Event.TrainerError(message="data.path: line 7 is not JSON", field="data.path"))
    report(start, exit=Event.Exit(exit_code=1, stderr_tail="Traceback: bad line"))


def completed_job_spec(name):
    s = spec(name, max_steps=len(LOSSES))
    s["scheduling"]["max_restarts"] = 0
    return s


def test_metrics_and_wait_follow_a_job_to_completion(server, client):  # noqa: F811
    job = client.submit(completed_job_spec("trains"))
    worker = ScriptedWorker(server, train_and_finish)
    steps = run_with_timeout(lambda: list(client.metrics(job.id)), timeout=30)
    worker.join()
    assert [(m.step, m.loss, m.total_steps) for m in steps] == \
        [(i + 1, loss, len(LOSSES)) for i, loss in enumerate(LOSSES)]
    assert all(m.job_id == job.id and m.rank == 0 and m.attempt == 0 for m in steps)
    final = client.wait(job.id, timeout=10)
    assert final.state is JobState.COMPLETED
    assert final.adapter_path == "/runs/x/adapter"
    assert final.last_step == len(LOSSES) and final.last_loss == LOSSES[-1]
    # A resumed stream starts where it is asked to.
    assert [m.step for m in client.metrics(job.id, from_step=4)] == [4, 5]
    assert any("trainer started" in line.message for line in client.logs(job.id))


def test_wait_blocks_until_a_running_job_completes(server, client):  # noqa: F811
    job = client.submit(completed_job_spec("waited"))
    go = threading.Event()

    def slow(report, start):
        go.wait(10)
        train_and_finish(report, start)

    worker = ScriptedWorker(server, slow)
    threading.Timer(1.0, go.set).start()
    final = run_with_timeout(lambda: client.wait(job.id, timeout=30), timeout=40)
    worker.join()
    assert final.state is JobState.COMPLETED and final.adapter_path == "/runs/x/adapter"


def test_a_failed_job_carries_the_trainer_error(server, client):  # noqa: F811
    job = client.submit(completed_job_spec("fails"))
    worker = ScriptedWorker(server, crash_on_bad_data)
    final = run_with_timeout(lambda: client.wait(job.id, timeout=30), timeout=40)
    worker.join()
    assert final.state is JobState.FAILED
    assert "data.path: line 7 is not JSON" in final.error
    assert [m.loss for m in client.metrics(job.id)] == [3.0]


def test_notebook_watch_prints_each_step_and_the_adapter(server, client):  # noqa: F811
    job = client.submit(completed_job_spec("watched"))
    worker = ScriptedWorker(server, train_and_finish)
    out = io.StringIO()
    final = run_with_timeout(lambda: qlorad.notebook.watch(client, job.id, file=out), timeout=30)
    worker.join()
    assert final.state is JobState.COMPLETED
    lines = out.getvalue().splitlines()
    assert lines[0] == "step 1/5  loss 2.5000  lr 1.00e-04  grad_norm 0.0000  1500 tok/s"
    assert len(lines) == len(LOSSES) + 2
    assert lines[-2:] == [f"job {job.id} COMPLETED at step 5 (loss 1.2500)",
                          "adapter written to /runs/x/adapter"]


@pytest.fixture()
def ipython_displays():
    """An in-process IPython shell whose display publisher records what would be shown."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed in this environment")
    pytest.importorskip("IPython", reason="IPython is not installed in this environment")
    import matplotlib

    matplotlib.use("Agg")
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    class Recorder(DisplayPublisher):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.published = []

        def publish(self, data, metadata=None, source=None, *, transient=None, update=False,
                    **kwargs):
            self.published.append({"mimetypes": sorted(data), "transient": transient or {},
                                   "update": update})

    shell = InteractiveShell.instance()
    saved = shell.display_pub
    shell.display_pub = Recorder(shell=shell)
    yield shell.display_pub.published
    shell.display_pub = saved
    InteractiveShell.clear_instance()


def test_loss_plot_holds_every_step_and_updates_one_display(ipython_displays):
    plot = qlorad.notebook._LossPlot("job-x")
    for step, loss in enumerate(LOSSES, start=1):
        plot.add(StepMetrics(job_id="job-x", rank=0, step=step, total_steps=5, loss=loss, lr=0,
                             grad_norm=0, tokens_per_s=0, vram_allocated_bytes=0,
                             vram_reserved_bytes=0, vram_peak_bytes=0, wall_time_s=0, attempt=0))
    plot.redraw(title="job-x: COMPLETED")
    assert list(plot.line.get_xdata()) == [1, 2, 3, 4, 5]
    assert list(plot.line.get_ydata()) == LOSSES
    assert plot.axes.get_title() == "job-x: COMPLETED"
    plot.close()
    first, *updates = ipython_displays
    assert not first["update"] and all(u["update"] for u in updates) and updates
    assert {d["transient"]["display_id"] for d in ipython_displays} == {first["transient"]["display_id"]}


def test_notebook_watch_plots_instead_of_printing_steps(server, client, ipython_displays):  # noqa: F811
    job = client.submit(completed_job_spec("plotted"))
    worker = ScriptedWorker(server, train_and_finish)
    out = io.StringIO()
    final = run_with_timeout(lambda: qlorad.notebook.watch(client, job.id, plot=True, file=out),
                             timeout=60)
    worker.join()
    assert final.state is JobState.COMPLETED
    assert out.getvalue() == (f"job {job.id} COMPLETED at step 5 (loss 1.2500)\n"
                              "adapter written to /runs/x/adapter\n")
    assert len(ipython_displays) >= 2 and ipython_displays[-1]["update"]


def test_notebook_watch_plot_outside_ipython_says_what_is_missing(client):  # noqa: F811
    with pytest.raises(RuntimeError, match=r"watch\(plot=True\) needs matplotlib and a running IPython"):
        qlorad.notebook.watch(client, "job-x", plot=True)
