"""deploy/ checked with the tools that read it: the Kubernetes manifests against Kubernetes'
own OpenAPI schemas (kubernetes-validate bundles them, strict: unknown fields fail), the alert
rules with promtool (syntax, and deploy/alerts_test.yml: each alert fires on its case and not on
its look-alike; every Grafana query parses), the Slurm script with bash -n and shellcheck. That the flags and metric names
they use are the binaries' is tests/integration/test_deploy.py's part."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
# The oldest Kubernetes release still in wide use that the manifests must suit, and the newest
# the bundled schemas know.
K8S_VERSIONS = ("1.29", None)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (scripts/deps.sh installs it)")
    return path


def run(*cmd, cwd=REPO) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"{cmd} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def manifests() -> list[tuple[str, dict]]:
    """(file name, resource) for every resource the kustomization lists."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc is not None:
                out.append((name, doc))
    return out


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version):
    kv = pytest.importorskip("kubernetes_validate", reason="scripts/deps.sh installs it")
    from kubernetes_validate.utils import latest_version

    version = version or latest_version()
    resources = manifests()
    assert {r["kind"] for _, r in resources} >= {"StatefulSet", "Service", "DaemonSet",
                                                "PersistentVolumeClaim"}
    for name, resource in resources:
        try:
            kv.validate(resource, version, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{name}: {resource['kind']} {resource['metadata']['name']}: {e}")


def test_schema_check_catches_a_misspelt_field():
    kv = pytest.importorskip("kubernetes_validate", reason="scripts/deps.sh installs it")
    from kubernetes_validate.utils import latest_version

    statefulset = next(r for _, r in manifests() if r["kind"] == "StatefulSet")
    statefulset["spec"]["replica"] = statefulset["spec"].pop("replicas")
    with pytest.raises(kv.ValidationError, match="replica"):
        kv.validate(statefulset, latest_version(), strict=True)


def pod_specs() -> dict[str, dict]:
    return {r["kind"]: r["spec"]["template"]["spec"] for _, r in manifests()
            if r["kind"] in ("StatefulSet", "DaemonSet")}


def test_pods_run_as_a_fixed_non_root_user_and_workers_hold_a_gpu():
    for kind, spec in pod_specs().items():
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0, kind
        for c in spec["containers"]:
            assert c["resources"]["requests"], (kind, c["name"])
    worker = pod_specs()["DaemonSet"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    # The image's user is the one the manifests name.
    assert f"USER {pod_specs()['DaemonSet']['securityContext']['runAsUser']}" in \
        (DEPLOY / "Dockerfile").read_text()


def test_alert_rules_pass_promtool(tmp_path):
    promtool = tool("promtool")
    run(promtool, "check", "rules", DEPLOY / "prometheus" / "qlorad-alerts.yml")
    # The static config loads the rules by a path relative to itself, and reads the metrics token
    # from a file promtool insists exists: the config as shipped, beside a copy of the rules,
    # with that one path pointing at a token file made here.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (scrape,) = config["scrape_configs"]
    token = tmp_path / "qlorad-metrics-token"
    token.write_text("qlorad_test\n")
    scrape["authorization"]["credentials_file"] = str(token)
    shutil.copy(DEPLOY / "prometheus" / "qlorad-alerts.yml", tmp_path)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    run(promtool, "check", "config", tmp_path / "prometheus.yml")


def test_each_alert_fires_on_its_case_and_not_on_its_look_alike():
    tests = Path(__file__).parent / "deploy" / "alerts_test.yml"
    run(tool("promtool"), "test", "rules", tests.name, cwd=tests.parent)
    # Every alert has a case.
    rules = yaml.safe_load((DEPLOY / "prometheus" / "qlorad-alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    cases = {c["alertname"] for t in yaml.safe_load(tests.read_text())["tests"]
             for c in t["alert_rule_test"]}
    assert alerts == cases


def test_kubernetes_scrape_config_keeps_the_names_the_rules_use():
    # Debian's promtool is built without Kubernetes service discovery, so this config is read
    # here, not by promtool: the job name the rules select and no honor_labels (exported_job).
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-kubernetes.yml").read_text())
    (scrape,) = config["scrape_configs"]
    assert scrape["job_name"] == "qlorad" and "honor_labels" not in scrape
    assert config["rule_files"] == ["qlorad-alerts.yml"]


def test_grafana_queries_are_valid_promql(tmp_path):
    dashboard = json.loads((DEPLOY / "grafana" / "qlorad-dashboard.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # promtool parses each panel's query as a recording rule, with Grafana's variables given
    # values of the kind Grafana substitutes.
    variables = {"$__rate_interval": "1m", "$instance": ".*", "$job_id": ".*"}
    rules = []
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"{panel['title']}: an unknown variable in {target['expr']}"
            rules.append({"record": f"panel_{panel['id']}_{target['refId']}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run(tool("promtool"), "check", "rules", path)


def test_slurm_script_passes_bash_n_and_shellcheck():
    script = DEPLOY / "slurm" / "qlorad-workers.sbatch"
    run("bash", "-n", script)
    run(tool("shellcheck"), script)
