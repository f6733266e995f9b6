"""deploy/ against the real binaries: every metric a Grafana panel or an alert rule reads is on a
real coordinator's /metrics (with the labels the queries select on), a real Prometheus with
deploy/'s scrape config and rules answers every panel's query and evaluates every rule, the flags of the Kubernetes
manifests start the real qlorad and qlorad-worker, and the Slurm script starts one real
qlorad-worker per GPU of its node with the right GPU and name, then stops them on SIGTERM.
No Slurm and no GPU here: a stand-in srun launches the tasks as srun would on one node, and a
stand-in nvidia-smi answers the worker's device query."""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import BIN, REPO, Cluster, binary, http_get, wait_until, write_spec
from test_auth import token
from test_prometheus import DEMO_DATA, scrape

DEPLOY = REPO / "deploy"

# srun on one node: the command once per task, SLURM_LOCALID set, SIGTERM forwarded to the tasks.
SRUN = """#!/bin/bash
while [[ $1 == -* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS_PER_NODE; i++)); do SLURM_LOCALID=$i "$@" & pids+=($!); done
trap 'kill -TERM "${pids[@]}"' TERM
status=0
for pid in "${pids[@]}"; do
  while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
  wait "$pid" || status=$?
done
exit $status
"""
# nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits -i N
NVIDIA_SMI = """#!/bin/bash
while [[ $# -gt 0 && $1 != -i ]]; do shift; done
echo "Stand-in GPU $2, 81559"
"""


def stand_ins(tmp_path: Path) -> dict:
    """An environment whose PATH finds the stand-in srun and nvidia-smi first."""
    bin_dir = tmp_path / "stand-ins"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("nvidia-smi", NVIDIA_SMI)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def https_get(addr: str, path: str, token: str, context: ssl.SSLContext) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"https://{addr}{path}", headers=headers)
    with urllib.request.urlopen(req, timeout=30, context=context) as res:
        return res.status, res.read().decode()


def workers(cluster: Cluster) -> dict:
    return {w["name"]: w for w in json.loads(http_get(cluster.http_addr, "/api/workers"))["workers"]}


def dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "qlorad-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


def alert_queries() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "qlorad-alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prometheus(cluster: Cluster, tmp_path: Path) -> str:
    """Debian's prometheus scraping the coordinator every second with deploy/'s scrape config and
    alert rules (only the target and the interval changed); its address."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(DEPLOY / "prometheus" / f) for f in config["rule_files"]]
    config["global"] = {"evaluation_interval": "1s"}
    (scrape,) = config["scrape_configs"]
    scrape["scrape_interval"] = "1s"
    scrape["static_configs"] = [{"targets": [cluster.http_addr]}]
    # The shipped config reads a metrics token from a file: one made in this coordinator's store.
    token_file = tmp_path / "qlorad-metrics-token"
    token_file.write_text(token(cluster.root / "qlorad.db", "metrics", "prometheus"))
    assert "credentials_file" in scrape["authorization"]
    scrape["authorization"]["credentials_file"] = str(token_file)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    addr = f"127.0.0.1:{free_port()}"
    log = tmp_path / "prometheus.log"
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is not installed (scripts/deps.sh installs it)"
    cluster.procs.append(subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--web.listen-address={addr}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}"], stdout=open(log, "w"), stderr=subprocess.STDOUT))
    return addr


def promql(addr: str, query: str) -> list:
    """The result of an instant query, or [] while Prometheus is not up yet."""
    url = f"http://{addr}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=30) as res:
            return json.loads(res.read())["data"]["result"]
    except (urllib.error.URLError, ConnectionError):
        return []


# `name{label="v", ...}` and `name` in a PromQL expression (template variables left as they are).
SELECTOR = re.compile(r"\b(qlorad_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def test_dashboard_and_alerts_read_series_the_coordinator_exports(cluster, tiny_model, tmp_path):
    spec = write_spec(tmp_path / "deployjob.yaml", tiny_model, DEMO_DATA, tmp_path / "out",
                      max_steps=3)
    job_id = json.loads(cluster.ctl("--json", "submit", spec, check=True).stdout)["id"]
    assert cluster.wait_state(job_id, {"COMPLETED", "FAILED"})["state"] == "COMPLETED", cluster.logs()
    # The job's series stay for two minutes after it ends: all families have samples now.
    samples = scrape(cluster.http_addr)["samples"]
    labels_of: dict[str, list[dict]] = {}
    for name, labels in samples:
        labels_of.setdefault(name, []).append(dict(labels))

    queries = dashboard_queries() + alert_queries()
    used = set()
    for query in queries:
        for name, selector in SELECTOR.findall(query):
            used.add(name)
            assert name in labels_of, f"{name} (in `{query}`) is not on /metrics"
            for label, op, value in MATCHER.findall(selector or ""):
                if label == "instance":  # Prometheus's target label
                    continue
                # Without honor_labels Prometheus keeps our `job` as `exported_job`.
                ours = "job" if label == "exported_job" else label
                assert all(ours in s for s in labels_of[name]), f"{name} has no label {ours}"
                if op == "=":
                    assert any(s[ours] == value for s in labels_of[name]), \
                        f"{name}{{{ours}=\"{value}\"}} (in `{query}`) is never exported"
    # What the issue asks the dashboard and the alerts to show is there.
    assert {"qlorad_jobs", "qlorad_job_loss", "qlorad_job_tokens_per_second", "qlorad_job_step",
            "qlorad_job_vram_allocated_bytes", "qlorad_job_vram_peak_bytes",
            "qlorad_worker_heartbeat_age_seconds", "qlorad_attempts_requeued_total"} <= used

    # A real Prometheus with deploy/'s scrape config: our job label arrives as exported_job, each
    # panel's query has data (rates once two scrapes are in), and every alert rule evaluates.
    prometheus = start_prometheus(cluster, tmp_path)
    wait_until("Prometheus to scrape the job's series twice",
               lambda: promql(prometheus, f'count_over_time(qlorad_job_step{{exported_job="{job_id}"}}[1m]) >= 2'),
               on_fail=lambda: (tmp_path / "prometheus.log").read_text()[-3000:])
    grafana = {"$__rate_interval": "1m", "$instance": ".*", "$job_id": job_id}
    dashboard = json.loads((DEPLOY / "grafana" / "qlorad-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            query = target["expr"]
            for name, value in grafana.items():
                query = query.replace(name, value)
            assert promql(prometheus, query), f"{panel['title']}: no data for {query}"
    assert len(rules_now(prometheus)) == len(alert_queries())
    wait_until("every alert rule to be evaluated",
               lambda: all(r.get("lastEvaluation", "").startswith("20") for r in rules_now(prometheus)))
    assert all(r["health"] == "ok" for r in rules_now(prometheus)), rules_now(prometheus)
    # Nothing is wrong with this service: no alert fires.
    assert not [r for r in rules_now(prometheus) if r["state"] == "firing"], rules_now(prometheus)


def rules_now(addr: str) -> list[dict]:
    with urllib.request.urlopen(f"http://{addr}/api/v1/rules", timeout=30) as res:
        return [r for g in json.loads(res.read())["data"]["groups"] for r in g["rules"]]


def container_args(kind: str) -> list[str]:
    for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / ("coordinator.yaml" if kind == "StatefulSet"
                                                             else "worker.yaml")).read_text()):
        if doc["kind"] == kind:
            return doc["spec"]["template"]["spec"]["containers"][0]["args"]
    raise AssertionError(f"no {kind}")


def replace_flags(args: list[str], values: dict) -> list[str]:
    """args with the flags named in `values` given those values instead (each must be there)."""
    out, seen = [], set()
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in values:
            seen.add(flag)
            out.append(f"{flag}={values[flag]}")
        else:
            out.append(arg)
    assert seen == set(values), f"the manifest lacks {set(values) - seen}"
    return out


def init_script(kind: str, container: str) -> str:
    for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "coordinator.yaml").read_text()):
        if doc["kind"] == kind:
            init = {c["name"]: c for c in doc["spec"]["template"]["spec"]["initContainers"]}
            return init[container]["args"][0]
    raise AssertionError(f"no {kind}")


def test_kubernetes_flags_start_the_real_coordinator_and_worker(tmp_path):
    """The StatefulSet's init container makes the tokens, its coordinator serves TLS with them, and
    the DaemonSet's worker enrolls with the enrollment token and the CA, as in a cluster: every
    path of the manifests moved under tmp_path, with certificates made here by openssl."""
    from test_tls import issue, openssl

    pki = tmp_path / "pki"
    pki.mkdir()
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=qlorad deploy test", cwd=pki)
    issue(pki, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:qlorad\nextendedKeyUsage=serverAuth")

    # The init container's script, on the store's volume as the pod mounts it, twice: the second
    # run (a restarted pod) keeps the tokens it made.
    # The store's volume is the cluster's folder: start_coordinator opens <folder>/qlorad.db.
    store = tmp_path
    script = init_script("StatefulSet", "bootstrap-tokens").replace("/var/lib/qlorad", str(store))
    env = dict(os.environ, PATH=f"{binary('qlorad').parent}:{os.environ['PATH']}")
    for _ in range(2):
        subprocess.run(["sh", "-c", script], env=env, check=True, capture_output=True, timeout=60)
    tokens = {name: (store / "tokens" / name).read_text().strip() for name in ("admin", "enroll", "metrics")}
    assert all(t.startswith("qlorad_") for t in tokens.values()), tokens
    assert oct((store / "tokens" / "admin").stat().st_mode & 0o777) == "0o600"

    cluster = Cluster(tmp_path)
    try:
        coord = replace_flags(container_args("StatefulSet"),
                              {"--listen": "127.0.0.1:0", "--http": "127.0.0.1:0", "--db": store / "qlorad.db",
                               "--tls-cert": pki / "server.pem", "--tls-key": pki / "server.key"})
        # start_coordinator passes --listen, --http and --db itself.
        cluster.start_coordinator(*[a for a in coord if a.split("=")[0] not in ("--listen", "--http", "--db")],
                                  insecure_local=False)
        cluster.db = store / "qlorad.db"

        # The worker as the DaemonSet runs it, with what Kubernetes substitutes and mounts.
        shared = tmp_path / "shared"
        args = replace_flags(container_args("DaemonSet"),
                             {"--coordinator": cluster.addr, "--work-dir": shared / "work", "--read-root": shared,
                              "--ca-file": pki / "ca.pem",
                              "--credential-file": shared / "worker-credential-$(NODE_NAME)-gpu0"})
        args = [a.replace("$(NODE_NAME)", "node-a") for a in args]
        shared.mkdir()
        log = tmp_path / "k8s-worker.log"
        worker = subprocess.Popen([str(binary("qlorad-worker")), *args],
                                  env=dict(stand_ins(tmp_path), QLORAD_ENROLL_TOKEN=tokens["enroll"]),
                                  stdout=open(log, "w"), stderr=subprocess.STDOUT)
        cluster.procs.append(worker)
        context = ssl.create_default_context(cafile=str(pki / "ca.pem"))

        def registered_or_exited():
            assert worker.poll() is None, f"qlorad-worker exited {worker.returncode}:\n{log.read_text()}"
            _, body = https_get(cluster.http_addr, "/api/workers", tokens["admin"], context)
            return {w["name"]: w for w in json.loads(body)["workers"]}.get("node-a-gpu0")

        registered = wait_until("the DaemonSet's worker to register", registered_or_exited,
                                on_fail=lambda: log.read_text())
        assert registered["devices"][0]["name"] == "Stand-in GPU 0"
        assert (shared / "worker-credential-node-a-gpu0").exists()
        # The probe's page answers without a token; /metrics takes the metrics token.
        assert https_get(cluster.http_addr, "/login", "", context)[0] == 200
        assert "qlorad_workers" in https_get(cluster.http_addr, "/metrics", tokens["metrics"], context)[1]
        worker.terminate()
        assert worker.wait(timeout=60) == 0, log.read_text()
    finally:
        cluster.stop()


def test_slurm_script_runs_one_worker_per_gpu_and_stops_them_on_sigterm(tmp_path):
    cluster = Cluster(tmp_path).start_coordinator()
    try:
        env = stand_ins(tmp_path) | {
            "QLORAD_COORDINATOR": cluster.addr, "QLORAD_BIN_DIR": str(BIN),
            "QLORAD_WORK_DIR": str(tmp_path / "shared"), "QLORAD_GRACE_PERIOD_S": "5",
            # What Slurm sets in a batch job of 2 tasks and 2 GPUs per node: the node's GPUs 3
            # and 5 (no cgroup renumbering).
            "SLURM_NTASKS_PER_NODE": "2", "CUDA_VISIBLE_DEVICES": "3,5"}
        log = tmp_path / "sbatch.log"
        job = subprocess.Popen(["bash", str(DEPLOY / "slurm" / "qlorad-workers.sbatch")], env=env,
                               stdout=open(log, "w"), stderr=subprocess.STDOUT)
        host = socket.gethostname().split(".")[0]
        names = {f"{host}-gpu0": "Stand-in GPU 3", f"{host}-gpu1": "Stand-in GPU 5"}

        def both_registered():
            seen = workers(cluster)
            return all(n in seen for n in names) and seen

        seen = wait_until("both Slurm tasks' workers to register", both_registered,
                          on_fail=lambda: log.read_text())
        for name, gpu in names.items():
            assert seen[name]["devices"][0]["name"] == gpu, seen[name]

        job.send_signal(signal.SIGTERM)  # scancel, or the time limit's early signal
        assert job.wait(timeout=60) == 0, log.read_text()
        text = log.read_text()
        assert "stopping the workers" in text
        assert text.count("stopping") >= 3, text  # the script, then each worker ("signal 15: stopping")
    finally:
        if job.poll() is None:
            job.kill()
        cluster.stop()
