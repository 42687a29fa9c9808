"""Fixtures for the container and service tests (tag ``kpcb``: every name we create).

- ``built_images``: kpc's service images built once per session through ``kpc images build``
  (tagged ``kpcb/<name>:latest``; BuildKit's cache makes later sessions quick).
- ``lab_net``: network namespaces made here: a bridge, a "site router" running a plain DHCP
  server, a PXE client, and a veth in the host namespace that the (host-network) dnsmasq
  container serves on.
- ``stack``: ``kpc up`` of all services on that veth, with free loopback/bridge ports, torn
  down with ``kpc down --purge --yes``.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from appliance.cli.main import app
from tests.conftest import require_docker, require_root, require_tool, wait_for

TAG = "kpcb"
IMAGE_PREFIX = "kpcb"
SERVICE_IMAGES = ("dnsmasq", "registry", "bootcfg", "ipmitools")
BASE = "kpc/base:bookworm"

# the test's provisioning network (benchmarking range, RFC 2544), only inside our namespaces
SUBNET = "198.19.202.0/24"
ROUTER_IP = "198.19.202.1"
HOST_IP = "198.19.202.2"
LEASES = ("198.19.202.100", "198.19.202.150")
HOST_VETH = "kpcbh0"
NS_SWITCH, NS_ROUTER, NS_CLIENT = "kpcb-sw", "kpcb-rtr", "kpcb-cli"
CLIENT_MAC = "52:54:00:b0:0b:01"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def kpc(
    config: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> Any:
    """Run the kpc CLI in-process; returns Click's Result (output, stdout, stderr, exit_code)."""
    return CliRunner().invoke(app, ["-c", str(config), *args], env=env, input=input)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def site(
    root: Path,
    prefix: str,
    *,
    interface: str = "lo",
    address: str = "127.0.0.1",
    subnet: str = "127.0.0.0/8",
    images_prefix: str = IMAGE_PREFIX,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """A site config for tests: our own prefixes, ports and directories."""
    data: dict[str, Any] = {
        "provisioning": {"interface": interface, "address": address, "subnet": subnet},
        "bootcfg": {"listen": "127.0.0.1", "port": free_port(), "data_dir": str(root / "bootcfg")},
        "registry": {
            "address": "127.0.0.1",
            "port": free_port(),
            "storage": str(root / "registry"),
        },
        "os": {"version": "3815.2.5"},
        "images": {"prefix": images_prefix, "base": BASE},
        "services": {"prefix": prefix, "health_timeout": 60},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def docker_names() -> set[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True
    )
    return set(out.stdout.split())


@pytest.fixture(scope="session")
def built_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build kpc's service images once per session; returns the build's config and output."""
    require_docker()
    root = tmp_path_factory.mktemp("images")
    config = write_config(root / "kpc.yaml", site(root, f"{TAG}-img"))
    probe = subprocess.run(["docker", "image", "inspect", BASE], capture_output=True)
    if probe.returncode != 0:  # a fresh machine (CI): make it the product's way
        require_root()
        made = kpc(config, "images", "base")
        assert made.exit_code == 0, made.output
    result = kpc(config, "images", "build", *SERVICE_IMAGES)
    assert result.exit_code == 0, result.output
    return {"config": config, "output": result.output}


@dataclass(frozen=True)
class LabNet:
    interface: str
    host_ip: str
    subnet: str
    router_log: Path


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


def _teardown_net() -> None:
    for ns in (NS_CLIENT, NS_ROUTER, NS_SWITCH):
        _ip("netns", "del", ns, check=False)
    _ip("link", "del", HOST_VETH, check=False)


@pytest.fixture(scope="session")
def lab_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabNet]:
    """Bridge + site router (plain DHCP) + PXE client namespaces; a host veth for dnsmasq."""
    require_root()
    require_tool("ip", "dnsmasq")
    root = tmp_path_factory.mktemp("net")
    _teardown_net()  # leftovers of an interrupted run
    router: subprocess.Popen[bytes] | None = None
    try:
        for ns in (NS_SWITCH, NS_ROUTER, NS_CLIENT):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", NS_SWITCH, "link", "add", "br0", "type", "bridge")
        _ip("-n", NS_SWITCH, "link", "set", "br0", "type", "bridge", "stp_state", "0",
            "forward_delay", "0")  # fmt: skip
        _ip("-n", NS_SWITCH, "link", "set", "br0", "up")
        _ip("link", "add", HOST_VETH, "type", "veth", "peer", "name", "hp", "netns", NS_SWITCH)
        _ip("addr", "add", f"{HOST_IP}/24", "dev", HOST_VETH)
        _ip("link", "set", HOST_VETH, "up")
        for port, ns, extra in (("rp", NS_ROUTER, []), ("cp", NS_CLIENT, ["address", CLIENT_MAC])):
            _ip("-n", NS_SWITCH, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns, *extra)  # fmt: skip
            _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", NS_SWITCH, "link", "set", "hp", "master", "br0", "up")
        _ip("-n", NS_SWITCH, "link", "set", "rp", "master", "br0", "up")
        _ip("-n", NS_SWITCH, "link", "set", "cp", "master", "br0", "up")
        _ip("-n", NS_ROUTER, "addr", "add", f"{ROUTER_IP}/24", "dev", "eth0")
        log = root / "router.log"
        router = subprocess.Popen(
            ["ip", "netns", "exec", NS_ROUTER, "dnsmasq", "--keep-in-foreground",
             "--conf-file=/dev/null", "--port=0", "--interface=eth0", "--bind-interfaces",
             "--no-ping", f"--dhcp-range={LEASES[0]},{LEASES[1]},255.255.255.0,10m",
             f"--dhcp-leasefile={root / 'router.leases'}", f"--log-facility={log}",
             "--log-dhcp"],
        )  # fmt: skip
        wait_for(
            lambda: log.exists() and "DHCP, IP range" in log.read_text(),
            10,
            "the site router's DHCP server",
            alive=router,
        )
        yield LabNet(HOST_VETH, HOST_IP, SUBNET, log)
    finally:
        if router is not None:
            router.terminate()
            router.wait(timeout=10)
        _teardown_net()


@dataclass(frozen=True)
class Stack:
    config: Path
    data: dict[str, Any]
    prefix: str

    def name(self, service: str) -> str:
        return f"{self.prefix}-{service}"


@pytest.fixture(scope="session")
def stack(
    built_images: dict[str, Any], lab_net: LabNet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """All three services up on the lab network (bootcfg published on the host's address)."""
    root = tmp_path_factory.mktemp("stack")
    prefix = f"{TAG}-s{os.getpid() % 1000}"
    data = site(
        root,
        prefix,
        interface=lab_net.interface,
        address=lab_net.host_ip,
        subnet=lab_net.subnet,
        bootcfg={"listen": lab_net.host_ip, "port": free_port(lab_net.host_ip)},
    )
    config = write_config(root / "kpc.yaml", data)
    try:
        result = kpc(config, "up")
        assert result.exit_code == 0, result.output
        yield Stack(config, data, prefix)
    finally:
        down = kpc(config, "down", "--purge", "--yes")
        assert down.exit_code == 0, down.output
        assert not {n for n in docker_names() if n.startswith(prefix + "-")}
