"""The node OS's faults in the lab, through kpc's own services and commands:

- an install image whose signature does not verify: the node OS's flatcar-install refuses
  it, the product's kpc-install says why on the console and stops, the server stays up and
  kpc never marks it installed;
- a config Ignition rejects (a file whose contents do not match its verification hash):
  Ignition's own error on the console, and 'kpc lab status' shows it as the server's line;
- a server that never checks in: 'kpc lab wait' names it with the end of its serial log.

Each fault is set up the way an operator could meet it, in the lab's bootcfg data
directory (matchbox's layout): a group per server MAC, one pointing the unchanged install
profile and template at an asset base whose signature is another file's, one serving a
raw Ignition config Ignition cannot apply. Two BIOS servers boot at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import require_docker, wait_for
from tests.lab.conftest import kpc, nodes_by_mac, ok, up_args

# 'full' (scripts/test --full), not CI: two node OS PXE boots under TCG cost minutes (the
# unsigned image is downloaded whole, 237 MB, before its signature is checked)
pytestmark = [
    pytest.mark.root,
    pytest.mark.qemu,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.full,
    pytest.mark.timeout(3600),
]

MEMORY_MIB = 1536  # a live node OS only: the PXE root in RAM, no Docker work
CONSOLE_TIMEOUT = 1800  # seconds: PXE of a 230 MB initramfs and a 237 MB download, under TCG
BAD_HASH = "sha512-" + "0" * 128
REJECTED = {
    "ignition": {"version": "3.3.0"},
    "storage": {
        "files": [
            {
                "path": "/etc/kpc-fault",
                "mode": 420,
                "contents": {"source": "data:,hello", "verification": {"hash": BAD_HASH}},
            }
        ]
    },
}


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _plant_faults(lab_dir: Path, unsigned_mac: str, rejected_mac: str) -> None:
    data = lab_dir / "bootcfg"
    install = json.loads((data / "profiles" / "install.json").read_text())
    version = install["boot"]["kernel"].split("/")[3]  # /assets/flatcar/VERSION/...
    release = data / "assets" / "flatcar" / version
    unsigned = data / "assets" / "unsigned" / version
    unsigned.mkdir(parents=True)
    for image in release.glob("flatcar_production_image.bin.*"):
        if image.suffix == ".sig":  # a valid signature, of another file (new inode)
            (unsigned / image.name).write_bytes(
                (release / "flatcar_production_pxe.vmlinuz.sig").read_bytes()
            )
        else:
            os.link(image, unsigned / image.name)
    base = f"{_bootcfg_url(install)}/assets/unsigned"
    _write(
        data / "groups" / "fault-unsigned.json",
        {
            "id": "fault-unsigned",
            "profile": "install",
            "selector": {"mac": unsigned_mac},
            "metadata": {"os_install_base": base},
        },
    )
    _write(data / "ignition" / "rejected.ign", REJECTED)
    _write(
        data / "profiles" / "install-rejected.json",
        {**install, "id": "install-rejected", "ignition_id": "rejected.ign"},
    )
    _write(
        data / "groups" / "fault-rejected.json",
        {"id": "fault-rejected", "profile": "install-rejected", "selector": {"mac": rejected_mac}},
    )


def _bootcfg_url(profile: dict[str, object]) -> str:
    boot = profile["boot"]
    assert isinstance(boot, dict)
    url = next(a for a in boot["args"] if a.startswith("ignition.config.url="))
    return str(url.split("=", 1)[1].split("/ignition", 1)[0])


def _console(lab_dir: Path, server: str) -> str:
    path = lab_dir / "servers" / server / "serial.log"
    return path.read_text(errors="replace") if path.is_file() else ""


def test_unsigned_image_and_rejected_config_stop_with_their_reason(lab_dir: Path) -> None:
    require_docker()
    up = kpc([*up_args(lab_dir, 2, "bios", os_kind="node"), "--memory", str(MEMORY_MIB)])
    assert up.code == 0, up.output
    config = lab_dir / "kpc.yaml"
    servers = json.loads((lab_dir / "lab.json").read_text())["plan"]["servers"]
    for server in servers:
        server["name"] = f"server{server['index']}"
    unsigned, rejected = servers[0], servers[1]
    _plant_faults(lab_dir, unsigned["mac"], rejected["mac"])

    ok(["images", "build", "dnsmasq", "bootcfg", "registry"], config)
    ok(["up"], config)
    ok(["bootcfg", "check"], config)  # the planted groups, profile and config all load
    ok(["bmc", "discover"], config)
    ok(["pxe-all", "--yes"], config)

    wait_for(
        lambda: "kpc-install: FAILED" in _console(lab_dir, unsigned["name"]),
        CONSOLE_TIMEOUT,
        f"kpc-install to fail on {unsigned['name']}",
        interval=5,
    )
    wait_for(
        lambda: "Failed to start ignition-" in _console(lab_dir, rejected["name"]),
        CONSOLE_TIMEOUT,
        f"Ignition to fail on {rejected['name']}",
        interval=5,
    )

    # (a) why, on the console: flatcar-install's refusal, then kpc-install's stop
    text = _console(lab_dir, unsigned["name"])
    assert "the signature does not verify with the image signing key; nothing was written" in (text)
    assert "kpc-install: FAILED: flatcar-install failed on /dev/vda: error: " in text
    assert "this machine stays up" in text
    shown = ok(["lab", "status", "--dir", str(lab_dir), "--json"], config)
    lines = {s["name"]: s for s in json.loads(shown[shown.index("{") :])["servers"]}
    refused = lines[unsigned["name"]]["console"]  # the why, in the status line itself
    assert refused.startswith("kpc-install: FAILED: flatcar-install failed"), lines
    assert refused.endswith("does not verify with the image signing key; nothing was written")
    assert lines[rejected["name"]]["console"].startswith(
        ("Ignition failed:", "Failed to start ignition-files")
    ), lines
    assert all(s["problem"] for s in lines.values()), lines
    assert {s["power"] for s in lines.values()} == {"on"}, lines  # both stay up

    nodes = nodes_by_mac(config)
    for server in servers:  # neither is installed: the next PXE boot installs again
        node = nodes[server["mac"]]
        assert node["boot"] == "install" and node["state"] not in ("installed", "ready"), node

    # (c) neither checks in: 'kpc lab wait' names both, with the end of each serial log
    late = kpc(["lab", "wait", "--dir", str(lab_dir), "--timeout", "5"], config)
    assert late.code == 1, late.output
    assert "2 of 2 lab servers are not ready" in late.output, late.output
    for server in servers:
        assert f"{server['name']} ({server['mac']}, bios) is " in late.output
    assert "kpc-install: FAILED" in late.output and "ignition-files" in late.output

    # (b) Ignition's own message ("Ignition failed: ...") is NOT on the console yet: on
    # 2026-11-29 the console showed systemd's failed stage and the emergency shell only;
    # what the console and 'kpc lab status' do show is asserted above (issue #12, open)
