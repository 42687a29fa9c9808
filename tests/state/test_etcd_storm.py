"""Two deploy hosts (two real ``kpc bootcfg serve``) on one 3-member etcd cluster (Debian's
etcd-server, loopback ports 23720-23722/23820-23822), under a storm of requests for the
same machines; ``kill -9`` of an etcd member and of one bootcfg mid-storm; then quorum lost
and regained.

What each client was told is logged (when it sent, what it got), and the registry is
checked against that log: every acknowledged write is present, no update is lost, and no
machine is sent into an install after its install-complete was acknowledged.

The hosts run the default trust model (``bootcfg.node_auth: per-machine``): each machine
reports its install with its own install token (read from the installer config a host
served it) and its SSH host key, and signs every check-in with that key, as a real node does.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.bootcfg.server import checkin_message
from appliance.drivers.etcd import EtcdClient
from appliance.state.etcd import EtcdStore
from appliance.state.model import BootMode, EventKind, MachineState
from tests.conftest import REPO, require_tool, wait_for
from tests.nodekey import Node
from tests.state.etcd_cluster import EtcdCluster

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl op@site"
MACS = [f"52:54:00:15:00:{i:02x}" for i in range(1, 7)]
CHECKINS = 4
INSTALLER = "flatcar_production_pxe"  # in the installer's boot script, never in local boot


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Host:
    name: str
    config: Path
    port: int
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "bootcfg", "serve", "--listen", "127.0.0.1",
             "--port", str(self.port), "--no-access-log"],
            env={**os.environ, "KPC_CONFIG": str(self.config)},
            stdout=(self.config.parent / f"{self.name}.log").open("a"),
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        wait_for(
            lambda: urllib.request.urlopen(f"{self.url}/healthz", timeout=2).status == 200,
            60,
            f"bootcfg {self.name} healthy",
            alive=self.proc,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Reply:
    status: int  # 0: no answer (connection refused or reset)
    text: str
    retry_after: str | None = None


def call(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=15) as reply:
            return Reply(reply.status, reply.read().decode())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read().decode(), exc.headers.get("Retry-After"))
    except (OSError, urllib.error.URLError) as exc:
        return Reply(0, str(exc))


@dataclass
class Log:
    """What every client was told, with when it asked and when it heard."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    installers: list[tuple[str, float]] = field(default_factory=list)  # (mac, sent)
    completed: dict[str, float] = field(default_factory=dict)  # mac -> acknowledged at
    checkins: dict[str, list[dict[str, object]]] = field(default_factory=dict)  # acked facts
    refused: int = 0
    unanswered: int = 0

    def note(self, reply: Reply) -> None:
        with self.lock:
            if reply.status == 0:
                self.unanswered += 1
            elif reply.status == 503:
                self.refused += 1
                assert reply.retry_after, "a 503 without Retry-After"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path_factory.mktemp("etcd3"), index=2, size=3)
    c.start()
    try:
        c.wait_healthy()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def hosts(cluster: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Host]]:
    root = tmp_path_factory.mktemp("hosts")
    (root / "op.pub").write_text(KEY + "\n")
    prefix = f"t{uuid.uuid4().hex[:10]}/"
    made = []
    for name in ("a", "b"):
        config = root / f"{name}.yaml"
        config.write_text(
            "provisioning: {interface: eth0, address: 198.18.0.1, subnet: 198.18.0.0/24}\n"
            f"bootcfg: {{data_dir: {root / name}, port: 8080}}\n"
            "os: {version: 3815.2.0}\n"
            f"paths: {{source_dir: {REPO}}}\n"
            f"state: {{backend: etcd, etcd: {{endpoints: [{', '.join(cluster.endpoints)}], "
            f"prefix: {prefix}}}}}\n"
        )
        subprocess.run(
            [sys.executable, "-m", "appliance", "bootcfg", "init", "--ssh-key",
             str(root / "op.pub")],
            env={**os.environ, "KPC_CONFIG": str(config)},
            check=True,
            capture_output=True,
        )  # fmt: skip
        made.append(Host(name, config, _free_port()))
    for host in made:
        host.start()
    try:
        yield made
    finally:
        for host in made:
            host.stop()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Node]:
    """Each machine's SSH host key."""
    require_tool("ssh-keygen")
    directory = tmp_path_factory.mktemp("nodes")
    return {mac: Node(directory, f"node{i}") for i, mac in enumerate(MACS)}


def install_token(ignition: str) -> str:
    """The install token in an installer config (the file the node sends it from)."""
    files = json.loads(ignition)["storage"]["files"]
    (source,) = [f["contents"]["source"] for f in files if f["path"] == "/etc/kpc/bootcfg-token"]
    header = urllib.parse.unquote(str(source).removeprefix("data:,")).strip()
    return header.removeprefix("Authorization: Bearer ")


def completion(node: Node, token: str) -> tuple[bytes, dict[str, str]]:
    """install-complete's body (the host key) and headers (the install token)."""
    return json.dumps({"host_key": node.public}).encode(), {"Authorization": f"Bearer {token}"}


def signed(node: Node, mac: str, body: bytes) -> dict[str, str]:
    """A check-in's headers: now, signed with the machine's host key."""
    when = int(time.time())
    return {
        "X-Kpc-Time": str(when),
        "X-Kpc-Signature": node.sign(checkin_message(mac, when, body)),
    }


def _registry(cluster: EtcdCluster, hosts: list[Host]) -> EtcdStore:
    text = hosts[0].config.read_text()
    prefix = text.split("prefix: ", 1)[1].split("}", 1)[0]
    return EtcdStore(EtcdClient(cluster.endpoints, timeout=5), prefix)


def _until_answered(
    log: Log,
    hosts: list[Host],
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[Reply, float]:
    """Ask any host until one gives a final answer (not 503, not silence); returns the
    answer and when the successful request was sent."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        host = random.choice(hosts)
        sent = time.monotonic()
        reply = call(host.url + path, method, body, headers)
        log.note(reply)
        if reply.status not in (0, 503):
            return reply, sent
        time.sleep(0.05)  # a node's retry pause (it also honours Retry-After)
    raise AssertionError(f"no host answered {method} {path} within 120 s")


def _node(log: Log, hosts: list[Host], mac: str, index: int, node: Node) -> None:
    """One machine's life: PXE into the installer, fetch its installer config (with its
    install token), report the install, boot locally, check in a few times (signed). Every
    step is retried on another host until one answers."""
    while True:
        reply, sent = _until_answered(log, hosts, f"/ipxe?mac={mac}")
        assert reply.status == 200, reply.text
        if INSTALLER in reply.text:
            with log.lock:
                log.installers.append((mac, sent))
            break
    reply, _ = _until_answered(log, hosts, f"/ignition?mac={mac}")
    assert reply.status == 200, reply.text
    body, headers = completion(node, install_token(reply.text))
    reply, _ = _until_answered(log, hosts, f"/install-complete?mac={mac}", "POST", body, headers)
    assert reply.status == 200, reply.text
    with log.lock:
        log.completed[mac] = time.monotonic()
    reply, _ = _until_answered(log, hosts, f"/ipxe?mac={mac}")
    assert INSTALLER not in reply.text, f"{mac} sent into a second install"
    for seq in range(CHECKINS):
        facts = {"hostname": f"node{index}", "address": f"198.18.0.{20 + index}", "seq": seq}
        body = json.dumps(facts).encode()
        headers = signed(node, mac, body)
        reply, _ = _until_answered(log, hosts, f"/checkin?mac={mac}", "POST", body, headers)
        assert reply.status == 200, reply.text
        with log.lock:
            log.checkins.setdefault(mac, []).append(facts)


def _noise(log: Log, hosts: list[Host], stop: threading.Event) -> None:
    """Machines rebooting at random: /ipxe for the same MACs on any host."""
    while not stop.is_set():
        mac = random.choice(MACS)
        sent = time.monotonic()
        reply = call(random.choice(hosts).url + f"/ipxe?mac={mac}")
        log.note(reply)
        if reply.status == 200 and INSTALLER in reply.text:
            with log.lock:
                log.installers.append((mac, sent))


def test_two_hosts_under_a_storm_survive_kill_9(
    cluster: EtcdCluster, hosts: list[Host], nodes: dict[str, Node]
) -> None:
    log = Log()
    stop = threading.Event()
    nodes = [
        threading.Thread(target=_node, args=(log, hosts, mac, i, nodes[mac]), name=f"node-{mac}")
        for i, mac in enumerate(MACS)
    ]
    noise = [threading.Thread(target=_noise, args=(log, hosts, stop)) for _ in range(3)]
    failures: list[BaseException] = []

    def guarded(target: threading.Thread) -> None:
        try:
            target.run()
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=guarded, args=(t,)) for t in nodes + noise]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: len(log.completed) >= 2, 120, "two installs acknowledged")
        cluster.kill(0)  # kill -9 an etcd member ...
        assert hosts[1].proc is not None
        hosts[1].proc.send_signal(signal.SIGKILL)  # ... and one deploy host's bootcfg
        hosts[1].proc.wait(10)
        for w in workers[: len(nodes)]:
            w.join(300)
    finally:
        stop.set()
        for w in workers:
            w.join(60)
    assert not failures, failures
    assert sorted(log.completed) == sorted(MACS)

    # no machine was sent into an install after its install-complete was acknowledged
    late = [(mac, sent) for mac, sent in log.installers if sent > log.completed[mac]]
    assert late == []

    cluster.start(0)  # the killed member rejoins on its old data
    cluster.wait_healthy()
    registry = _registry(cluster, hosts)
    try:
        for mac in MACS:
            machine = registry.get(mac)
            assert machine is not None
            # every acknowledged write is there: the install, the last check-in's facts
            assert (machine.state, machine.boot) == (MachineState.READY, BootMode.LOCAL)
            assert machine.facts == log.checkins[mac][-1]
            events = registry.events(mac, limit=1000)
            installed = [
                e for e in events if e.kind == EventKind.STATE and e.detail["to"] == "installed"
            ]
            assert len(installed) == 1, f"{mac} installed {len(installed)} times"
            checkins = [e for e in events if e.kind == EventKind.CHECKIN]
            assert len(checkins) >= CHECKINS  # none lost (a retried one may be twice)
        assert registry.check() == []
    finally:
        registry.close()
    assert log.unanswered > 0  # the killed host really was asked after it died


def test_quorum_lost_refuses_writes_but_known_machines_still_boot(
    cluster: EtcdCluster, hosts: list[Host], nodes: dict[str, Node]
) -> None:
    host = hosts[0]
    known, unknown = MACS[0], "52:54:00:15:00:ee"
    node = nodes[known]
    # the machine is known and boots locally (after the storm test, or made so here)
    if INSTALLER in call(f"{host.url}/ipxe?mac={known}").text:
        body, headers = completion(
            node, install_token(call(f"{host.url}/ignition?mac={known}").text)
        )
        reply = call(f"{host.url}/install-complete?mac={known}", "POST", body, headers)
        assert reply.status == 200, reply.text
    assert INSTALLER not in call(f"{host.url}/ipxe?mac={known}").text

    cluster.kill(1)
    cluster.kill(2)  # 1 of 3 left: no quorum
    try:
        facts = json.dumps({"hostname": "lost", "seq": 99}).encode()
        refused = wait_for(
            lambda: (
                (
                    r := call(
                        f"{host.url}/checkin?mac={known}", "POST", facts, signed(node, known, facts)
                    )
                ).status
                == 503
                and r
            ),
            60,
            "a check-in refused with 503",
        )
        assert isinstance(refused, Reply) and refused.retry_after
        assert "retry" in refused.text
        # the known machine is still told how to boot (from what was last read)
        served = wait_for(
            lambda: (r := call(f"{host.url}/ipxe?mac={known}")).status == 200 and r,
            60,
            "the known machine's boot script without quorum",
        )
        assert isinstance(served, Reply) and INSTALLER not in served.text
        assert call(f"{host.url}/ipxe?mac={unknown}").status == 503  # never a blind install
        health = call(f"{host.url}/healthz")
        assert health.status == 503 and health.retry_after
        # what 'kpc status' prints about the registry
        registry = _registry(cluster, hosts)
        try:
            writable, lines = registry.health()
        finally:
            registry.close()
        assert not writable
        assert "NO QUORUM (1 of 3 listed members answer): writes are refused" in lines[0]
        assert sum("not answering" in line for line in lines[1:]) == 2
    finally:
        cluster.start(1)
        cluster.start(2)
    cluster.wait_healthy()
    wait_for(
        lambda: (
            call(
                f"{host.url}/checkin?mac={known}", "POST", facts, signed(node, known, facts)
            ).status
            == 200
        ),
        60,
        "check-ins accepted again with quorum back",
    )
    registry = _registry(cluster, hosts)
    try:
        writable, lines = registry.health()
        assert writable and "writable (3 of 3 members answer)" in lines[0]
        machine = registry.get(known)
        assert machine is not None and machine.facts == {"hostname": "lost", "seq": 99}
        assert registry.check() == []
    finally:
        registry.close()
