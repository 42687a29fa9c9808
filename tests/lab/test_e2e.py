"""kpc provisions QEMU servers end to end, through the product's own commands only:

    kpc images build; kpc lab up --nodes 3 --firmware mixed --bmc mixed; kpc up;
    kpc bmc discover (ARP, then IPMI and Redfish);
    kpc pxe-all --yes; kpc lab wait  -> every server installed, rebooted from disk, ready

then: a server that is merely rebooted boots its disk (not the installer); 'kpc nodes
set-boot MAC install' + 'kpc pxe-all --only MAC' reinstalls one; 'kpc lab down' leaves
nothing behind. On failure the servers' serial logs and the services' logs are kept in
lab-run/artifacts/ (see tests/lab/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_docker, wait_for
from tests.lab.conftest import SITE_NET, kpc, leftovers, up_args
from tests.lab.conftest import nodes_by_mac as _nodes
from tests.lab.conftest import ok as _ok

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.docker, pytest.mark.slow]

NODES = 3
READY_TIMEOUT = 900  # seconds; 3 TCG servers on 2 shared cores take 1-3 minutes


def _boots(serial: Path, role: str) -> int:
    """How many times the lab OS started in ``role`` (install / installed) on this server."""
    text = serial.read_text(encoding="utf-8", errors="replace")
    return text.count(f", role {role}, ")


def test_kpc_provisions_the_lab_end_to_end(lab_dir: Path) -> None:
    require_docker()
    config = lab_dir / "kpc.yaml"
    up = kpc(up_args(lab_dir, NODES, "mixed", bmc="mixed"))
    assert up.code == 0, up.output
    servers = json.loads((lab_dir / "lab.json").read_text())["plan"]["servers"]
    macs = [s["mac"] for s in servers]
    assert [s["firmware"] for s in servers] == ["bios", "uefi", "bios"]
    # a mixed fleet: IPMI, and Redfish-only BMCs (IPMI over LAN off) behind BIOS and UEFI
    assert [s["bmc"] for s in servers] == ["ipmi", "redfish", "redfish"]

    base = subprocess.run(["docker", "image", "inspect", "kpc/base:bookworm"], capture_output=True)
    if base.returncode != 0:
        _ok(["images", "base"], config)
    _ok(["images", "build", "dnsmasq", "bootcfg", "registry"], config)
    _ok(["up"], config)
    _ok(["bmc", "discover"], config)
    listed = json.loads(_ok(["bmc", "list", "--json"], config))
    protocols = {b["address"]: b["protocols"] for b in listed}
    for server in servers:
        assert protocols[server["bmc_address"]] == [server["bmc"]]
    started = time.monotonic()
    _ok(["pxe-all", "--yes"], config)
    _ok(["lab", "wait", "--dir", str(lab_dir), "--timeout", str(READY_TIMEOUT)], config)
    print(f"{NODES} servers ready {time.monotonic() - started:.0f}s after pxe-all")

    nodes = _nodes(config)
    listing = _ok(["nodes", "list"], config)
    for server in servers:
        node = nodes[server["mac"]]
        assert node["state"] == "ready" and node["boot"] == "local", node
        facts = node["facts"]
        assert isinstance(facts, dict)
        assert str(facts["address"]).startswith(SITE_NET), facts
        assert facts["os"] == {"name": "kpc-lab", "version": facts["os"]["version"]}
        assert facts["disks"][0]["name"] == "vda" and facts["disks"][0]["size"] == 2 * 1024**3
        assert facts["bmc_address"] == server["bmc_address"]
        assert str(facts["hostname"]) in listing
    serials = {
        s["mac"]: lab_dir / "servers" / f"server{s['index']}" / "serial.log" for s in servers
    }
    for mac in macs:
        assert _boots(serials[mac], "install") == 1 and _boots(serials[mac], "installed") == 1

    # the key kpc put into every node's Ignition grants SSH access to every installed node:
    # kpc's own readiness check logs in (recording each host key on first use; the lab OS
    # has no Docker or Python and a small disk, so only those checks may merely warn) ...
    _ok(
        ["nodes", "check", *(f"--optional={c}" for c in ("docker", "python", "disk", "clock"))],
        config,
    )
    keyed = _nodes(config)
    assert all(str(keyed[mac]["ssh_host_key"]).startswith("ssh-") for mac in macs), keyed
    # ... and runs a command on all of them in parallel
    ran = _ok(["nodes", "exec", "--collect", "--", "cat", "/proc/sys/kernel/hostname"], config)
    for mac in macs:
        assert str(nodes[mac]["facts"]["hostname"]) in ran, ran  # type: ignore[index]

    # a server that is merely rebooted boots its disk, not the installer
    first = macs[0]
    seen = float(str(nodes[first]["last_seen"])) if nodes[first].get("last_seen") else 0.0
    _ok(["bmc", "power", "reset", first, "--yes"], config)
    wait_for(
        lambda: _boots(serials[first], "installed") == 2, 300, "server1 to boot its disk again"
    )

    def checked_in_again() -> bool:
        node = _nodes(config)[first]
        return node["state"] == "ready" and float(str(node.get("last_seen") or 0)) > seen

    wait_for(checked_in_again, 300, "server1 to check in again after its reboot", interval=2.0)
    assert _boots(serials[first], "install") == 1

    # set-boot install + pxe-all --only MAC reinstalls exactly that server (a UEFI one)
    again = macs[1]
    _ok(["nodes", "set-boot", again, "install", "--yes"], config)
    _ok(["pxe-all", "--only", again, "--yes"], config)
    wait_for(lambda: _boots(serials[again], "install") == 2, 300, "server2 to run the installer")
    _ok(["lab", "wait", "--dir", str(lab_dir), "--timeout", str(READY_TIMEOUT)], config)
    assert _boots(serials[again], "installed") == 2
    assert _boots(serials[macs[2]], "install") == 1  # the others were left alone

    down = kpc(["lab", "down", "--dir", str(lab_dir)])
    assert down.code == 0, down.output
    assert leftovers(lab_dir) == []
