"""The running stack: `kpc up/status/logs`, inside-container checks with testinfra, a registry
round trip, and a real proxy-DHCP exchange on the test's own network namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import testinfra

from appliance.drivers.docker import Docker
from tests.conftest import require_tool
from tests.services.conftest import (
    CLIENT_MAC,
    HOST_IP,
    LEASES,
    NS_CLIENT,
    ROUTER_IP,
    TAG,
    LabNet,
    Stack,
    kpc,
    write_config,
)

PROBE = Path(__file__).with_name("dhcp_probe.py")


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True)


def test_up_again_changes_nothing(stack: Stack) -> None:
    before = {s: docker("inspect", "-f", "{{.Id}}", stack.name(s)).stdout for s in ("registry",)}
    result = kpc(stack.config, "up")
    assert result.exit_code == 0, result.output
    for service in ("registry", "bootcfg", "dnsmasq"):
        assert f"{service}: keep (running and unchanged)" in result.stdout
        assert f"{service}: healthy" in result.stdout
    after = {s: docker("inspect", "-f", "{{.Id}}", stack.name(s)).stdout for s in ("registry",)}
    assert after == before


def test_status_shows_every_service(stack: Stack) -> None:
    asked = datetime.now(UTC)
    result = kpc(stack.config, "status", "--json")
    answered = datetime.now(UTC)
    assert result.exit_code == 0, result.output
    statuses = {s["service"]: s for s in json.loads(result.stdout)}
    assert set(statuses) == {"registry", "bootcfg", "dnsmasq"}
    for service, status in statuses.items():
        assert status["state"] == "running", status
        assert status["container"] == stack.name(service)
        assert status["image"] == f"kpcb/{service}:latest"
        assert status["problem"] is None and status["outdated"] is False
        # started when Docker says, and up for as long as that was before the status call
        started = docker("inspect", "-f", "{{.State.StartedAt}}", stack.name(service)).stdout
        started_at = datetime.fromisoformat(status["started_at"])
        assert abs(started_at - datetime.fromisoformat(started.strip())) < timedelta(seconds=1)
        up = timedelta(seconds=status["uptime_seconds"])
        assert asked - started_at - timedelta(seconds=1) <= up <= answered - started_at
    registry_port = stack.data["registry"]["port"]
    assert statuses["registry"]["ports"] == [f"127.0.0.1:{registry_port}->5000/tcp"]
    assert statuses["dnsmasq"]["ports"] == ["host-network"]
    table = kpc(stack.config, "status")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split() == [
        "SERVICE", "STATE", "HEALTH", "IMAGE", "PORTS", "UPTIME", "RESTARTS"
    ]  # fmt: skip


def test_inside_the_containers(stack: Stack) -> None:
    dnsmasq = testinfra.get_host(f"docker://{stack.name('dnsmasq')}")
    argv = dnsmasq.file("/proc/1/cmdline").content_string.split("\0")
    assert argv[0] == "dnsmasq"
    assert "--port=0" in argv and f"--interface={stack.data['provisioning']['interface']}" in argv
    assert "--dhcp-range=198.19.202.0,proxy,255.255.255.0" in argv
    for loader in ("undionly.kpxe", "snponly.efi", "ipxe.efi"):
        tftp = dnsmasq.file(f"/srv/tftp/{loader}")
        assert tftp.is_file and tftp.size > 10_000 and tftp.mode == 0o644
    fetched = dnsmasq.run(f"busybox tftp -g -r snponly.efi -l /tmp/kpcb.efi {HOST_IP}")
    assert fetched.rc == 0, fetched.stderr
    assert dnsmasq.file("/tmp/kpcb.efi").size == dnsmasq.file("/srv/tftp/snponly.efi").size

    registry = testinfra.get_host(f"docker://{stack.name('registry')}")
    assert registry.run("busybox wget -q -O- http://127.0.0.1:5000/v2/").stdout.strip() == "{}"
    assert registry.mount_point("/var/lib/docker-registry").exists

    bootcfg = testinfra.get_host(f"docker://{stack.name('bootcfg')}")
    port = stack.data["bootcfg"]["port"]
    healthz = bootcfg.run(f"busybox wget -q -O- http://127.0.0.1:{port}/healthz")
    assert healthz.stdout.strip() == "ok"
    assert bootcfg.file("/etc/kpc/kpc.yaml").is_file
    assert bootcfg.mount_point(stack.data["bootcfg"]["data_dir"]).exists
    assert bootcfg.check_output("kpc --version") == "kpc 0.1.0"


def test_bootcfg_answers_on_the_provisioning_address(stack: Stack) -> None:
    port = stack.data["bootcfg"]["port"]
    with urllib.request.urlopen(f"http://{HOST_IP}:{port}/healthz", timeout=5) as reply:
        assert reply.read().strip() == b"ok"


def test_registry_push_pull_round_trip(stack: Stack, tmp_path: Path) -> None:
    port = stack.data["registry"]["port"]
    (tmp_path / "hello.txt").write_text("kpcb registry round trip\n")
    subprocess.run(["tar", "-C", str(tmp_path), "-cf", str(tmp_path / "t.tar"), "hello.txt"],
                   check=True)  # fmt: skip
    local = f"{TAG}/tiny:1"
    remote = f"127.0.0.1:{port}/{TAG}/tiny:1"
    try:
        assert docker("import", str(tmp_path / "t.tar"), local).returncode == 0
        image_id = docker("image", "inspect", "-f", "{{.Id}}", local).stdout.strip()
        assert docker("tag", local, remote).returncode == 0
        pushed = docker("push", remote)
        assert pushed.returncode == 0, pushed.stderr
        assert docker("rmi", local, remote).returncode == 0
        assert docker("image", "inspect", remote).returncode != 0  # really gone locally
        pulled = docker("pull", remote)
        assert pulled.returncode == 0, pulled.stderr
        assert docker("image", "inspect", "-f", "{{.Id}}", remote).stdout.strip() == image_id
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/_catalog", timeout=5) as r:
            assert f"{TAG}/tiny" in json.load(r)["repositories"]
        blobs = Path(stack.data["registry"]["storage"]) / "docker" / "registry" / "v2" / "blobs"
        assert any(blobs.rglob("data")), "the pushed layers are in registry.storage"
    finally:
        docker("rmi", "-f", local, remote)


def test_logs(stack: Stack) -> None:
    result = kpc(stack.config, "logs", "dnsmasq", "--tail", "100000")
    assert result.exit_code == 0, result.output
    assert "DHCP, proxy on subnet 198.19.202.0" in result.stdout
    unknown = kpc(stack.config, "logs", "dhcpd")
    assert unknown.exit_code == 2 and "no such service: dhcpd" in unknown.stderr


def probe(arch: int, ipxe: bool = False) -> dict[str, Any]:
    argv = ["ip", "netns", "exec", NS_CLIENT, sys.executable, str(PROBE), "--iface", "eth0",
            "--mac", CLIENT_MAC, "--arch", str(arch), "--timeout", "8"]  # fmt: skip
    if ipxe:
        argv.append("--ipxe")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def check_exchange(result: dict[str, Any], expected_file: str) -> dict[str, Any]:
    """A lease from the site router only; boot information from the proxy only."""
    lease_range = range(int(LEASES[0].rsplit(".", 1)[1]), int(LEASES[1].rsplit(".", 1)[1]) + 1)
    offers = result["offers"]
    by_server = {o["options"]["54"]: o for o in offers}
    assert set(by_server) == {ROUTER_IP, HOST_IP}, offers
    lease, proxy = by_server[ROUTER_IP], by_server[HOST_IP]
    assert int(lease["yiaddr"].rsplit(".", 1)[1]) in lease_range
    assert proxy["yiaddr"] == "0.0.0.0"  # proxy DHCP: never an address
    assert proxy["options"]["60"] == "PXEClient"
    # everything the proxy ever sent carries no address; the ACK came from the router
    everything = offers + result["acks"] + result["late"]
    assert all(r["yiaddr"] == "0.0.0.0" for r in everything if r["from"] == HOST_IP)
    assert [(a["type"], a["from"]) for a in result["acks"]] == [("ACK", ROUTER_IP)]
    # PXE boot server discovery on port 4011: the boot file and where to get it
    boot = result["boot"]
    assert len(boot) == 1 and boot[0]["type"] == "ACK" and boot[0]["from"] == HOST_IP
    assert boot[0]["file"] == expected_file
    assert boot[0]["siaddr"] == HOST_IP
    return boot[0]


def test_proxy_dhcp_boots_bios_and_uefi_firmware_into_ipxe(stack: Stack, lab_net: LabNet) -> None:
    require_tool("busybox")
    check_exchange(probe(arch=0), "undionly.kpxe")
    check_exchange(probe(arch=7), "snponly.efi")
    # the boot file really comes over TFTP from the dnsmasq container, across the bridge
    subprocess.run(["ip", "-n", NS_CLIENT, "addr", "add", "198.19.202.99/24", "dev", "eth0"],
                   check=True)  # fmt: skip
    try:
        out = lab_net.router_log.parent / "undionly.kpxe"
        got = subprocess.run(
            ["ip", "netns", "exec", NS_CLIENT, "busybox", "tftp", "-g", "-r", "undionly.kpxe",
             "-l", str(out), HOST_IP],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert got.returncode == 0, got.stderr
        assert out.read_bytes() == Path("/usr/lib/ipxe/undionly.kpxe").read_bytes()
    finally:
        subprocess.run(["ip", "-n", NS_CLIENT, "addr", "flush", "dev", "eth0"], check=False)
    log = lab_net.router_log.read_text()
    assert "DHCPACK(eth0)" in log  # the site router handed out the lease


def test_proxy_dhcp_sends_ipxe_to_bootcfg(stack: Stack, lab_net: LabNet) -> None:
    del lab_net
    url = f"http://{HOST_IP}:{stack.data['bootcfg']['port']}/boot.ipxe"
    check_exchange(probe(arch=0, ipxe=True), url)
    check_exchange(probe(arch=7, ipxe=True), url)
    # and that URL answers from the client's side of the bridge
    subprocess.run(["ip", "-n", NS_CLIENT, "addr", "add", "198.19.202.98/24", "dev", "eth0"],
                   check=True)  # fmt: skip
    try:
        got = subprocess.run(
            ["ip", "netns", "exec", NS_CLIENT, "busybox", "wget", "-q", "-O", "-", url],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert got.returncode == 0, got.stderr
        assert got.stdout.startswith("#!ipxe")
    finally:
        subprocess.run(["ip", "-n", NS_CLIENT, "addr", "flush", "dev", "eth0"], check=False)


def test_a_config_change_recreates_only_what_it_concerns(stack: Stack, tmp_path: Path) -> None:
    data = json.loads(json.dumps(stack.data))
    data["services"]["health_timeout"] = 61  # read by bootcfg (the whole site config) only
    changed = write_config(tmp_path / "kpc.yaml", data)
    # same config file path matters for bootcfg's mount: write over the stack's own file
    original = stack.config.read_text()
    stack.config.write_text(changed.read_text())
    try:
        result = kpc(stack.config, "up")
        assert result.exit_code == 0, result.output
        assert "bootcfg: recreate (its configuration changed)" in result.stdout
        assert "registry: keep (running and unchanged)" in result.stdout
        assert "dnsmasq: keep (running and unchanged)" in result.stdout
    finally:
        stack.config.write_text(original)
        restored = kpc(stack.config, "up")
        assert restored.exit_code == 0, restored.output
        assert "bootcfg: recreate" in restored.stdout


def test_following_logs_stops_cleanly_when_the_reader_stops(stack: Stack) -> None:
    class Enough(Exception):
        pass

    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        raise Enough

    name = stack.name("dnsmasq")
    with pytest.raises(Enough):
        Docker(dict(os.environ)).follow_logs(name, on_line, tail=3)
    assert seen and seen[0].startswith("dnsmasq")
    left = subprocess.run(["pgrep", "-f", f"logs --follow --tail 3 {name}"], capture_output=True)
    assert left.returncode == 1, "a 'docker logs --follow' was left running"


def test_images_list(stack: Stack) -> None:
    result = kpc(stack.config, "images", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "ID", "SIZE", "CREATED", "VERSION", "REVISION"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["kpcb/dnsmasq:latest"][4] == "0.1.0"
    assert (
        rows["kpcb/dnsmasq:latest"][1]
        == docker("image", "inspect", "-f", "{{.Id}}", "kpcb/dnsmasq:latest").stdout.strip()[7:19]
    )
    assert rows["kpc/base:bookworm"][1] != "(not"
