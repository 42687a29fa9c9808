"""Two deploy hosts back each other up (kpc lab up --deploy-hosts 2):

    kpc lab up --nodes 2 --deploy-hosts 2   -> a second deploy host in its own namespace,
                                               a 3-member etcd cluster both hosts use
    kpc up (each host's config)             -> two dnsmasq proxy-DHCPs, two bootcfgs
    kpc pxe-all --yes; once the servers run their installer, stop the services (dnsmasq +
    bootcfg) of the deploy host that served server1  -> every server still reaches ready,
    reporting its install and check-in to the other host

and every CLI command sees the same machines from either host's config.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from appliance.config import load_config
from tests.conftest import require_docker, require_tool, wait_for
from tests.lab.conftest import PREFIX, kpc, leftovers, up_args
from tests.lab.conftest import nodes_by_mac as _machines
from tests.lab.conftest import ok as _ok

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.docker, pytest.mark.slow]

NODES = 2
READY_TIMEOUT = 900  # seconds; TCG servers on 2 shared cores
INSTALLER = re.compile(r"kpc-labos: fetching install config (http://[0-9.]+:\d+)/ignition")


def _base_image(tmp_path: Path) -> None:
    """kpc's base image: the second deploy host's namespace is held by a container of it."""
    base = subprocess.run(["docker", "image", "inspect", "kpc/base:bookworm"], capture_output=True)
    if base.returncode != 0:
        bare = tmp_path / "base.yaml"
        bare.write_text("provisioning: {interface: lo, address: 127.0.0.1, subnet: 127.0.0.0/8}\n")
        _ok(["images", "base"], bare)


def _hosts(configs: list[Path]) -> dict[str, tuple[Path, str]]:
    """bootcfg URL -> (site config, container prefix) of each deploy host."""
    hosts = {}
    for config, prefix in zip(configs, (PREFIX, f"{PREFIX}-h2"), strict=True):
        hosts[load_config(config).bootcfg_url] = (config, prefix)
    assert len(hosts) == 2, hosts
    return hosts


def _console(serial: Path) -> str:
    return serial.read_text(encoding="utf-8", errors="replace") if serial.is_file() else ""


def _docker_logs(name: str) -> str:
    done = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
    return done.stdout + done.stderr


# full: ~3.5 min warm (2 TCG servers, a second host's services, 3 etcd members), beyond the
# one chain CI must run (scripts/test --full runs it); CI runs the one below instead
@pytest.mark.full
def test_two_deploy_hosts_back_each_other_up(lab_dir: Path, tmp_path: Path) -> None:
    require_docker()
    require_tool("etcd")
    _base_image(tmp_path)
    up = kpc([*up_args(lab_dir, NODES, "bios"), "--deploy-hosts", "2"])
    assert up.code == 0, up.output
    configs = [lab_dir / "kpc.yaml", lab_dir / "kpc-2.yaml"]
    plan = json.loads((lab_dir / "lab.json").read_text())["plan"]
    servers = plan["servers"]
    macs = [s["mac"] for s in servers]
    serials = {
        s["mac"]: lab_dir / "servers" / f"server{s['index']}" / "serial.log" for s in servers
    }

    _ok(["images", "build", "dnsmasq", "bootcfg", "registry"], configs[0])
    for config in configs:
        _ok(["up"], config)
    hosts = _hosts(configs)

    _ok(["bmc", "discover"], configs[0])
    started = time.monotonic()
    _ok(["pxe-all", "--yes"], configs[1])  # either host drives the BMCs: one registry

    # every server runs the installer (its kernel and initrd loaded from some deploy host)
    def installers() -> dict[str, str] | None:
        found = {mac: INSTALLER.search(_console(serials[mac])) for mac in macs}
        if not all(found.values()):
            return None
        return {mac: match.group(1) for mac, match in found.items() if match}

    served = wait_for(installers, 600, "every server to run the installer", interval=0.2)
    assert isinstance(served, dict)
    # both hosts answered every server's PXE request with their own bootcfg
    for url, (_, prefix) in hosts.items():
        dhcp = _docker_logs(f"{prefix}-dnsmasq")
        for mac in macs:
            assert re.search(rf"PXE\S* {mac} proxy", dhcp), (url, mac, dhcp[-2000:])
    # ... so stop the deploy host that served server1, while it installs
    dead = served[macs[0]]
    survivor = next(url for url in hosts if url != dead)
    _, dead_prefix = hosts[dead]
    stop = subprocess.run(
        ["docker", "stop", "-t", "1", f"{dead_prefix}-dnsmasq", f"{dead_prefix}-bootcfg"],
        capture_output=True,
        text=True,
    )
    assert stop.returncode == 0, stop.stderr
    print(f"served: {served}; stopped the services of {dead}")

    config = hosts[survivor][0]
    _ok(["lab", "wait", "--dir", str(lab_dir), "--timeout", str(READY_TIMEOUT)], config)
    print(f"{NODES} servers ready {time.monotonic() - started:.0f}s after pxe-all")
    seen = [_machines(c) for c in configs]  # the CLI works from the dead host's config too
    for mac in macs:
        assert seen[0][mac]["state"] == "ready", seen[0][mac]
        assert {k: seen[0][mac][k] for k in ("state", "boot")} == {
            k: seen[1][mac][k] for k in ("state", "boot")
        }
    assert set(seen[0]) == set(seen[1]) == set(macs)
    first = _console(serials[macs[0]])
    assert f"install complete (reported to {survivor})" in first, first[-3000:]
    assert f"checked in with {survivor} as " in first, first[-3000:]
    for mac in macs:
        assert _console(serials[mac]).count(", role install, ") == 1  # installed once

    down = kpc(["lab", "down", "--dir", str(lab_dir)])
    assert down.code == 0, down.output
    assert leftovers(lab_dir) == []


def test_two_deploy_hosts_serve_one_registry(lab_dir: Path, tmp_path: Path) -> None:
    """The CI-sized proof (no server boots): both hosts' services come up, each in its own
    namespace, and a machine one host's bootcfg saw is the other host's too."""
    require_docker()
    require_tool("etcd")
    _base_image(tmp_path)
    up = kpc([*up_args(lab_dir, 1, "bios"), "--deploy-hosts", "2"])
    assert up.code == 0, up.output
    configs = [lab_dir / "kpc.yaml", lab_dir / "kpc-2.yaml"]
    _ok(["images", "build", "dnsmasq", "bootcfg", "registry"], configs[0])
    for config in configs:
        _ok(["up"], config)
    urls = list(_hosts(configs))

    # the second host's services share its holder's namespace: nothing on this host's ports
    def inspect(what: str, name: str) -> str:
        done = subprocess.run(["docker", "inspect", "-f", what, name], capture_output=True)
        return done.stdout.decode().strip()

    holder = inspect("{{.Id}}", f"{PREFIX}-dh2")
    for service in ("dnsmasq", "bootcfg", "registry"):
        mode = inspect("{{.HostConfig.NetworkMode}}", f"{PREFIX}-h2-{service}")
        assert mode == f"container:{holder}", (service, mode)
    mac = "52:54:00:c6:12:01"
    script = urllib.request.urlopen(f"{urls[1]}/ipxe?mac={mac}", timeout=10).read().decode()
    assert script.startswith("#!ipxe") and f"{urls[1]}/ignition" in script, script
    assert f"kpc.bootcfg.also={urls[0]}" in script, script  # the installer's fallback
    seen = [_machines(c) for c in configs]
    assert seen[0][mac]["state"] == seen[1][mac]["state"] == "installing", seen

    down = kpc(["lab", "down", "--dir", str(lab_dir)])
    assert down.code == 0, down.output
    assert leftovers(lab_dir) == []
