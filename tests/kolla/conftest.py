"""The Kolla lab: the real kolla_deployer image, "kolla nodes" on a private network, a real
bootcfg for their check-in, and real Docker registries on loopback.

Nodes are containers of ``tests/kolla/target`` (Debian 13, systemd as PID 1, sshd, sudo,
Python 3) on an internal Docker network this session creates. --privileged does not work on
this engine, so a node cannot run its own dockerd: each node gets the test host's engine
(its socket, and its volume directory read-only so kolla can link the kolla_logs volume).
Everything is named with the ``kpch`` prefix and removed at the end.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from appliance.cli.main import app
from appliance.drivers.docker import BuildRequest, Docker
from tests.bootcfg.server import Server
from tests.conftest import require_docker, require_tool, wait_for

TAG = "kpch"
BASE = "kpc/base:bookworm"
NODE_BASE = "kpc/base:trixie"  # the Kolla release's host OS (and its images' base)
DEPLOYER = f"{TAG}/kolla_deployer:latest"
NODE_IMAGE = f"{TAG}/kolla-node:latest"
NETWORK = f"{TAG}-kolla"
SUBNET = "100.77.231.0/24"  # shared address space: not used by the other labs here
GATEWAY = "100.77.231.1"
VIP = "100.77.231.250"
KOLLA_LOGS = "kolla_logs"  # the volume kolla-ansible's common role creates

# A small deployment: kolla's own prechecks for the common services, MariaDB and Memcached.
SMALL_GLOBALS: dict[str, Any] = {
    "enable_openstack_core": False,
    "enable_haproxy": False,
    "enable_keepalived": False,
    "enable_rabbitmq": False,
    "enable_fluentd": False,
    "enable_mariadb": True,
    "enable_memcached": True,
    # The nodes cannot reach an NTP server (no traffic leaves this machine).
    "prechecks_enable_host_ntp_checks": False,
}


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def kpc(config: Path, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, ["-c", str(config), *args], input=stdin)


# --- registries ---------------------------------------------------------------------------


@dataclass
class LocalRegistry:
    """Debian's docker-registry serving a temporary directory on a loopback port."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalRegistry:
        config = self.root / "config.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}},
                    "http": {"addr": self.address},
                }
            ),
            encoding="utf-8",
        )
        log = (self.root / "registry.log").open("wb")
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

        def answers() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_for(answers, 20, f"docker-registry on {self.address}", alive=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def registries(tmp_path: Path) -> Iterator[list[LocalRegistry]]:
    """Start registries on demand (``make()``); all are stopped at the end."""
    require_tool("docker-registry")
    started: list[LocalRegistry] = []
    yield started
    for registry in started:
        registry.stop()


def make_registry(started: list[LocalRegistry], root: Path) -> LocalRegistry:
    root.mkdir(parents=True, exist_ok=True)
    registry = LocalRegistry(root).start()
    started.append(registry)
    return registry


# --- images -------------------------------------------------------------------------------


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def kolla_images(tmp_path_factory: pytest.TempPathFactory) -> str:
    """kpc's kolla_deployer image (built by 'kpc images build') and the node image."""
    require_docker()
    for base, hint in ((BASE, "kpc images base"), (NODE_BASE, "kpc images base --suite trixie")):
        if docker("image", "inspect", base, check=False).returncode != 0:
            pytest.fail(f"the base image {base} is missing: run '{hint}' first")
    root = tmp_path_factory.mktemp("kolla-images")
    config = write_config(
        root / "kpc.yaml",
        {
            "provisioning": {"interface": "lo", "address": "127.0.0.1", "subnet": "127.0.0.0/8"},
            "images": {"prefix": TAG, "base": BASE},
        },
    )
    result = kpc(config, "images", "build", "kolla_deployer")
    assert result.exit_code == 0, result.output
    target = Path(__file__).parent / "target"
    Docker(os.environ).build(
        BuildRequest(target, target / "Dockerfile", NODE_IMAGE, build_args={"BASE": NODE_BASE}),
        lambda line: None,
    )
    return DEPLOYER


# --- the lab ------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    address: str
    mac: str
    facts: dict[str, Any]


@dataclass
class KollaLab:
    root: Path
    config: Path
    nodes: list[Node]
    bootcfg: Server
    data: dict[str, Any]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def reconfigure(self, **kolla: Any) -> None:
        self.data["kolla"].update(kolla)
        write_config(self.config, self.data)


def _docker_root() -> str:
    return docker("info", "--format", "{{.DockerRootDir}}").stdout.strip() or "/var/lib/docker"


def _start_node(name: str, address: str, keys: Path) -> str:
    docker(
        "run", "-d", "--name", name, "--hostname", name,
        "--network", NETWORK, "--ip", address,
        "--cap-add", "SYS_ADMIN", "--tmpfs", "/run", "--tmpfs", "/run/lock",
        "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        "--volume", "/var/run/docker.sock:/run/docker.sock",
        "--volume", f"{_docker_root()}/volumes:/var/lib/docker/volumes:ro",
        "--volume", f"{keys}:/home/core/.ssh/authorized_keys:ro",
        "--label", f"{TAG}=kolla-lab",
        NODE_IMAGE,
    )  # fmt: skip
    info = json.loads(docker("inspect", name).stdout)[0]
    return str(info["NetworkSettings"]["Networks"][NETWORK]["MacAddress"])


def _booted(name: str) -> bool:
    state = docker("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
    if state not in ("running", "degraded"):
        return False
    with socket.create_connection((_address_of(name), 22), timeout=1) as conn:
        return conn.recv(4).startswith(b"SSH")


def _address_of(name: str) -> str:
    info = json.loads(docker("inspect", name).stdout)[0]
    return str(info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"])


def _cleanup(names: list[str]) -> None:
    for name in names:
        docker("rm", "-f", name, check=False)
    docker("network", "rm", NETWORK, check=False)


@pytest.fixture(scope="module")
def kolla_lab(kolla_images: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KollaLab]:
    """Two nodes checked in through bootcfg; a site config pointing kpc at them."""
    require_tool("ssh-keygen", "docker-registry")
    root = tmp_path_factory.mktemp("kolla-lab")
    key = root / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kpch", "-f", str(key)], check=True
    )
    keys = root / "authorized_keys"
    keys.write_text(key.with_suffix(".pub").read_text(encoding="utf-8"), encoding="utf-8")
    keys.chmod(0o644)
    names = [f"{TAG}-node1", f"{TAG}-node2"]
    _cleanup(names)
    volume_existed = docker("volume", "inspect", KOLLA_LOGS, check=False).returncode == 0
    docker("network", "create", "--internal", "--subnet", SUBNET, "--gateway", GATEWAY, NETWORK)
    bootcfg: Server | None = None
    try:
        macs = [_start_node(name, f"100.77.231.{11 + i}", keys) for i, name in enumerate(names)]
        for name in names:
            wait_for(lambda name=name: _booted(name), 60, f"{name} to boot (systemd and sshd)")
        data_dir = root / "bootcfg"
        for sub in ("groups", "profiles", "ignition", "generic", "assets"):
            (data_dir / sub).mkdir(parents=True)
        ticks = itertools.count(1_700_000_000.0)  # node1 registers first, node2 second
        bootcfg = Server(data_dir, data_dir / "machines.db", clock=lambda: next(ticks)).start()
        os_release = [
            # node1 says it is Flatcar: kpc prepares its Python itself (bootstrap) and kolla's
            # host OS check is off for it; node2 is plain Debian 13.
            {"name": "Flatcar Container Linux by Kinvolk", "id": "flatcar", "version": "3815.2.5"},
            {"name": "Debian GNU/Linux", "id": "debian", "version": "13"},
        ]
        nodes = []
        for name, mac, osr in zip(names, macs, os_release, strict=True):
            address = _address_of(name)
            facts = {
                "hostname": name,
                "os": osr,
                "interfaces": [{"name": "eth0", "mac": mac, "addresses": [address]}],
                "disks": [{"name": "vda", "size": 20 * 2**30}],
                "address": address,
            }
            reply = bootcfg.post(f"/checkin?mac={mac}", facts)
            assert reply.status == 200, reply.text
            assert reply.json()["state"] == "ready"
            nodes.append(Node(name, address, mac, facts))
        data = {
            "provisioning": {"interface": "eth0", "address": GATEWAY, "subnet": SUBNET},
            "bootcfg": {"data_dir": str(data_dir)},
            "registry": {"address": "127.0.0.1", "port": free_port()},
            "kolla": {
                "internal_vip": VIP,
                "config_dir": str(root / "etc-kolla"),
                "roles": {"first": 1},
                "globals": dict(SMALL_GLOBALS),
            },
            "images": {"prefix": TAG, "base": BASE},
            "services": {"prefix": TAG},
            "ssh": {"private_key": str(key), "timeout": 10},
            "paths": {
                "state_dir": str(root / "state"),
                "log_dir": str(root / "log"),
            },
        }
        config = write_config(root / "kpc.yaml", data)
        yield KollaLab(root, config, nodes, bootcfg, data)
    finally:
        if bootcfg is not None:
            bootcfg.stop()
        _cleanup(names)
        if not volume_existed:
            docker("volume", "rm", KOLLA_LOGS, check=False)
