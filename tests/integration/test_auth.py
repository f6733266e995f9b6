"""Authentication and authorization (issue 19), against the real qlorad, qloractl and
qlorad-worker on loopback with a real store: tokens made with `qlorad token create`, jobs owned by
their submitter, workers enrolled with their own credential, forged worker calls refused."""
import datetime
import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest

from conftest import Cluster, binary, python_client, wait_until, write_spec

qlorad = python_client()
from qlorad._gen.v1 import common_pb2, workers_pb2, workers_pb2_grpc  # noqa: E402

SPEC = "name: owned\nmodel: {path: /models/none}\ndata: {path: data/train.jsonl}\ntrain: {max_steps: 3}\n"


def token(db: Path, role: str, user: str = "", *extra: str) -> str:
    """A new token from `qlorad token create`: the secret alone on stdout."""
    args = [str(binary("qlorad")), "token", "create", "--db", str(db), "--role", role, *extra]
    res = subprocess.run(args + (["--user", user] if user else []), capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    secret = res.stdout.strip()
    assert secret.startswith("qlorad_") and "\n" not in secret
    return secret


def token_id(db: Path, user: str) -> str:
    res = subprocess.run([str(binary("qlorad")), "token", "list", "--db", str(db)],
                         capture_output=True, text=True, timeout=30, check=True)
    return next(line.split()[0] for line in res.stdout.splitlines()[1:] if line.split()[2] == user)


def token_rows(db: Path) -> dict[str, list[str]]:
    """`qlorad token list`'s rows by name: ID ROLE NAME CREATED EXPIRES REVOKED STATE."""
    res = subprocess.run([str(binary("qlorad")), "token", "list", "--db", str(db)],
                         capture_output=True, text=True, timeout=30, check=True)
    header, *rows = res.stdout.splitlines()
    assert header.split() == ["ID", "ROLE", "NAME", "CREATED", "EXPIRES", "REVOKED", "STATE"]
    return {row.split()[2]: row.split() for row in rows}


def revoke(db: Path, tid: str):
    subprocess.run([str(binary("qlorad")), "token", "revoke", tid, "--db", str(db)], check=True,
                   capture_output=True, timeout=30)


def http(addr: str, path: str, token: str = "", cookie: str = "", data: bytes | None = None,
         headers=None) -> tuple[int, dict, str]:
    req = urllib.request.Request(f"http://{addr}{path}", data=data, headers=dict(headers or {}))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if cookie:
        req.add_header("Cookie", cookie)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as res:
            return res.status, dict(res.headers), res.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


@pytest.fixture()
def secured(tmp_path):
    """A coordinator with authentication on (no --insecure-local) and tokens for alice and bob
    (users), root (admin), prom (metrics) and an enrollment token; no worker."""
    c = Cluster(tmp_path)
    db = tmp_path / "qlorad.db"
    c.tokens = {"alice": token(db, "user", "alice"), "bob": token(db, "user", "bob"),
                "root": token(db, "admin", "root"), "prom": token(db, "metrics", "prometheus"),
                "enroll": token(db, "enroll")}
    c.db = db
    c.start_coordinator(insecure_local=False)
    yield c
    c.stop()


def ctl(c: Cluster, who: str | None, *args) -> subprocess.CompletedProcess:
    auth = ["--token", c.tokens[who]] if who else []
    return c.ctl(*auth, *args)


def test_refuses_to_start_without_a_client_token_or_insecure_local_off_loopback(tmp_path):
    db = tmp_path / "qlorad.db"
    res = subprocess.run([str(binary("qlorad")), "--listen", "127.0.0.1:0", "--http", "off",
                          "--db", str(db)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert f"qlorad token create --db {db}" in res.stderr and "--insecure-local" in res.stderr
    res = subprocess.run([str(binary("qlorad")), "--listen", "0.0.0.0:0", "--http", "off",
                          "--db", str(db), "--insecure-local"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode != 0
    assert "--listen: '0.0.0.0' is not a loopback address" in res.stderr, res.stderr
    # Tokens in clear text off loopback: only with TLS.
    token(db, "admin", "root")
    res = subprocess.run([str(binary("qlorad")), "--listen", "0.0.0.0:0", "--http", "off",
                          "--db", str(db)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "--tls-cert" in res.stderr, res.stderr


def test_calls_without_a_valid_token_are_unauthenticated(secured):
    for args in (("jobs",), ("--token", "qlorad_" + "0" * 64, "jobs"),
                 ("--token", secured.tokens["alice"] + "x", "status", "job-1")):
        res = secured.ctl(*args)
        assert res.returncode == 1, res
        assert "UNAUTHENTICATED" in res.stderr, res.stderr
    # The Python client too; a metrics or enrollment token is no client token.
    with pytest.raises(qlorad.QloradError) as refused:
        qlorad.Client(secured.addr, token="").list()
    assert refused.value.code == "UNAUTHENTICATED"
    for role in ("prom", "enroll"):
        with pytest.raises(qlorad.QloradError) as refused:
            qlorad.Client(secured.addr, token=secured.tokens[role]).list()
        assert refused.value.code == "PERMISSION_DENIED"


def test_jobs_are_their_owners_and_admins_only(secured, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC)
    job_id = json.loads(ctl(secured, "alice", "--json", "submit", spec).stdout)["id"]
    assert json.loads(ctl(secured, "alice", "--json", "status", job_id).stdout)["owner"] == "alice"

    # bob can neither see it listed nor read, follow, read the logs of or cancel it.
    assert job_id not in ctl(secured, "bob", "--json", "jobs").stdout
    assert [j.id for j in qlorad.Client(secured.addr, token=secured.tokens["bob"]).list()] == []
    for args in (("status", job_id), ("cancel", job_id), ("watch", job_id, "--reconnect-timeout", "0"),
                 ("logs", job_id)):
        res = ctl(secured, "bob", *args)
        assert res.returncode == 1 and "PERMISSION_DENIED" in res.stderr, (args, res)
        assert "belongs to another user" in res.stderr
    bob = qlorad.Client(secured.addr, token=secured.tokens["bob"])
    for call in (lambda: list(bob.metrics(job_id)), lambda: list(bob.logs(job_id))):
        with pytest.raises(qlorad.QloradError) as refused:
            call()
        assert refused.value.code == "PERMISSION_DENIED"

    # An admin sees and may cancel every job; the owner may cancel their own.
    assert job_id in ctl(secured, "root", "--json", "jobs").stdout
    assert ctl(secured, "root", "status", job_id).returncode == 0
    other = json.loads(ctl(secured, "bob", "--json", "submit", spec).stdout)["id"]
    assert ctl(secured, "root", "cancel", other).returncode == 0
    assert ctl(secured, "alice", "cancel", job_id).returncode == 0
    assert qlorad.Client(secured.addr, token=secured.tokens["alice"]).get(job_id).state.value == "CANCELLED"

    # A revoked token is refused at its next call, without restarting the coordinator.
    revoke(secured.db, token_id(secured.db, "alice"))
    res = ctl(secured, "alice", "jobs")
    assert res.returncode == 1 and "UNAUTHENTICATED" in res.stderr and "was revoked" in res.stderr


def test_dashboard_and_metrics_need_tokens(secured, tmp_path):
    alice = qlorad.Client(secured.addr, token=secured.tokens["alice"])
    job = alice.submit(SPEC)
    addr, t = secured.http_addr, secured.tokens

    # /metrics: the metrics token or an admin's; nobody else.
    assert http(addr, "/metrics")[0] == 401
    assert http(addr, "/metrics", t["alice"])[0] == 403
    status, _, body = http(addr, "/metrics", t["prom"])
    assert status == 200 and 'qlorad_jobs{state="queued"} 1' in body
    assert http(addr, "/metrics", t["root"])[0] == 200

    # Pages send a browser without a token to the sign-in form; the API answers 401.
    status, headers, _ = http(addr, "/")
    assert status == 303 and headers["Location"] == "/login"
    assert http(addr, "/api/jobs")[0] == 401
    assert http(addr, f"/api/jobs/{job.id}", t["bob"])[0] == 403
    assert job.id not in http(addr, "/api/jobs", t["bob"])[2]
    assert job.id in http(addr, "/api/jobs", t["alice"])[2]
    cancel = http(addr, f"/api/jobs/{job.id}/cancel", t["bob"], data=b"{}",
                  headers={"Content-Type": "application/json"})
    assert cancel[0] == 403

    # Signing in sets an HttpOnly, SameSite=Strict cookie that the pages then accept.
    csrf_cookie, csrf = sign_in_form(addr)
    status, headers, _ = sign_in(addr, t["alice"], csrf_cookie, csrf)
    assert status == 303, headers
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, _, page = http(addr, "/", cookie=cookie.split(";")[0])
    assert status == 200 and job.id in page
    assert sign_in(addr, t["prom"], csrf_cookie, csrf)[0] == 401


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def sign_in_form(addr: str) -> tuple[str, str]:
    """GET /login: the qlorad_csrf cookie it sets ("qlorad_csrf=HEX") and its form's csrf field."""
    status, headers, page = http(addr, "/login")
    assert status == 200
    set_cookie = headers["Set-Cookie"]
    assert set_cookie.startswith("qlorad_csrf=") and "HttpOnly" in set_cookie
    assert "SameSite=Strict" in set_cookie
    field = re.search(r'<input type="hidden" name="csrf" value="([0-9a-f]{64})">', page)
    assert field, page
    return set_cookie.split(";")[0], field.group(1)


def sign_in(addr: str, token: str, csrf_cookie: str, csrf: str | None):
    fields = {"token": token} | ({"csrf": csrf} if csrf is not None else {})
    return http(addr, "/login", cookie=csrf_cookie, data=urllib.parse.urlencode(fields).encode(),
                headers=FORM)


def test_dashboard_posts_need_the_csrf_token_of_their_page(secured):
    """Sign-in, cancel and sign-out from a browser (cookies, no Authorization header) must echo the
    qlorad_csrf cookie's token that the page carries (double submit); scripts with a bearer token
    need none."""
    addr, t = secured.http_addr, secured.tokens
    alice = qlorad.Client(secured.addr, token=t["alice"])
    job = alice.submit(SPEC)  # no worker: it stays queued until cancelled
    csrf_cookie, csrf = sign_in_form(addr)
    assert csrf_cookie == f"qlorad_csrf={csrf}"

    # A sign-in form posted from elsewhere: no token, a wrong one, or no cookie to match.
    for cookie, field in ((csrf_cookie, None), (csrf_cookie, "0" * 64), ("", csrf)):
        status, headers, page = sign_in(addr, t["alice"], cookie, field)
        assert status == 403, (status, page)
        assert "CSRF check failed" in page
        assert "qlorad_token=" not in headers.get("Set-Cookie", "")
    status, headers, _ = sign_in(addr, t["alice"], csrf_cookie, csrf)
    assert status == 303 and headers["Location"] == "/"
    cookies = f"{headers['Set-Cookie'].split(';')[0]}; {csrf_cookie}"

    # The job page carries the same token for its cancel button (and sets no new cookie).
    status, headers, page = http(addr, f"/jobs/{job.id}", cookie=cookies)
    assert status == 200 and f'data-csrf="{csrf}"' in page
    assert "Set-Cookie" not in headers
    cancel_path = f"/api/jobs/{job.id}/cancel"
    json_post = {"Content-Type": "application/json"}
    status, _, body = http(addr, cancel_path, cookie=cookies, data=b"{}", headers=json_post)
    assert status == 403 and "CSRF check failed: no CSRF token" in json.loads(body)["error"]
    status, _, body = http(addr, cancel_path, cookie=cookies, data=b"{}",
                           headers=json_post | {"X-CSRF-Token": "f" * 64})
    assert status == 403 and "does not match" in json.loads(body)["error"]
    assert alice.get(job.id).state.name == "QUEUED"
    status, _, body = http(addr, cancel_path, cookie=cookies, data=b"{}",
                           headers=json_post | {"X-CSRF-Token": csrf})
    assert status == 200, body
    assert alice.get(job.id).state.name == "CANCELLED"

    # A script's bearer token is no ambient credential: no CSRF token needed.
    other = alice.submit(SPEC)
    status, _, body = http(addr, f"/api/jobs/{other.id}/cancel", t["alice"], data=b"{}",
                           headers=json_post)
    assert status == 200, body

    # Signing out: the same rule.
    status, _, body = http(addr, "/logout", cookie=cookies, data=b"", headers=FORM)
    assert status == 403 and "CSRF check failed" in body
    status, headers, _ = http(addr, "/logout", cookie=cookies,
                              data=urllib.parse.urlencode({"csrf": csrf}).encode(), headers=FORM)
    assert status == 303 and "Max-Age=0" in headers["Set-Cookie"]


def test_an_expired_token_is_refused_saying_it_expired(secured):
    db, addr = secured.db, secured.http_addr
    # Expired from the start (an absolute time in the past): no waiting for a clock.
    carol = token(db, "user", "carol", "--expires-at", "2020-01-01T00:00:00Z")
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    dave = token(db, "user", "dave", "--expires-in", "30d")
    after = datetime.datetime.now(datetime.timezone.utc)

    res = secured.ctl("--token", carol, "jobs")
    assert res.returncode == 1 and "UNAUTHENTICATED" in res.stderr, res.stderr
    assert "expired at 2020-01-01T00:00:00Z" in res.stderr and "unknown" not in res.stderr, \
        res.stderr
    with pytest.raises(qlorad.QloradError) as refused_call:
        qlorad.Client(secured.addr, token=carol).list()
    assert refused_call.value.code == "UNAUTHENTICATED"
    assert "expired" in str(refused_call.value)
    assert secured.ctl("--token", dave, "jobs").returncode == 0

    rows = token_rows(db)
    assert rows["carol"][4:] == ["2020-01-01T00:00:00Z", "-", "expired"], rows["carol"]
    assert rows["alice"][4:] == ["never", "-", "valid"], rows["alice"]
    assert rows["dave"][-1] == "valid", rows["dave"]
    expires = datetime.datetime.fromisoformat(rows["dave"][4].replace("Z", "+00:00"))
    month = datetime.timedelta(days=30)
    assert before + month <= expires <= after + month, (before, expires, after)

    # The dashboard's sign-in says so too.
    status, _, page = sign_in(addr, carol, *sign_in_form(addr))
    assert status == 401 and "expired at 2020-01-01T00:00:00Z" in page, (status, page)
    assert http(addr, "/api/jobs", carol)[0] == 401


@pytest.mark.parametrize("flags, error", [
    (["--expires-in", "30x"], "--expires-in: x unit not recognized"),
    (["--expires-at", "2027-02-30T00:00:00Z"], "--expires-at: '2027-02-30T00:00:00Z' is not a"),
])
def test_bad_expiry_flags_are_refused_naming_the_flag(tmp_path, flags, error):
    db = tmp_path / "qlorad.db"
    res = subprocess.run([str(binary("qlorad")), "token", "create", "--db", str(db), "--user",
                          "erin", *flags], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and error in res.stderr, res.stderr
    assert res.stdout == ""
    assert "erin" not in token_rows(db), "no token was made"


def worker_stub(c: Cluster, credential: str = ""):
    channel = grpc.insecure_channel(c.addr)
    metadata = [("authorization", f"Bearer {credential}")] if credential else []
    return workers_pb2_grpc.WorkerServiceStub(channel), metadata


def enroll(c: Cluster, name: str) -> str:
    stub, md = worker_stub(c, c.tokens["enroll"])
    return stub.Enroll(workers_pb2.EnrollRequest(name=name), metadata=md, timeout=10).credential


def register(c: Cluster, name: str, credential: str) -> str:
    stub, md = worker_stub(c, credential)
    device = common_pb2.DeviceInfo(kind="cpu", name="test cpu")
    return stub.Register(workers_pb2.RegisterRequest(name=name, hostname="localhost",
                                                     devices=[device]),
                         metadata=md, timeout=10).worker_id


def refused(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def test_workers_act_only_as_themselves(secured):
    cred_a, cred_b = enroll(secured, "worker-a"), enroll(secured, "worker-b")
    stub, md_a = worker_stub(secured, cred_a)
    _, md_b = worker_stub(secured, cred_b)
    _, md_user = worker_stub(secured, secured.tokens["alice"])

    # A name is enrolled once; Register needs the credential of that very name.
    assert refused(lambda: enroll(secured, "worker-a")) == grpc.StatusCode.ALREADY_EXISTS
    assert refused(lambda: register(secured, "worker-a", "")) == grpc.StatusCode.UNAUTHENTICATED
    assert refused(lambda: register(secured, "worker-a", cred_b)) == grpc.StatusCode.PERMISSION_DENIED
    assert refused(lambda: register(secured, "worker-a", secured.tokens["alice"])) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert refused(lambda: register(secured, "worker-a", secured.tokens["enroll"])) == \
        grpc.StatusCode.PERMISSION_DENIED
    id_a, id_b = register(secured, "worker-a", cred_a), register(secured, "worker-b", cred_b)

    # Only worker-a takes orders, so alice's job goes to it.
    orders = stub.Assignments(workers_pb2.AssignmentsRequest(worker_id=id_a), metadata=md_a)
    job = qlorad.Client(secured.addr, token=secured.tokens["alice"]).submit(SPEC)
    start = next(o for o in orders if o.kind == workers_pb2.Assignment.KIND_START)
    assert start.job_id == job.id

    def events(*payloads):
        return [workers_pb2.TrainerEvent(job_id=job.id, attempt=start.attempt, rank=0, **p)
                for p in payloads]

    forged = events({"done": workers_pb2.TrainerEvent.Done(steps=3, adapter_path="/forged")},
                    {"exit": workers_pb2.TrainerEvent.Exit(exit_code=0)})
    # worker-b may not speak as worker-a...
    as_a = workers_pb2.ReportEventsRequest(worker_id=id_a, events=forged)
    assert refused(lambda: stub.ReportEvents(as_a, metadata=md_b, timeout=10)) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert refused(lambda: stub.Heartbeat(workers_pb2.HeartbeatRequest(worker_id=id_a),
                                          metadata=md_b, timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
    assert refused(lambda: next(stub.Assignments(workers_pb2.AssignmentsRequest(worker_id=id_a),
                                                 metadata=md_b, timeout=10))) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert refused(lambda: stub.ReportEvents(as_a, metadata=md_user, timeout=10)) == \
        grpc.StatusCode.PERMISSION_DENIED
    # ...and what it reports as itself about an attempt it does not hold changes nothing.
    stub.ReportEvents(workers_pb2.ReportEventsRequest(worker_id=id_b, events=forged), metadata=md_b,
                      timeout=10)
    root = qlorad.Client(secured.addr, token=secured.tokens["root"])
    assert root.get(job.id).state.value == "RUNNING"

    # The holder's own report completes the job, with its adapter.
    real = events({"done": workers_pb2.TrainerEvent.Done(steps=3, adapter_path="/runs/a/adapter")},
                  {"exit": workers_pb2.TrainerEvent.Exit(exit_code=0)})
    stub.ReportEvents(workers_pb2.ReportEventsRequest(worker_id=id_a, events=real), metadata=md_a,
                      timeout=10)
    done = root.get(job.id)
    assert (done.state.value, done.adapter_path) == ("COMPLETED", "/runs/a/adapter")
    orders.cancel()

    # A revoked credential is refused at the next call.
    revoke(secured.db, token_id(secured.db, "worker-a"))
    assert refused(lambda: stub.Heartbeat(workers_pb2.HeartbeatRequest(worker_id=id_a),
                                          metadata=md_a, timeout=10)) == grpc.StatusCode.UNAUTHENTICATED


def test_a_real_worker_enrolls_keeps_its_credential_and_trains(secured, tmp_path, tiny_model):
    work = tmp_path / "work"
    secured.start_worker(work, "enrolled-cpu", "worker.log", "--enroll-token",
                         secured.tokens["enroll"])
    credential = work / "worker-credential"
    wait_until("the worker to enroll", credential.exists, 60, secured.logs)
    assert credential.stat().st_mode & 0o777 == 0o600
    assert secured.tokens["enroll"] not in credential.read_text()

    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"text": f"sample {i} of the auth test"}) for i in range(8)))
    spec = write_spec(tmp_path / "trained.yaml", tiny_model, data, tmp_path / "out", max_steps=3)
    res = ctl(secured, "alice", "--json", "submit", spec, "--follow")
    assert res.returncode == 0, res.stderr + secured.logs()
    job = json.loads(res.stdout.splitlines()[-1])
    assert job["state"] == "COMPLETED" and job["owner"] == "alice"

    # Restarted, it comes back with the stored credential (the enrollment token is not needed).
    secured.worker.terminate()
    secured.worker.wait(timeout=30)
    secured.start_worker(work, "enrolled-cpu", "worker2.log")
    wait_until("the restarted worker to register",
               lambda: "registered with" in (tmp_path / "worker2.log").read_text(), 60,
               secured.logs)

    # With its credential revoked it cannot come back: it stops, saying why, instead of retrying.
    secured.worker.terminate()
    secured.worker.wait(timeout=30)
    revoke(secured.db, token_id(secured.db, "enrolled-cpu"))
    secured.start_worker(work, "enrolled-cpu", "worker3.log")
    assert secured.worker.wait(timeout=60) != 0
    log = (tmp_path / "worker3.log").read_text()
    assert "refused worker enrolled-cpu" in log and "was revoked" in log, log
