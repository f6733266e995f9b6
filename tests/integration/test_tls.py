"""TLS and mutual TLS on the coordinator's gRPC and HTTP sides (issue 19), with certificates made
at test time by the openssl CLI (nothing secret is committed): clients that trust the CA connect,
clients that do not fail saying so, and under mutual TLS a client without a certificate is
refused; real qlorad, qloractl and qlorad-worker on loopback."""
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import Cluster, binary, python_client, wait_until
from test_auth import SPEC, token

qlorad = python_client()


def openssl(*args, cwd: Path):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue(d: Path, name: str, ca: str, extensions: str):
    """<name>.key and <name>.pem signed by <ca>.pem, with the given X.509v3 extensions."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text(extensions + "\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and a second
    CA that signed nothing the server uses."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "1", "-subj",
                f"/CN=qlorad test {ca}", cwd=d)
    issue(d, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
    issue(d, "client", "ca", "extendedKeyUsage=clientAuth")
    issue(d, "stranger", "other-ca", "extendedKeyUsage=clientAuth")
    return d


def start(tmp_path: Path, pki: Path, *flags) -> Cluster:
    c = Cluster(tmp_path)
    c.db = tmp_path / "qlorad.db"
    c.tokens = {"alice": token(c.db, "user", "alice"), "prom": token(c.db, "metrics", "prom"),
                "enroll": token(c.db, "enroll")}
    c.start_coordinator("--tls-cert", pki / "server.pem", "--tls-key", pki / "server.key", *flags,
                        insecure_local=False)
    return c


@pytest.fixture()
def tls(tmp_path, pki):
    c = start(tmp_path, pki)
    yield c
    c.stop()


@pytest.fixture()
def mtls(tmp_path, pki):
    c = start(tmp_path, pki, "--tls-client-ca", pki / "ca.pem")
    yield c
    c.stop()


def https_get(addr: str, path: str, token: str, context: ssl.SSLContext):
    req = urllib.request.Request(f"https://{addr}{path}",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30, context=context) as res:
        return res.status, res.read().decode()


def test_clients_that_trust_the_ca_connect_and_others_fail_clearly(tls, pki):
    alice = ["--token", tls.tokens["alice"]]
    ok = tls.ctl(*alice, "--ca-file", pki / "ca.pem", "jobs")
    assert ok.returncode == 0, ok.stderr

    plain = tls.ctl(*alice, "jobs")  # no TLS at all
    assert plain.returncode == 3 and f"cannot reach qlorad at {tls.addr}" in plain.stderr
    assert "--ca-file" in plain.stderr, plain.stderr
    untrusted = tls.ctl(*alice, "--ca-file", pki / "other-ca.pem", "jobs")
    assert untrusted.returncode == 3 and "TLS handshake failed: --ca-file" in untrusted.stderr, \
        untrusted.stderr
    missing = tls.ctl(*alice, "--ca-file", pki / "nope.pem", "jobs")
    assert missing.returncode == 2 and f"--ca-file: cannot read {pki / 'nope.pem'}" in missing.stderr

    client = qlorad.Client(tls.addr, token=tls.tokens["alice"], ca_file=pki / "ca.pem")
    job = client.submit(SPEC)
    assert client.get(job.id).owner == "alice"
    with pytest.raises(qlorad.ServerUnavailable) as unverified:
        qlorad.Client(tls.addr, token=tls.tokens["alice"], ca_file=pki / "other-ca.pem",
                      timeout=5).list()
    assert "TLS handshake failed: ca_file" in str(unverified.value)

    # HTTPS: the same certificate; a client without the CA cannot verify it.
    trusted = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    status, body = https_get(tls.http_addr, "/metrics", tls.tokens["prom"], trusted)
    assert status == 200 and 'qlorad_jobs{state="queued"} 1' in body
    with pytest.raises(urllib.error.URLError) as failed:
        https_get(tls.http_addr, "/metrics", tls.tokens["prom"], ssl.create_default_context())
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value)


def test_mutual_tls_refuses_clients_without_a_certificate_of_the_ca(mtls, pki, tmp_path):
    ca = ["--token", mtls.tokens["alice"], "--ca-file", pki / "ca.pem"]
    without = mtls.ctl(*ca, "jobs")
    assert without.returncode == 3 and "--cert and --key" in without.stderr, without.stderr
    stranger = mtls.ctl(*ca, "--cert", pki / "stranger.pem", "--key", pki / "stranger.key", "jobs")
    assert stranger.returncode == 3, stranger.stderr
    half = mtls.ctl(*ca, "--cert", pki / "client.pem", "jobs")
    assert half.returncode == 2 and "--cert and --key: give both" in half.stderr
    ok = mtls.ctl(*ca, "--cert", pki / "client.pem", "--key", pki / "client.key", "jobs")
    assert ok.returncode == 0, ok.stderr
    client = qlorad.Client(mtls.addr, token=mtls.tokens["alice"], ca_file=pki / "ca.pem",
                           cert_file=pki / "client.pem", key_file=pki / "client.key")
    assert client.list() == []

    trusted = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        https_get(mtls.http_addr, "/metrics", mtls.tokens["prom"], trusted)
    trusted.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    assert https_get(mtls.http_addr, "/metrics", mtls.tokens["prom"], trusted)[0] == 200

    # A worker enrolls and registers over mutual TLS.
    mtls.start_worker(tmp_path / "work", "tls-cpu", "worker.log", "--enroll-token",
                      mtls.tokens["enroll"], "--ca-file", pki / "ca.pem", "--cert",
                      pki / "client.pem", "--key", pki / "client.key")
    wait_until("the worker to register over mTLS",
               lambda: "registered with" in (tmp_path / "worker.log").read_text(), 60, mtls.logs)


def test_bad_tls_files_are_refused_at_start_naming_the_flag(tmp_path, pki):
    db = tmp_path / "qlorad.db"
    token(db, "admin", "root")

    def qlorad_with(*flags):
        return subprocess.run([str(binary("qlorad")), "--listen", "127.0.0.1:0", "--http", "off",
                               "--db", str(db), *map(str, flags)], capture_output=True, text=True,
                              timeout=60)

    missing = qlorad_with("--tls-cert", pki / "nope.pem", "--tls-key", pki / "server.key")
    assert missing.returncode != 0 and f"--tls-cert: cannot read {pki / 'nope.pem'}" in missing.stderr
    mismatched = qlorad_with("--tls-cert", pki / "server.pem", "--tls-key", pki / "client.key")
    assert mismatched.returncode != 0 and "--tls-key" in mismatched.stderr
    assert "is not the key of --tls-cert" in mismatched.stderr
    not_pem = qlorad_with("--tls-cert", pki / "server.ext", "--tls-key", pki / "server.key")
    assert not_pem.returncode != 0 and "holds no PEM certificate" in not_pem.stderr
    lonely = qlorad_with("--tls-cert", pki / "server.pem")
    assert lonely.returncode != 0 and "--tls-cert and --tls-key" in lonely.stderr
