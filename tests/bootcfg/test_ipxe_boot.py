"""Real iPXE against bootcfg: QEMU (TCG) PXE-boots with its iPXE ROM over user-mode
networking, whose 10.0.2.2 is this host's loopback. A machine in boot mode ``local`` must
reach its local disk: on BIOS through ``sanboot`` (the disk is left out of the firmware's
boot order, so nothing else can boot it), on UEFI by handing control back to the firmware.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bootcfg.server import Server
from tests.conftest import missing, require_tool, wait_for

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

MAC = "52:54:00:c0:ff:ee"
MARKER = b"KPC-DISK-BOOTED"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
ANSI = re.compile(rb"\x1b\[[0-9;=?]*[A-Za-z]")


def mbr_disk(path: Path) -> Path:
    """A 1 MiB disk whose MBR writes MARKER to COM1 (port 0x3f8) and halts."""
    code = bytes(
        [
            0xFC, 0xFA,              # cld; cli
            0x31, 0xC0, 0x8E, 0xD8,  # xor ax,ax; mov ds,ax
            0xBE, 0x17, 0x7C,        # mov si,0x7c17 (the message below)
            0xBA, 0xF8, 0x03,        # mov dx,0x3f8
            0xAC,                    # next: lodsb
            0x84, 0xC0, 0x74, 0x03,  # test al,al; jz done
            0xEE, 0xEB, 0xF8,        # out dx,al; jmp next
            0xF4, 0xEB, 0xFD,        # done: hlt; jmp done
        ]
    )  # fmt: skip
    sector = code + MARKER + b"\r\n\0"
    sector += b"\0" * (510 - len(sector)) + b"\x55\xaa"
    path.write_bytes(sector + b"\0" * (2**20 - 512))
    return path


def serial_text(path: Path) -> bytes:
    return ANSI.sub(b"", path.read_bytes()) if path.exists() else b""


@pytest.fixture
def local_machine(server: Server) -> Server:
    server.store.record_request(MAC, address=None, endpoint="test", now=1.0)
    server.store.install_complete(MAC, now=2.0)
    return server


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    require_tool("qemu-system-x86_64")
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start(
    procs: list[subprocess.Popen[bytes]],
    server: Server,
    tmp_path: Path,
    firmware: list[str],
    boot: list[str],
) -> Path:
    log = tmp_path / "serial.log"
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-display", "none", "-vga", "none",
        *firmware,
        "-netdev", f"user,id=n0,ipv6=off,bootfile=http://10.0.2.2:{server.port}/boot.ipxe",
        "-device", f"virtio-net-pci,netdev=n0,mac={MAC},bootindex=1",
        "-drive", f"file={mbr_disk(tmp_path / 'disk.img')},format=raw,if=none,id=d0",
        "-device", "ide-hd,drive=d0", *boot,
        "-serial", f"file:{log}", "-no-reboot",
    ]  # fmt: skip
    procs.append(
        subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    )
    return log


def test_bios_local_boot_reaches_the_disk_through_sanboot(
    local_machine: Server, qemu: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    log = start(qemu, local_machine, tmp_path, [], ["-boot", "strict=on"])
    wait_for(lambda: MARKER in serial_text(log), 90, "the local disk's MBR to run", alive=qemu)
    machine = local_machine.store.get(MAC)
    assert machine is not None
    assert machine.last_endpoint == "ipxe"  # /boot.ipxe chained to /ipxe with the MAC


def test_bios_control_without_local_boot_never_reaches_the_disk(
    server: Server, qemu: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """Same machine in boot mode install: the (missing) kernel fails, iPXE gives up, and the
    strict boot order keeps the firmware off the disk: so the test above proves sanboot."""
    log = start(qemu, server, tmp_path, [], ["-boot", "strict=on"])
    wait_for(
        lambda: server.store.get(MAC) is not None, 90, "the machine to ask for /ipxe", alive=qemu
    )
    # in the test above the MBR runs within a second of /ipxe; give it ten here
    with pytest.raises(AssertionError, match="timed out"):  # not: QEMU died
        wait_for(lambda: MARKER in serial_text(log), 10, "the disk not to be booted", alive=qemu)


def test_uefi_local_boot_hands_control_back_to_the_firmware(
    local_machine: Server, qemu: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    if not OVMF_CODE.exists() or not OVMF_VARS.exists():
        missing("OVMF is not installed (apt-get install ovmf)")
    vars_copy = tmp_path / "vars.fd"
    shutil.copyfile(OVMF_VARS, vars_copy)  # a fresh copy per VM (see lab notes)
    firmware = [
        "-machine", "q35",
        "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,file={vars_copy}",
    ]  # fmt: skip
    log = start(qemu, local_machine, tmp_path, firmware, [])

    def firmware_moved_on() -> bool:
        text = serial_text(log)
        ours = text.find(b"kpc: boot mode is local")
        return ours >= 0 and b"BdsDxe" in text[ours:]

    wait_for(firmware_moved_on, 120, "OVMF to take over after iPXE's exit", alive=qemu)
    text = serial_text(log)
    assert b"boot.ipxe" in text
    assert b"sanboot" not in text  # the BIOS branch was skipped
