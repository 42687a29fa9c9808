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
from appliance.lab.vmspec import NIC_BOOTINDEX, NIC_QOM_PATH, TCG_TB_SIZE_MIB
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


def _qemu_pid(qmp_socket: Path) -> int:
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"qemu-system-x86_64") and any(
            str(qmp_socket).encode() in a for a in argv
        ):
            return int(proc.name)
    raise AssertionError(f"no QEMU process with {qmp_socket} on its command line")


def _executable_mappings_mib(pid: int) -> list[float]:
    """The sizes of a process's anonymous executable and writable mappings: under TCG, the
    buffer QEMU translates guest code into (every page of it ends up resident)."""
    sizes = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) == 5 and "x" in fields[1] and "w" in fields[1]:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            sizes.append((end - start) / 2**20)
    return sizes


def test_a_tcg_server_keeps_its_translation_buffer_small(backend: QemuBackend) -> None:
    # QEMU's default under TCG is 1 GiB per VM, and a booting Linux fills it: six lab
    # servers then held 6 GiB for translated code alone (docs/benchmarks.md, the lab)
    backend.power_on()
    sizes = _executable_mappings_mib(_qemu_pid(backend.spec.qmp_socket))
    assert sizes, "no translation buffer found in the QEMU process's mappings"
    assert max(sizes) <= TCG_TB_SIZE_MIB, sizes
    backend.power_off()


def test_a_reset_from_inside_is_a_new_qemu_process(backend: QemuBackend) -> None:
    """The machine's own reset (here QMP's system_reset, as a reboot asks for one) ends its
    QEMU process and the BMC starts the next: power stays on, the disk boots first again,
    and under TCG nothing translated in the previous boot survives into the next."""
    serial = backend.spec.serial_log
    backend.power_on()
    # the empty disk first, then the NIC (nothing behind it)
    wait_for(lambda: len(_boots(serial)) >= 2, 60, "the first boot to try the disk and NIC")
    assert _boots(serial)[:2] == ["Hard Disk", "ROM"]
    first = backend._child
    assert first is not None
    with Qmp(backend.spec.qmp_socket) as qmp:
        qmp.execute("system_reset")
    assert first.wait(30) is not None  # that process ended
    wait_for(
        lambda: backend._child is not first and backend.power_state() == "on",
        30,
        "a new QEMU process after the reset",
    )
    wait_for(lambda: len(_boots(serial)) >= 3, 60, "a boot after the reset")
    assert _boots(serial)[2] == "Hard Disk"

    backend.power_off()  # an off is an off: no new process follows
    assert backend.power_state() == "off"
    final = backend._child
    assert final is not None and final.wait(5) is not None
    assert backend._child is final and backend.power_state() == "off"
