"""The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven over the
Chrome DevTools Protocol (websocket-client), against the real coordinator, a CPU worker and the
trainer. A finished job's values must be on the jobs, job and workers pages, with axis tick
labels on the charts; a running job's page must follow its steps live and cancel it from its
button. Screenshots of each page are kept in tests/artifacts/dashboard/ (QLORAD_TEST_ARTIFACTS
overrides the folder; each test prints where)."""
import base64
import itertools
import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

import test_classification_job as classification
from conftest import REPO, http_get, wait_until, write_spec

websocket = pytest.importorskip("websocket", reason="websocket-client is not installed "
                                "(scripts/deps.sh installs it)")

DEMO_DATA = REPO / "examples" / "data" / "demo.jsonl"
ARTIFACTS = Path(os.environ.get("QLORAD_TEST_ARTIFACTS", REPO / "tests" / "artifacts")) / "dashboard"


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (apt-get install chromium; scripts/deps.sh installs it)")


class Browser:
    """One headless Chromium page over the DevTools protocol."""

    def __init__(self, profile: Path):
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile / "chromium.log"
        # --no-sandbox: the tests run as root in CI, where Chromium's sandbox refuses to start.
        self.proc = subprocess.Popen(
            [chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1400,1000",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        port_file = profile / "DevToolsActivePort"
        port = wait_until("Chromium's DevTools port",
                          lambda: port_file.exists() and port_file.read_text().split("\n")[0],
                          timeout=60, on_fail=self.log.read_text)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as res:
            page = next(t for t in json.load(res) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params):
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") != call_id:
                continue  # an event
            if "error" in message:
                raise AssertionError(f"{method}: {message['error']}")
            return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str):
        self.call("Page.navigate", url=url)
        wait_until(f"{url} to load", lambda: self.evaluate(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'"))

    def wait_dom(self, what: str, expression: str, timeout: float = 60.0):
        """The first truthy value of `expression`, polled: waits for the page, not the clock."""
        return wait_until(what, lambda: self.evaluate(expression), timeout=timeout,
                          on_fail=lambda: self.evaluate("document.body.innerText")[:3000])

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        print(f"screenshot: {path}")
        return path

    def close(self):
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture()
def browser(tmp_path):
    b = Browser(tmp_path / "chromium")
    yield b
    b.close()


def text(browser: Browser, selector: str) -> str:
    return browser.evaluate(
        f"(document.querySelector({json.dumps(selector)}) || {{innerText: ''}}).innerText")


def test_pages_show_a_finished_job(cluster, tiny_model, tmp_path, browser):
    spec = write_spec(tmp_path / "browserjob.yaml", tiny_model, DEMO_DATA, tmp_path / "out",
                      max_steps=6)
    job_id = json.loads(cluster.ctl("--json", "submit", spec, check=True).stdout)["id"]
    job = cluster.wait_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"})
    assert job["state"] == "COMPLETED", cluster.logs()
    loss = f"{job['last_loss']:.4f}"  # as the pages format a loss
    base = f"http://{cluster.http_addr}"

    browser.goto(base + "/")
    row = f"#job-row-{job_id}"
    browser.wait_dom("the job's row", f"!!document.querySelector('{row}')")
    assert text(browser, f"{row} .c-id") == job_id
    assert text(browser, f"{row} .c-name") == "browserjob"
    assert "COMPLETED" in text(browser, f"{row} .c-state")
    assert text(browser, f"{row} .c-progress").strip() == "6 / 6"
    assert text(browser, f"{row} .c-loss") == loss
    browser.screenshot("jobs.png")

    browser.goto(f"{base}/jobs/{job_id}")
    # The charts are drawn by the page's script: wait for the tick labels of their axes.
    browser.wait_dom("the loss chart's axes",
                     "document.querySelectorAll('#chart-loss text.tick.x').length > 1 && "
                     "document.querySelectorAll('#chart-loss text.tick.y').length > 1")
    for chart in ("loss", "lr", "grad_norm", "tokens", "vram"):
        ticks = browser.evaluate(
            f"[...document.querySelectorAll('#chart-{chart} text.tick')].map(t => t.textContent)")
        assert len(ticks) >= 4, (chart, ticks)
        assert browser.evaluate(
            f"document.querySelectorAll('#chart-{chart} .series').length") >= 1, chart
        titles = browser.evaluate(
            f"[...document.querySelectorAll('#chart-{chart} text.axis-title')]"
            ".map(t => t.textContent)")
        assert titles[0] == "step", (chart, titles)
    # The x axis covers the steps the job ran.
    x_ticks = browser.evaluate(
        "[...document.querySelectorAll('#chart-loss text.tick.x')].map(t => +t.textContent)")
    assert min(x_ticks) <= 1 and max(x_ticks) >= 6, x_ticks
    assert text(browser, "#summary .s-progress").strip() == "6 / 6"
    assert "COMPLETED" in text(browser, "#summary .s-state")
    assert text(browser, "#ranks tr[data-rank='0'] .r-step") == "6"
    assert text(browser, "#ranks tr[data-rank='0'] .r-loss") == loss
    assert "completed; adapter at" in text(browser, "#events")
    assert "trainer started" in text(browser, "#log")
    assert "max_steps: 6" in text(browser, "#spec")
    assert browser.evaluate("document.getElementById('cancel').disabled") is True
    assert text(browser, "#live") == "finished"
    assert browser.evaluate("document.getElementById('chart-accuracy').hidden") is True, \
        "a job without eval accuracy (not task: classification) shows no accuracy chart"
    browser.screenshot("job.png")

    browser.goto(f"{base}/workers")
    worker_row = "#workers tbody tr"
    browser.wait_dom("the worker's row", f"!!document.querySelector('{worker_row} .w-name')")
    assert text(browser, f"{worker_row} .w-name") == "test-cpu"
    assert text(browser, f"{worker_row} .w-device").startswith("cpu:0")
    assert text(browser, f"{worker_row} .w-job") == "idle"
    assert text(browser, f"{worker_row} .w-heartbeat").endswith("ago")
    browser.screenshot("workers.png")


def test_job_page_shows_a_classification_jobs_eval_accuracy(cluster, tiny_model, tmp_path,
                                                             browser):
    spec = classification.write_spec(tmp_path / "clsjob.yaml", tiny_model,
                                     classification.write_data(tmp_path / "data.jsonl"),
                                     tmp_path / "out")
    job_id = json.loads(cluster.ctl("--json", "submit", spec, check=True).stdout)["id"]
    job = cluster.wait_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"})
    assert job["state"] == "COMPLETED", cluster.logs()
    # The accuracy the job reported, as the client API serves it (rank 0's evaluated steps).
    steps = json.loads(http_get(cluster.http_addr, f"/api/jobs/{job_id}"))["metrics"]
    column = {name: i for i, name in enumerate(steps["columns"])}
    accuracy = {row[column["step"]]: row[column["eval_accuracy"]] for row in steps["rows"]
                if row[column["rank"]] == 0 and row[column["eval_accuracy"]] is not None}
    assert sorted(accuracy) == [3, 6], steps

    browser.goto(f"http://{cluster.http_addr}/jobs/{job_id}")
    browser.wait_dom("the accuracy chart's axes",
                     "document.querySelectorAll('#chart-accuracy text.tick.y').length > 1")
    assert browser.evaluate("document.getElementById('chart-accuracy').hidden") is False
    assert text(browser, "#chart-accuracy .latest") == f"{accuracy[6]:.4f}"
    titles = browser.evaluate("[...document.querySelectorAll('#chart-accuracy text.axis-title')]"
                              ".map(t => t.textContent)")
    assert titles == ["step", "accuracy (validation)"], titles
    # One marker per evaluation.
    assert browser.evaluate("document.querySelectorAll('#chart-accuracy svg circle').length") \
        == len(accuracy)
    browser.screenshot("job-classification.png")


def test_job_page_follows_a_running_job_and_cancels_it(cluster, tiny_model, tmp_path, browser):
    # Far more steps than the test waits for: it ends by cancelling the job from the page.
    spec = write_spec(tmp_path / "livejob.yaml", tiny_model, DEMO_DATA, tmp_path / "out",
                      max_steps=100000)
    job_id = json.loads(cluster.ctl("--json", "submit", spec, check=True).stdout)["id"]
    wait_until("the job's first step", lambda: cluster.job(job_id).get("last_step", 0) >= 1,
               timeout=240, on_fail=cluster.logs)

    browser.goto(f"http://{cluster.http_addr}/jobs/{job_id}")
    step_of_page = "+(document.querySelector('#summary .s-progress .step') || " \
                   "{textContent: '0'}).textContent.split(' / ')[0]"
    first = browser.evaluate(step_of_page)
    browser.wait_dom("the live indicator", "document.getElementById('live').dataset.state === 'on'")
    # Steps arrive over the event stream: the page's step count, the rank table and the chart
    # move without a reload.
    later = browser.wait_dom(f"the page's step to pass {first}",
                             f"(() => {{ const s = {step_of_page}; return s > {first} && s; }})()",
                             timeout=120)
    assert later > first
    browser.wait_dom("rank 0's row to follow",
                     f"+document.querySelector(\"#ranks tr[data-rank='0'] .r-step\").textContent"
                     f" > {first}")
    assert browser.evaluate("document.querySelectorAll('#chart-loss text.tick.y').length") > 1
    browser.screenshot("job-live.png")

    # The cancel button, past its confirmation dialog.
    browser.evaluate("window.confirm = () => true; document.getElementById('cancel').click()")
    browser.wait_dom("the cancel to be accepted",
                     "document.getElementById('cancel-status').textContent"
                     ".startsWith('cancel requested')")
    job = cluster.wait_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"})
    assert job["state"] == "CANCELLED", cluster.logs()
    browser.wait_dom("the page to show the cancel",
                     "document.querySelector('#summary .s-state').textContent === 'CANCELLED'")
    browser.wait_dom("the stream to end", "document.getElementById('live').textContent === 'finished'")
    assert "cancel" in text(browser, "#events")
    browser.screenshot("job-cancelled.png")
