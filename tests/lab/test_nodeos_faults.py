"""The node OS's faults in the lab, through kpc's own services and commands:

- an install image whose signature does not verify: the node OS's flatcar-install refuses
  it, the product's kpc-install says why on the console and stops, the server stays up and
  kpc never marks it installed;
- a config Ignition rejects (a file whose contents do not match its verification hash):
  Ignition's own error on the console, and 'kpc lab status' shows it as the server's line;
  on the PXE boot (the install config) and on the first boot from disk (the installed
  system's config, which flatcar-install put in the OEM partition);
- a server that never checks in: 'kpc lab wait' names it with the end of its serial log.

Each fault is set up the way an operator could meet it, in the lab's bootcfg data
directory (matchbox's layout): a group for the server's MAC, pointing the unchanged install
profile and template at an asset base whose signature is another file's, or serving a raw
Ignition config Ignition cannot apply. Each test boots one BIOS server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_docker, wait_for
from tests.lab.conftest import kpc, nodes_by_mac, ok, up_args

# 'full' (scripts/test --full), not CI: a node OS PXE boot under TCG costs minutes (the
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
Server = dict[str, Any]  # a server of lab.json's plan, with its name
CONSOLE_TIMEOUT = 1800  # seconds: PXE of a 230 MB initramfs and a 237 MB download, under TCG
BAD_HASH = "sha512-" + "0" * 128
FAULT_FILE = "/sysroot/etc/kpc-fault"  # as Ignition names it: under its --root
FAILED_FILE = (
    f'failed to create files: error creating {FAULT_FILE}: failed to create file "{FAULT_FILE}"'
)
REJECTED = {
    "ignition": {"version": "3.3.0"},
    "storage": {
        "files": [
            {
                "path": FAULT_FILE.removeprefix("/sysroot"),
                "mode": 420,
                "contents": {"source": "data:,hello", "verification": {"hash": BAD_HASH}},
            }
        ]
    },
}


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _install_profile(lab_dir: Path) -> dict[str, Any]:
    return dict(json.loads((lab_dir / "bootcfg" / "profiles" / "install.json").read_text()))


def _plant_unsigned(lab_dir: Path, mac: str) -> None:
    data = lab_dir / "bootcfg"
    install = _install_profile(lab_dir)
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
            "selector": {"mac": mac},
            "metadata": {"os_install_base": base},
        },
    )


def _plant_rejected(lab_dir: Path, mac: str) -> None:
    data = lab_dir / "bootcfg"
    _write(data / "ignition" / "rejected.ign", REJECTED)
    _write(
        data / "profiles" / "install-rejected.json",
        {**_install_profile(lab_dir), "id": "install-rejected", "ignition_id": "rejected.ign"},
    )
    _write(
        data / "groups" / "fault-rejected.json",
        {"id": "fault-rejected", "profile": "install-rejected", "selector": {"mac": mac}},
    )


def _plant_rejected_installed(lab_dir: Path, mac: str) -> None:
    """The installed system's config for this MAC (what kpc-install fetches with os=installed
    and flatcar-install writes to the OEM partition) is one Ignition rejects."""
    data = lab_dir / "bootcfg"
    _write(data / "ignition" / "rejected.ign", REJECTED)
    targetnode = json.loads((data / "profiles" / "targetnode.json").read_text())
    _write(
        data / "profiles" / "targetnode-rejected.json",
        {**targetnode, "id": "targetnode-rejected", "ignition_id": "rejected.ign"},
    )
    _write(
        data / "groups" / "fault-rejected-installed.json",
        {
            "id": "fault-rejected-installed",
            "profile": "targetnode-rejected",
            "selector": {"mac": mac, "os": "installed"},
        },
    )


def _bootcfg_url(profile: dict[str, object]) -> str:
    boot = profile["boot"]
    assert isinstance(boot, dict)
    url = next(a for a in boot["args"] if a.startswith("ignition.config.url="))
    return str(url.split("=", 1)[1].split("/ignition", 1)[0])


def _console(lab_dir: Path, server: str) -> str:
    path = lab_dir / "servers" / server / "serial.log"
    return path.read_text(errors="replace") if path.is_file() else ""


def _boot_one_server(lab_dir: Path, plant: Callable[[Path, str], None]) -> tuple[Path, Server]:
    """A one-server node OS lab with its fault planted, PXE-booted; its config and server."""
    require_docker()
    up = kpc([*up_args(lab_dir, 1, "bios", os_kind="node"), "--memory", str(MEMORY_MIB)])
    assert up.code == 0, up.output
    config = lab_dir / "kpc.yaml"
    (server,) = json.loads((lab_dir / "lab.json").read_text())["plan"]["servers"]
    server["name"] = f"server{server['index']}"
    plant(lab_dir, server["mac"])
    ok(["images", "build", "dnsmasq", "bootcfg", "registry"], config)
    ok(["up"], config)
    ok(["bootcfg", "check"], config)  # the planted group, profile and config all load
    ok(["bmc", "discover"], config)
    ok(["pxe-all", "--yes"], config)
    return config, server


def _wait_console(lab_dir: Path, server: Server, text: str, what: str) -> None:
    wait_for(
        lambda: text in _console(lab_dir, server["name"]),
        CONSOLE_TIMEOUT,
        f"{what} on {server['name']}",
        interval=5,
    )


def _status_line(lab_dir: Path, config: Path, server: Server) -> dict[str, object]:
    shown = ok(["lab", "status", "--dir", str(lab_dir), "--json"], config)
    lines = {s["name"]: s for s in json.loads(shown[shown.index("{") :])["servers"]}
    line = lines[server["name"]]
    assert line["problem"] and line["power"] == "on", line  # it stays up
    return dict(line)


def _never_installed_and_named_by_lab_wait(
    lab_dir: Path, config: Path, server: Server, why: str
) -> None:
    node = nodes_by_mac(config)[server["mac"]]  # the next PXE boot installs again
    assert node["boot"] == "install" and node["state"] not in ("installed", "ready"), node
    # (c) it never checks in: 'kpc lab wait' names it, with the console line that says why
    late = kpc(["lab", "wait", "--dir", str(lab_dir), "--timeout", "5"], config)
    assert late.code == 1, late.output
    assert "1 of 1 lab servers are not ready" in late.output, late.output
    assert f"{server['name']} ({server['mac']}, bios) is " in late.output
    assert f"its console said: {why}" in late.output, late.output
    assert f"the end of its serial log {lab_dir / 'servers' / server['name']}" in late.output


def test_unsigned_image_stops_the_install_with_its_reason(lab_dir: Path) -> None:
    config, server = _boot_one_server(lab_dir, _plant_unsigned)
    _wait_console(lab_dir, server, "kpc-install: FAILED", "kpc-install to fail")
    # (a) why, on the console: flatcar-install's refusal, then kpc-install's stop
    text = _console(lab_dir, server["name"])
    assert "the signature does not verify with the image signing key; nothing was written" in (text)
    assert "kpc-install: FAILED: flatcar-install failed on /dev/vda: error: " in text
    assert "this machine stays up" in text
    refused = str(_status_line(lab_dir, config, server)["console"])  # the why, in the status
    assert refused.startswith("kpc-install: FAILED: flatcar-install failed"), refused
    assert refused.endswith("does not verify with the image signing key; nothing was written")
    _never_installed_and_named_by_lab_wait(lab_dir, config, server, "kpc-install: FAILED")


def _ignitions_own_error_on_the_console(lab_dir: Path, config: Path, server: Server) -> None:
    """(b) Ignition's own error lines on the console, not its whole log; the same as the
    server's line in 'kpc lab status'."""
    _wait_console(lab_dir, server, "Failed to start ignition-", "Ignition to fail")
    # the emergency shell's banner comes after the node OS's emergency hook
    _wait_console(lab_dir, server, "Entering emergency mode", "the emergency shell")
    text = _console(lab_dir, server["name"])
    assert "kpc: Ignition stopped this boot (failed: ignition-files.service)" in text, text[-3000:]
    assert f'writing file "{FAULT_FILE}": hash verification failed (calculated ' in text
    assert f"CRITICAL : Ignition failed: failed to create files: {FAILED_FILE}" in text
    assert "Full config" not in text
    why = str(_status_line(lab_dir, config, server)["console"])  # Ignition's, in the status
    assert why.startswith(f"Ignition failed: failed to create files: {FAILED_FILE}"), why
    assert why.endswith(f"but expected {BAD_HASH.split('-', 1)[1]})"), why


def test_config_ignition_rejects_shows_ignitions_own_error(lab_dir: Path) -> None:
    config, server = _boot_one_server(lab_dir, _plant_rejected)
    _ignitions_own_error_on_the_console(lab_dir, config, server)
    _never_installed_and_named_by_lab_wait(
        lab_dir, config, server, "Ignition failed: failed to create files"
    )


def test_installed_config_ignition_rejects_stops_the_first_disk_boot(lab_dir: Path) -> None:
    config, server = _boot_one_server(lab_dir, _plant_rejected_installed)
    # the PXE boot installs (its own config is the unchanged install one) and reboots
    _wait_console(
        lab_dir, server, "first boot: Ignition runs (live root: no)", "the first boot from disk"
    )
    _ignitions_own_error_on_the_console(lab_dir, config, server)
    text = _console(lab_dir, server["name"])
    assert "kpc-install: FAILED" not in text
    # booting again would repeat the OEM partition's config: the console says to reinstall
    assert "booting again repeats it" in text and "set-boot <this machine's MAC> install" in text
    node = nodes_by_mac(config)[server["mac"]]  # installed, never checked in
    assert node["state"] == "installed", node
    late = kpc(["lab", "wait", "--dir", str(lab_dir), "--timeout", "5"], config)
    assert late.code == 1, late.output
    assert "1 of 1 lab servers are not ready" in late.output, late.output
    assert "its console said: Ignition failed: failed to create files" in late.output
