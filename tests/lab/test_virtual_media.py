"""Virtual media through a lab server, the DHCP-less path: kpc's Redfish client asks the
simulated BMC to insert the lab OS's ISO (served by a real bootcfg from its assets) and boot
it once; the BMC fetches it into the QEMU server's CD drive, the server boots it with no
DHCP and no PXE anywhere (its NIC is a tap with nothing behind it, its disk is empty), and
the lab OS says on the console that it runs from the CD."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from typer.testing import CliRunner

from appliance.cli.main import app
from appliance.drivers import netns
from appliance.drivers.qmp import Qmp, QmpError
from appliance.lab.osbuild import build_lab_os
from appliance.lab.osmedia import MEDIA_MARK, MEDIA_NAME, build_media
from appliance.lab.up import UpRequest
from appliance.lab.vmspec import VmSpec, media_file
from tests.bmc.conftest import PASSWORD, USER, Sims, sims, write_config  # noqa: F401
from tests.bootcfg.server import Server
from tests.conftest import require_root, require_tool, wait_for
from tests.lab.conftest import BMC_NET, BOOTCFG_PORT, NAME, isolated_vm, up_args
from tests.lab.conftest import kpc as lab_kpc

pytestmark = [pytest.mark.root, pytest.mark.qemu]
runner = CliRunner()
TAP = f"{NAME}m0"
ADDRESS = "127.44.61.1"  # the simulated BMC, on loopback
PORT = "8443"
# what the firmware says it boots: SeaBIOS, or OVMF's boot manager
BOOTING = re.compile(
    r"Booting from (DVD/CD|Hard Disk|ROM)"
    r"|BdsDxe: (?:loading|failed to load) Boot\w+ \"UEFI (QEMU DVD-ROM|Misc|PXE)"
)
DEVICE = {"DVD/CD": "cd", "Hard Disk": "disk", "ROM": "network", "QEMU DVD-ROM": "cd",
          "Misc": "disk", "PXE": "network"}  # fmt: skip


def _boots(serial: Path, until: str | None = None) -> list[str]:
    """The devices the firmware booted or tried, in order (up to ``until`` if given)."""
    text = _text(serial)
    if until is not None:
        text = text.split(until, 1)[0]
    return [DEVICE[a or b] for a, b in BOOTING.findall(text)]


@pytest.fixture
def tap() -> Iterator[str]:
    require_root()
    require_tool("qemu-system-x86_64", "qemu-img", "grub-mkrescue", "xorriso", "mformat")
    if netns.link_exists(TAP):
        netns.link_delete(TAP)
    netns.tap_add(TAP)  # no bridge, nothing behind it: no DHCP, no PXE
    try:
        yield TAP
    finally:
        netns.link_delete(TAP)


def _cd_inserted(spec: VmSpec) -> bool:
    with Qmp(spec.qmp_socket) as qmp:
        devices = qmp.execute("query-block")
    cd = [d for d in devices if d.get("qdev", "").endswith("cd0")]
    return bool(cd and cd[0].get("inserted"))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_a_server_boots_the_iso_from_virtual_media_without_dhcp(
    tmp_path: Path,
    tap: str,
    sims: Sims,  # noqa: F811
    firmware: Literal["bios", "uefi"],
) -> None:
    lab_os = build_lab_os(UpRequest.cache)
    iso = build_media(lab_os)
    data = tmp_path / "bootcfg"
    (data / "assets" / "lab").mkdir(parents=True)
    shutil.copyfile(iso, data / "assets" / "lab" / MEDIA_NAME)
    bootcfg = Server(data, tmp_path / "bootcfg.db").start()
    url = f"{bootcfg.url}/assets/lab/{MEDIA_NAME}"

    spec = isolated_vm(
        tmp_path, f"{NAME}-media", tap, "52:54:00:c6:12:f2", memory_mib=256, firmware=firmware
    )
    fingerprints = str(tmp_path / "fp")
    sim = sims.start(
        ADDRESS, 1, "--protocol", "redfish", "--redfish-port", PORT, "--fingerprints",
        fingerprints, "--backend", "qemu", "--vm-spec", str(tmp_path / "vm.json"),
    )  # fmt: skip
    config = write_config(tmp_path, f"bmc: {{user: {USER}, protocol: redfish}}\n")
    env = {"KPC_BMC_PASSWORD": PASSWORD}
    target = f"{ADDRESS}:{PORT}"
    result = runner.invoke(app, ["-c", str(config), "bmc", "power", "on", target, "--yes"], env=env)
    assert result.exit_code == 0, result.output
    serial = spec.serial_log
    wait_for(lambda: _boots(serial), 120, "the server's first boot (disk first)")
    assert _boots(serial)[0] == "disk"
    assert not _cd_inserted(spec)  # a CD drive, empty
    insert = ["-c", str(config), "bmc", "media", "insert", url, target, "--boot", "--yes", "--json"]
    result = runner.invoke(app, [*insert, "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    assert [e["action"] for e in sim.events() if e["action"] != "session"] == ["power_on"]
    assert not media_file(spec).exists() and not _cd_inserted(spec)

    result = runner.invoke(app, insert, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["result"].startswith("media inserted; Cd boot")
    assert media_file(spec).read_bytes() == iso.read_bytes()  # fetched from bootcfg
    assert PASSWORD not in result.output

    def booted_from_cd() -> bool:
        return "kpc-labos: probe: the lab OS runs" in _text(serial)

    wait_for(booted_from_cd, 300, "the lab OS booted from the CD to say it runs")
    text = _text(serial)
    assert _boots(serial, until=MEDIA_MARK)[-1] == "cd"  # the kernel came from the CD
    assert MEDIA_MARK in text  # the kernel's command line: the CD's boot menu
    assert "network:" not in text.split(MEDIA_MARK, 1)[1]  # the OS never brought a NIC up
    # the probe powers the server off; the BMC sees it
    wait_for(lambda: _off(spec), 120, "the server to power itself off")

    eject = ["-c", str(config), "bmc", "media", "eject", target, "--yes", "--json"]
    result = runner.invoke(app, eject, env=env)
    assert result.exit_code == 0, result.output
    assert not media_file(spec).exists()
    bootcfg.stop()


def _off(spec: VmSpec) -> bool:
    try:
        with Qmp(spec.qmp_socket, timeout=1.0):
            return False
    except QmpError:
        return True


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.timeout(900)
def test_virtual_media_through_the_lab(lab_dir: Path, subreaper: None) -> None:
    """The same through a lab made by 'kpc lab up --bmc redfish': its BMC (in the lab's BMC
    namespace) fetches the ISO that 'lab up' placed in bootcfg's assets, from a bootcfg on
    the deploy host's BMC-network link, the way a real BMC reaches the deploy host."""
    up = lab_kpc(up_args(lab_dir, 1, "bios", bmc="redfish"))
    assert up.code == 0, up.output
    config = lab_dir / "kpc.yaml"
    assert (lab_dir / "bootcfg" / "assets" / "lab" / MEDIA_NAME).is_file()
    address = BMC_NET + "2"  # the deploy host on the BMC network
    log = (lab_dir / "bootcfg-media.log").open("wb")
    bootcfg = subprocess.Popen(
        [sys.executable, "-m", "appliance", "bootcfg", "serve", "--listen", address,
         "--port", str(BOOTCFG_PORT), "--no-access-log"],
        env={**os.environ, "KPC_CONFIG": str(config)}, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        wait_for(
            lambda: urllib.request.urlopen(f"http://{address}:{BOOTCFG_PORT}/healthz", timeout=2),
            60,
            "bootcfg on the BMC-network link",
            alive=bootcfg,
        )
        url = f"http://{address}:{BOOTCFG_PORT}/assets/lab/{MEDIA_NAME}"
        bmc = BMC_NET + "11"
        dry = lab_kpc(["bmc", "media", "insert", url, bmc, "--boot", "--yes", "--dry-run"], config)
        assert dry.code == 0 and "nothing is sent" in dry.output
        serial = lab_dir / "servers" / "server1" / "serial.log"
        assert _boots(serial) == []  # still powered off, never booted
        insert = lab_kpc(["bmc", "media", "insert", url, bmc, "--boot", "--yes"], config)
        assert insert.code == 0, insert.output
        wait_for(
            lambda: "kpc-labos: probe: the lab OS runs" in _text(serial),
            300,
            "server1 to boot the lab OS from its virtual CD",
        )
        assert _boots(serial, until=MEDIA_MARK) == ["cd"]  # its only boot: from the CD
        eject = lab_kpc(["bmc", "media", "eject", bmc, "--yes"], config)
        assert eject.code == 0, eject.output
    finally:
        bootcfg.terminate()
        bootcfg.wait(20)
        log.close()
