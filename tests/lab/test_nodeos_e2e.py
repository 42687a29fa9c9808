"""The lab with the node OS: kpc's real install and targetnode Ignition on real Ignition.

    kpc lab up --os node --nodes 2 --firmware mixed; kpc up; kpc bmc discover;
    kpc pxe-all --yes; kpc lab wait  -> both servers installed, rebooted, checked in

bootcfg serves the node OS exactly where 'kpc assets fetch' puts Flatcar's release, behind
the unchanged install profile and the unchanged install/targetnode templates. Then, from
inside each node through 'kpc nodes exec': Ignition's own result record, the core user's
keys (exactly the lab's), the targetnode files and units, the check-in sent by kpc-checkin,
Docker active. Then 'kpc kolla genconfig' and 'kpc kolla bootstrap' (kpc's Flatcar
preparation: Python from the sysext bootcfg serves, a venv with the deployer's wheels), and
'kpc nodes check' passes every check on every node (OS, Docker, Python, clock, disk). BIOS
and UEFI.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import GaveUp, require_docker, wait_for
from tests.lab.conftest import SITE_NET, build_kolla_deployer, kpc, up_args

pytestmark = [
    pytest.mark.root,
    pytest.mark.qemu,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.timeout(5400),
]

NODES = 2
MEMORY_MIB = 1536  # the PXE root (230 MB) in RAM, then Docker and Ansible: no Kolla services
READY_TIMEOUT = 2400  # seconds: two TCG servers install a 240 MB image on shared cores

PROBE = (
    "echo result=$(sudo cat /etc/.ignition-result.json | tr -d '\\n');"
    " echo keys=$(sudo cat /home/core/.ssh/authorized_keys.d/ignition | tr '\\n' '|');"
    " echo checkin=$(systemctl is-enabled kpc-checkin.service);"
    " echo reported=$(sudo journalctl -b -u kpc-checkin.service -o cat | grep -c 'reported to');"
    # a node checks in before dockerd is up: under TCG its start takes minutes
    " timeout 900 sh -c 'until systemctl is-active -q docker.service; do sleep 2; done';"
    " echo docker=$(systemctl is-active docker.service);"
    " echo daemon=$(tr -d ' \\n' < /etc/docker/daemon.json);"
    " echo python=$(python3 -c 'import sys; print(sys.version_info[0])');"
    " echo os=$(. /etc/os-release; echo $ID-$VERSION_ID);"
    " echo firstboot=$(grep -c flatcar.first_boot=detected /proc/cmdline);"
    " echo flag=$(sudo ls /boot/flatcar | grep -c first_boot);"  # the ESP, automounted
    # as the login user, as kolla's loadbalancer precheck pings the VIP (the lab's router)
    f" echo ping=$(ping -c 1 -W 10 {SITE_NET}1 >/dev/null 2>&1 && echo ok || echo failed)"
)


# kolla's modules run under kpc's venv on a Flatcar node (the inventory's interpreter)
VENV_PROBE = (
    "echo venv=$(/opt/kpc/python/bin/python3 -c"
    " 'import docker, dbus, sys; print(docker.__version__, sys.prefix)')"
)
EVERY_CHECK = ("os", "docker", "python", "clock", "disk")


def _ok(args: list[str], config: Path) -> str:
    result = kpc(args, config)
    assert result.code == 0, f"kpc {' '.join(args)} failed:\n{result.output}"
    return result.output


def _exec_once_ssh_answers(mac: str, config: Path) -> str:
    """The probe's output on ``mac``. A busy TCG node's sshd may accept a connection yet
    not send its banner within kpc's connect timeout: that is retried until the deadline;
    any other failure fails at once."""
    args = ["nodes", "exec", "--timeout", "1000", "--only", mac, "--", PROBE]

    def attempt() -> str | None:
        result = kpc(args, config)
        if result.code == 0:
            return result.output
        if "does not speak SSH in time" in result.output:
            return None
        raise GaveUp(f"kpc {' '.join(args)} failed:\n{result.output}")

    return str(wait_for(attempt, 600, f"{mac}'s SSH server to answer", interval=5))


def _values(output: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in output.splitlines():
        for word in ("result", "keys", "checkin", "reported", "docker", "daemon", "python", "ping"):
            marker = f"{word}="
            if marker in line:
                found[word] = line.split(marker, 1)[1].strip()
        for word in ("os", "firstboot", "flag"):
            if f" {word}=" in f" {line}":
                found[word] = line.split(f"{word}=", 1)[1].strip()
    return found


def test_node_os_runs_kpcs_real_ignition_in_the_lab(lab_dir: Path) -> None:
    require_docker()
    config = lab_dir / "kpc.yaml"
    up = kpc([*up_args(lab_dir, NODES, "mixed", os_kind="node"), "--memory", str(MEMORY_MIB)])
    assert up.code == 0, up.output
    lab = json.loads((lab_dir / "lab.json").read_text())
    servers = lab["plan"]["servers"]
    assert [s["firmware"] for s in servers] == ["bios", "uefi"]
    version = Path(lab["lab_os"]).joinpath("manifest.json")
    node_os_version = json.loads(version.read_text())["version"]
    profile = json.loads((lab_dir / "bootcfg/profiles/install.json").read_text())
    assert profile["boot"]["kernel"] == (
        f"/assets/flatcar/{node_os_version}/flatcar_production_pxe.vmlinuz"
    )

    _ok(["images", "build", "dnsmasq", "bootcfg", "registry"], config)
    _ok(["up"], config)
    _ok(["bmc", "discover"], config)
    started = time.monotonic()
    _ok(["pxe-all", "--yes"], config)
    _ok(["lab", "wait", "--dir", str(lab_dir), "--timeout", str(READY_TIMEOUT)], config)
    print(f"{NODES} node OS servers ready {time.monotonic() - started:.0f}s after pxe-all")

    listed = json.loads(_ok(["nodes", "list", "--json"], config))
    rows = listed["machines"] if isinstance(listed, dict) else listed
    nodes = {str(m["mac"]): m for m in rows}
    key = (lab_dir / "ssh" / "id_ed25519.pub").read_text().split()[:2]
    for server in servers:
        node = nodes[server["mac"]]
        assert node["state"] == "ready" and node["boot"] == "local", node
        facts = node["facts"]
        assert facts["os"] == {"name": "flatcar", "version": node_os_version}, facts
        assert facts["disks"][0]["size"] == 40 * 1024**3, facts

        ran = _exec_once_ssh_answers(server["mac"], config)
        got = _values(ran)
        result = json.loads(got["result"])
        assert result["userConfigProvided"] is True, got
        keys = [k for k in got["keys"].split("|") if k]
        assert [k.split()[:2] for k in keys] == [key], got
        assert got["checkin"] == "enabled" and int(got["reported"]) >= 1, got
        assert got["docker"] == "active", got
        assert "insecure-registries" in got["daemon"], got
        assert got["python"] == "3", got
        assert got["ping"] == "ok", got  # unprivileged ICMP, as on Flatcar
        assert got["os"] == f"flatcar-{node_os_version}", got
        # this is the first boot from disk (Ignition ran in its initramfs), and the ESP's
        # first-boot flag is gone: the next boot will not run Ignition again
        assert got["firstboot"] == "1" and got["flag"] == "0", got

    # Kolla's side: kpc's Flatcar preparation (Python from the sysext, a venv with the
    # Docker SDK and dbus-python from the deployer's wheels), then every check on every node
    build_kolla_deployer(config)
    _ok(["kolla", "genconfig"], config)
    inventory = (lab_dir / "kolla" / "inventory").read_text()
    flatcar = inventory.split("\n[flatcar]\n", 1)[1].split("\n\n", 1)[0].split()
    assert len(flatcar) == NODES, inventory  # both get kpc's Python (bootstrap), not kolla's
    began = time.monotonic()
    assert "kolla bootstrap: done" in _ok(["kolla", "bootstrap"], config)
    print(f"kpc kolla bootstrap took {time.monotonic() - began:.0f}s")
    venv = _ok(["nodes", "exec", "--", VENV_PROBE], config)
    assert venv.count("venv=7.1.0 /opt/kpc/python") == NODES, venv

    checked = json.loads(_ok(["nodes", "check", "--json"], config))
    assert checked["fit"] is True and len(checked["nodes"]) == NODES, checked
    for node in checked["nodes"]:
        statuses = {name: check["status"] for name, check in node["checks"].items()}
        assert statuses == dict.fromkeys(EVERY_CHECK, "ok"), node
