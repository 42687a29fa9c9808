"""The QEMU backend of the simulated BMCs, against a real QEMU (TCG): power, reset and a
one-time network boot that really is one-time (SeaBIOS says which device it boots)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.bmc.qemu_backend import QemuBackend
from appliance.drivers import netns
from appliance.drivers.qmp import Qmp
from appliance.errors import BmcError
from appliance.lab.vmspec import NIC_BOOTINDEX, NIC_QOM_PATH
from tests.conftest import require_root, require_tool, wait_for
from tests.lab.conftest import NAME, isolated_vm

pytestmark = [pytest.mark.root, pytest.mark.qemu]
TAP = f"{NAME}t0"
BOOTING = re.compile(r"Booting from (ROM|Hard Disk)")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[QemuBackend]:
    require_root()
    require_tool("qemu-system-x86_64", "qemu-img")
    if netns.link_exists(TAP):
        netns.link_delete(TAP)
    netns.tap_add(TAP)  # an isolated tap: no bridge, nothing behind it
    isolated_vm(tmp_path, f"{NAME}-vm", TAP, "52:54:00:c6:12:f1")
    vm = QemuBackend.from_file(tmp_path / "vm.json")
    try:
        yield vm
    finally:
        vm.close()
        netns.link_delete(TAP)


def _boots(serial: Path) -> list[str]:
    return BOOTING.findall(serial.read_text(errors="replace")) if serial.exists() else []


def _nic_bootindex(vm: QemuBackend) -> int:
    with Qmp(vm.spec.qmp_socket) as qmp:
        return int(qmp.execute("qom-get", path=NIC_QOM_PATH, property="bootindex"))


def test_one_time_network_boot_then_disk_again(backend: QemuBackend) -> None:
    serial = backend.spec.serial_log
    with pytest.raises(BmcError, match="powered off"):
        backend.power_reset()

    backend.set_boot_device("network", persistent=False)
    backend.power_on()
    assert backend.power_state() == "on"
    assert backend.boot_device() == "default"  # consumed by this power on
    wait_for(lambda: _boots(serial), 60, "the first boot device on the serial console")
    assert _boots(serial)[0] == "ROM"  # the NIC's iPXE ROM: network first
    assert _nic_bootindex(backend) == NIC_BOOTINDEX  # later boots: disk first again

    backend.power_reset()  # no boot device pending: a plain reset boots the disk first
    wait_for(lambda: len(_boots(serial)) >= 2, 60, "a boot after the reset")
    assert _boots(serial)[1] == "Hard Disk"
    # the empty disk does not boot, so the firmware moves on to its next device, the NIC
    wait_for(lambda: len(_boots(serial)) >= 3, 60, "the firmware to try the NIC next")

    backend.set_boot_device("network", persistent=False)
    backend.power_reset()
    wait_for(lambda: len(_boots(serial)) >= 4, 60, "a boot after the second reset")
    assert _boots(serial)[3] == "ROM"
    wait_for(lambda: _nic_bootindex(backend) == NIC_BOOTINDEX, 30, "the boot order set back")

    backend.power_off()
    assert backend.power_state() == "off"
    assert not backend.spec.qmp_socket.exists() or backend.power_state() == "off"
