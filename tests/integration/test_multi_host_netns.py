"""Several hosts, simulated on one machine (issue 21): the multi-host path (the rendezvous at rank
0's worker, its address as the other hosts resolve it, checkpoints on a shared file system) with
real processes in network namespaces.

Each simulated host is a network namespace (`ip netns`) with its own veth address on a private
test subnet, its own hostname (a UTS namespace, `unshare --uts`) and its own /etc/hosts (`ip netns
exec` mounts /etc/netns/<name>/hosts over /etc/hosts). Two ways: every /etc/hosts maps every
other simulated hostname to its host's address, as a cluster's DNS would, and workers advertise
their hostname; or each host knows only its own name and workers advertise their address
(--advertise-address). Either way a host's own name resolves there to loopback (Debian's
"127.0.1.1 <hostname>" line), so Gloo must listen on the address that routes to the other ranks,
not on the one its hostname resolves to. The coordinator's host is a namespace too, whose
ephemeral port range (where the coordinator would find a "free" rendezvous port) holds only ports
that are busy on every worker host: the rendezvous port must be one free on rank 0's host.
The veths' other ends hang on a bridge in the root namespace; there are no default routes, so no
traffic leaves the subnet. The coordinator listens with TLS and tokens (it refuses clear text off
loopback); one `qlorad-worker --cpu` runs per namespace, each with its own work dir, all writing
checkpoints under one shared folder (the "shared file system").

A 2-rank fsdp job on Gloo is gang-scheduled across the two hosts; after its first checkpoint the
worker that holds the rendezvous (rank 0's host) is killed -9 with its trainer, as if the machine
died, and started again; the retry resumes from the last sharded checkpoint and completes. Every
loss either attempt reported equals the same job's on two workers on plain loopback, within fp32
summation-order error (1e-5 relative, as tests/python/test_parallel_launch.py).

Needs root, `ip` with netns and bridge support, and `unshare`; skips naming what is missing.
Everything it creates has names unique to the run and is removed at teardown, on failure too."""
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Cluster, binary, children, kill_machine, wait_for_line, wait_until
from test_tls import issue, openssl

HOSTS = 2
STEPS = 150
EVERY = 10  # checkpoint interval, in steps
RTOL = 1e-5  # fp32 Gloo ranks against fp32 Gloo ranks: summation order only


def sh(*args, check=True) -> subprocess.CompletedProcess:
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} -> {res.returncode}: {res.stderr}")
    return res


def why_no_namespaces() -> str:
    """Empty when this process can make network namespaces; else why not."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns add)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` on PATH to simulate hosts"
    probe = f"qlorad-probe-{secrets.token_hex(3)}"
    made = sh("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is unavailable here: {made.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return ""


@dataclass
class Host:
    netns: str
    hostname: str
    address: str


@dataclass
class Network:
    subnet: str  # "10.213.N"
    coordinator: Host  # the coordinator's namespace and address
    hosts: list
    advertise_addresses: bool  # workers pass --advertise-address; else peers resolve hostnames
    busy_ports: range  # the coordinator host's ephemeral ports, busy on every worker host

    @property
    def coordinator_address(self) -> str:
        return self.coordinator.address


def free_subnet() -> str:
    """A 10.213.N.0/24 no interface of the root namespace uses (a crashed run's leftovers
    included)."""
    used = sh("ip", "-4", "-o", "addr", "show").stdout
    for n in [secrets.randbelow(200) + 20 for _ in range(50)]:
        if f" 10.213.{n}." not in used:
            return f"10.213.{n}"
    raise AssertionError("no free 10.213.N.0/24 subnet for the test")


@pytest.fixture(scope="module")
def namespaces_allowed():
    reason = why_no_namespaces()
    if reason:
        pytest.skip(reason)


@pytest.fixture(params=["names", "addresses"])
def network(request, namespaces_allowed) -> Network:
    """A bridge in the root namespace and, on it, the coordinator's namespace and HOSTS worker
    namespaces, each with a veth, lo up, no default route, its own /etc/hosts that resolves its own
    name to loopback; all removed at teardown. "names": every host's /etc/hosts names the other
    hosts (a cluster's DNS), and workers advertise their hostname; "addresses": each host knows
    only its own name (cloud machines without shared DNS), and workers advertise their address
    with --advertise-address."""
    tag = secrets.token_hex(3)  # interface names stay under 16 characters
    subnet = free_subnet()
    bridge = f"qb{tag}"
    sh("ip", "link", "add", bridge, "type", "bridge")
    request.addfinalizer(lambda: sh("ip", "link", "del", bridge, check=False))
    sh("ip", "addr", "add", f"{subnet}.1/24", "dev", bridge)
    sh("ip", "link", "set", bridge, "up")
    coordinator = Host(f"qlorad-{tag}-c", f"coord-{tag}", f"{subnet}.2")
    hosts = [Host(f"qlorad-{tag}-{i}", f"host{i}-{tag}", f"{subnet}.{10 + i}") for i in range(HOSTS)]
    # Outside Linux's default ephemeral range (32768-60999), so nothing else on a host takes them.
    first = 20000 + 4 * secrets.randbelow(2000)
    busy = range(first, first + 4)
    for i, h in enumerate([*hosts, coordinator]):
        others = [k for k in hosts if k is not h] if request.param == "names" else []
        etc_hosts = (f"127.0.0.1 localhost\n127.0.1.1 {h.hostname}\n" +
                     "".join(f"{k.address} {k.hostname}\n" for k in others))
        sh("ip", "netns", "add", h.netns)
        request.addfinalizer(lambda ns=h.netns: sh("ip", "netns", "del", ns, check=False))
        etc = Path("/etc/netns") / h.netns
        etc.mkdir(parents=True)
        request.addfinalizer(lambda d=etc: shutil.rmtree(d, ignore_errors=True))
        (etc / "hosts").write_text(etc_hosts)
        outside, inside = f"qh{tag}{i}", f"qp{tag}{i}"
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        # The veth goes when its namespace does; this covers a failure before it moved there.
        request.addfinalizer(lambda dev=outside: sh("ip", "link", "del", dev, check=False))
        sh("ip", "link", "set", inside, "netns", h.netns)
        sh("ip", "link", "set", outside, "master", bridge)
        sh("ip", "link", "set", outside, "up")
        inns = ("ip", "netns", "exec", h.netns)
        sh(*inns, "ip", "addr", "add", f"{h.address}/24", "dev", inside)
        sh(*inns, "ip", "link", "set", inside, "up")
        sh(*inns, "ip", "link", "set", "lo", "up")
        routes = sh(*inns, "ip", "route").stdout
        assert "default" not in routes, f"{h.netns} has a way out: {routes}"
    # The coordinator's FreeTcpPort can only find ports that are busy on the worker hosts.
    sh("ip", "netns", "exec", coordinator.netns, "sh", "-c",
       f"echo {busy.start} {busy.stop - 1} > /proc/sys/net/ipv4/ip_local_port_range")
    return Network(subnet, coordinator, hosts, request.param == "addresses", busy)


@pytest.fixture()
def pki(tmp_path, network) -> Path:
    """A CA and a certificate for the coordinator's address on the test subnet."""
    d = tmp_path / "pki"
    d.mkdir()
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=qlorad netns test ca",
            cwd=d)
    issue(d, "server", "ca",
          f"subjectAltName=IP:{network.coordinator_address}\nextendedKeyUsage=serverAuth")
    return d


def token(db: Path, role: str, user: str = "") -> str:
    return sh(binary("qlorad"), "token", "create", "--db", db, "--role", role,
              *(["--user", user] if user else [])).stdout.strip()


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except FileNotFoundError:
        return []


class SimulatedHosts(Cluster):
    """The coordinator in the root namespace on the bridge's address (TLS, tokens) and one CPU
    worker per simulated host; Cluster's ctl, job and wait_state pass a user token and the CA."""

    def __init__(self, root: Path, network: Network, pki: Path, shared: Path, read_root: Path):
        super().__init__(root)
        root.mkdir()
        self.network, self.pki, self.shared, self.read_root = network, pki, shared, read_root
        self.db = root / "qlorad.db"
        self.ctl_flags = ["--token", token(self.db, "user", "alice"), "--ca-file", pki / "ca.pem"]
        self.workers = {}  # hostname -> Popen
        self.starts = 0

    def start(self):
        for host in self.network.hosts:
            self.hold_busy_ports(host)
        proc, log = self._spawn(["ip", "netns", "exec", self.network.coordinator.netns,
                                 binary("qlorad"), "--listen", f"{self.network.coordinator_address}:0",
                                 "--http", "off", "--db", self.db, "--heartbeat-timeout-ms", "2000",
                                 "--tls-cert", self.pki / "server.pem",
                                 "--tls-key", self.pki / "server.key"], "qlorad.log")
        self.coordinator = proc
        self.addr = wait_for_line(log, r"listening on (\d+\.\d+\.\d+\.\d+:\d+)", proc).group(1)
        assert self.addr.startswith(self.network.coordinator_address + ":"), self.addr
        return self

    def hold_busy_ports(self, host: Host):
        """Another program on `host` listening on network.busy_ports, for the test's length."""
        ports = list(self.network.busy_ports)
        holder = (f"import signal, socket\nheld = []\nfor p in {ports}:\n"
                  "    s = socket.socket(); s.bind(('0.0.0.0', p)); s.listen(); held.append(s)\n"
                  "print('holding', flush=True)\nsignal.pause()\n")
        proc, log = self._spawn(["ip", "netns", "exec", host.netns, sys.executable, "-c", holder],
                                f"busy-ports-{host.hostname}.log")
        wait_for_line(log, r"holding", proc)

    def start_worker_on(self, host: Host):
        """qlorad-worker inside `host`'s namespace, with that host's hostname; a restart reuses its
        work dir and so its credential."""
        self.starts += 1
        work = self.root / host.hostname
        advertise = ["--advertise-address", host.address] if self.network.advertise_addresses else []
        enroll = [] if (work / "worker-credential").exists() else ["--enroll-token", token(self.db, "enroll")]
        name_then_exec = 'hostname "$0" && exec "$@"'
        proc, log = self._spawn(["ip", "netns", "exec", host.netns, "unshare", "--uts", "sh", "-c",
                                 name_then_exec, host.hostname, binary("qlorad-worker"),
                                 "--coordinator", self.addr, "--cpu", "--name", host.hostname,
                                 "--work-dir", work, "--grace-period-s", "5",
                                 "--read-root", self.read_root, "--write-root", self.shared,
                                 "--ca-file", self.pki / "ca.pem", *enroll, *advertise],
                                f"worker-{host.hostname}-{self.starts}.log")
        self.workers[host.hostname] = proc
        wait_until(f"{host.hostname} to register",
                   lambda: "registered with" in log.read_text(errors="replace"), 60, self.logs)

    def trainers(self) -> dict:
        """hostname -> the argv of the trainer its worker runs now. Only children that run
        qlorad-train count: between fork and exec a child still shows the worker's own argv."""
        return {name: argv for name, p in self.workers.items() for pid in children(p.pid)
                if (argv := cmdline(pid)) and Path(argv[0]).name == "qlorad-train"}


def write_job(path: Path, model: Path, data: Path, out: Path) -> Path:
    """2 ranks of fsdp over Gloo in fp32, a checkpoint every EVERY steps; parallel.timeout_s bounds
    how long the surviving rank waits on a dead peer."""
    path.write_text(f"""
name: {path.stem}
model: {{path: {model}}}
quantization: {{type: nf4, block_size: 64, double_quant: true}}
lora: {{r: 4, alpha: 8, dropout: 0.0}}
data: {{path: {data}, max_seq_len: 24, packing: true, shuffle: true, seed: 5}}
train: {{max_steps: {STEPS}, micro_batch_size: 1, grad_accum: 2, lr: 1.0e-2, warmup_steps: 2,
        precision: fp32, seed: 7, max_grad_norm: 0.5}}
resources: {{device: cpu, gpus: {HOSTS}}}
parallel: {{strategy: fsdp, timeout_s: 20}}
scheduling: {{max_restarts: 3}}
checkpoint: {{every_steps: {EVERY}, keep: 2, output_dir: {out}}}
""")
    return path


def write_data(path: Path) -> Path:
    words = ["red", "green", "blue", "cyan", "magenta", "yellow", "black"]
    path.write_text("".join(json.dumps({"text": f"{words[i % 7]} then {words[(i * 3) % 7]} row {i}"}) + "\n"
                            for i in range(40)))
    return path


def losses(cluster: Cluster, job_id: str) -> list[tuple[int, int, int, float]]:
    """(attempt, rank, step, loss) of every metrics row the coordinator stored for the job."""
    res = cluster.ctl("--json", "watch", job_id, check=True)
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return [(r.get("attempt", 0), r.get("rank", 0), r["step"], r["loss"]) for r in rows
            if r.get("type") == "metrics"]


def checkpoint_steps(cluster: Cluster, job_id: str) -> list[int]:
    """Steps of the checkpoints the coordinator logged for the job so far."""
    logs = cluster.ctl("logs", job_id, check=True).stdout
    return [int(s) for s in re.findall(r"checkpoint at step (\d+)", logs)]


@pytest.fixture(scope="module")
def reference(namespaces_allowed, tmp_path_factory, tiny_model) -> tuple[Path, dict]:
    """The training data and step -> loss of the job on two workers on plain loopback: the
    single-host run."""
    root = tmp_path_factory.mktemp("loopback")
    data = write_data(root / "data.jsonl")
    job = write_job(root / "loopback.yaml", tiny_model, data, root / "out")
    c = Cluster(root)
    try:
        c.start_coordinator()
        for name in ("loop-a", "loop-b"):
            c.start_worker(root / name, name, f"worker-{name}.log",
                           roots=["--read-root", root.parent, "--write-root", root])
        job_id = json.loads(c.ctl("--json", "submit", job, check=True).stdout)["id"]
        assert c.wait_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"})["state"] == "COMPLETED", c.logs()
        rows = losses(c, job_id)
    finally:
        c.stop()
    assert {(a, s) for a, _, s, _ in rows} == {(0, s) for s in range(1, STEPS + 1)}, rows
    return data, {s: loss for _, rank, s, loss in rows if rank == 0}


def test_a_job_across_simulated_hosts_survives_losing_rank_0s_host(tmp_path, network, pki, tiny_model,
                                                                    reference):
    data, reference = reference

    shared = tmp_path / "shared"  # the shared file system: one folder every host writes under
    shared.mkdir()
    c = SimulatedHosts(tmp_path / "hosts", network, pki, shared, tmp_path.parent)
    try:
        c.start()
        for host in network.hosts:
            c.start_worker_on(host)
        job = write_job(tmp_path / "multihost.yaml", tiny_model, data, shared / "out")
        job_id = json.loads(c.ctl("--json", "submit", job, check=True).stdout)["id"]

        # Gang-scheduled: a trainer on each host, meeting at rank 0's host by what it advertised.
        trainers = wait_until("a trainer on every host", lambda: (t := c.trainers()) and
                              len(t) == HOSTS and t, 120, c.logs)
        rendezvous = {argv[argv.index("--rendezvous") + 1] for argv in trainers.values()}
        assert len(rendezvous) == 1, trainers
        at, port = rendezvous.pop().rsplit(":", 1)
        assert int(port) not in network.busy_ports, f"the coordinator's guess, busy at rank 0: {trainers}"
        rank0 = next((h for h in network.hosts if at in (h.hostname, h.address)), None)
        assert rank0, f"rendezvous at {at}, not a simulated host: {trainers}"
        assert at == (rank0.address if network.advertise_addresses else rank0.hostname), trainers
        rank0_host = rank0.hostname
        assert trainers[rank0_host][trainers[rank0_host].index("--rank") + 1] == "0", trainers

        wait_until("the first checkpoint", lambda: checkpoint_steps(c, job_id), 180, c.logs)
        assert c.job(job_id)["state"] == "RUNNING", "the job ended before its host could be lost"
        kill_machine(c.workers[rank0_host])
        c.start_worker_on(rank0)

        done = c.wait_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=240)
        assert done["state"] == "COMPLETED", f"{done}\n{c.logs()}"
        logs = c.ctl("logs", job_id, check=True).stdout
        resumed = re.findall(r"resuming from (\S+)", logs)
        assert resumed and all(Path(p).is_relative_to(shared / "out" / "checkpoints") for p in resumed), logs
        rows = losses(c, job_id)
    finally:
        c.stop()

    attempts = sorted({a for a, _, _, _ in rows})
    assert len(attempts) >= 2, f"no retry after the host was lost: {rows}"
    last = attempts[-1]
    first_resumed = min(s for a, _, s, _ in rows if a == last)
    assert first_resumed > EVERY, f"the last attempt started from scratch (step {first_resumed})"
    assert {s for a, _, s, _ in rows if a == last} == set(range(first_resumed, STEPS + 1))
    for attempt, rank, step, loss in rows:
        assert loss == pytest.approx(reference[step], rel=RTOL), \
            f"attempt {attempt} rank {rank} step {step}: {loss} vs single host {reference[step]}"
