"""The lab OS's pieces as pure data: initramfs archive, disk layout, boot loader configs.

The lab OS stands in for Flatcar in the virtual lab: a Debian cloud kernel, a busybox
initramfs (with jq and dropbear) and a small disk image that boots on BIOS (syslinux) and
UEFI (systemd-boot). Everything here is computed from bytes and names given to it; the
builder (``appliance.lab.osbuild``) does the reading, downloading and writing.

Disk image layout (512-byte sectors)::

    0         MBR: syslinux boot code + partition table
    2048      partition 1, FAT, active: vmlinuz, initrd.gz, syslinux, EFI/BOOT/BOOTX64.EFI
    OEM_START partition 2, raw "OEM" area: a tar of the installed config, written by the
              installer (as flatcar-install writes Ignition into Flatcar's OEM partition)
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

SECTOR = 512
MIB = 1024 * 1024
BOOT_START = 2048  # sectors: the first partition starts at 1 MiB
BOOT_SECTORS = 48 * MIB // SECTOR
OEM_START = BOOT_START + BOOT_SECTORS
OEM_SECTORS = 4 * MIB // SECTOR
IMAGE_BYTES = (OEM_START + OEM_SECTORS) * SECTOR

# MBR partition types (https://en.wikipedia.org/wiki/Partition_type)
PART_EFI_SYSTEM = 0xEF
PART_NON_FS_DATA = 0xDA
MBR_BOOT_CODE = 440  # bytes of boot code before the disk signature
MBR_SIGNATURE = b"\x55\xaa"

# Kernel modules the lab OS needs (names as modinfo prints them); dependencies are added.
WANTED_MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "virtio_rng")

# no_timer_check: under TCG on a busy host the kernel's IO-APIC timer check can fail and
# panic ("IO-APIC + timer doesn't work!"); cloud images skip it for the same reason.
# panic=10: reboot 10 s after a panic, like a server would (the next boot tries again).
KERNEL_ARGS_COMMON = "console=ttyS0 quiet no_timer_check panic=10"
KERNEL_ARGS_INSTALLED = f"{KERNEL_ARGS_COMMON} kpc.role=installed"


@dataclass(frozen=True)
class Entry:
    """One initramfs member: a directory, a regular file (``data``) or a symlink (``target``)."""

    path: str
    mode: int
    data: bytes = b""
    target: str | None = None


def _cpio_header(ino: int, mode: int, size: int, name: bytes) -> bytes:
    fields = (ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name) + 1, 0)
    return b"070701" + b"".join(f"{value:08x}".encode() for value in fields)


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def cpio_newc(entries: Iterable[Entry]) -> bytes:
    """An uncompressed ``newc`` cpio archive (the initramfs format), every member root-owned."""
    out = io.BytesIO()
    ino = 1
    for entry in sorted(entries, key=lambda e: e.path):
        name = entry.path.strip("/").encode()
        if entry.target is not None:
            payload, mode = entry.target.encode(), 0o120000 | 0o777
        elif entry.mode & 0o170000 == 0o040000:
            payload, mode = b"", entry.mode
        else:
            payload, mode = entry.data, 0o100000 | (entry.mode & 0o7777)
        header = _cpio_header(ino, mode, len(payload), name)
        out.write(header + name + b"\0")
        out.write(_pad4(len(header) + len(name) + 1))
        out.write(payload + _pad4(len(payload)))
        ino += 1
    trailer = b"TRAILER!!!"
    header = _cpio_header(0, 0, 0, trailer)
    out.write(header + trailer + b"\0" + _pad4(len(header) + len(trailer) + 1))
    return out.getvalue()


def directories_for(paths: Iterable[str]) -> list[Entry]:
    """Directory entries for every parent of ``paths`` (cpio needs them listed)."""
    dirs: set[str] = set()
    for path in paths:
        parts = path.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:depth]))
    return [Entry(d, 0o040755) for d in sorted(dirs)]


def module_order(wanted: Sequence[str], depends: Mapping[str, Sequence[str]]) -> list[str]:
    """Modules to insmod, dependencies first. ``depends`` maps a module to what it needs.

    Names use underscores (modinfo's ``depends`` does); KeyError names a module we know
    nothing about.
    """
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in order:
            return
        if name in visiting:
            raise ValueError(f"kernel module dependency loop at {name}")
        visiting.add(name)
        for dep in depends[name]:
            if dep:
                visit(dep)
        visiting.discard(name)
        order.append(name)

    for module in wanted:
        visit(module)
    return order


def parse_ldd(text: str) -> list[str]:
    """The absolute library paths in ``ldd`` output (the vDSO has none and is skipped)."""
    libs: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if "=>" in words:
            after = words[words.index("=>") + 1 :]
            if after and after[0].startswith("/"):
                libs.append(after[0])
        elif words and words[0].startswith("/"):
            libs.append(words[0])
    return libs


@dataclass(frozen=True)
class Partition:
    start: int  # sectors
    sectors: int
    kind: int
    active: bool = False


def _chs(lba: int) -> bytes:
    # Past the 8 GiB CHS limit every tool writes the "use LBA" marker 1023/254/63.
    return bytes((0xFE, 0xFF, 0xFF)) if lba >= 1024 * 255 * 63 else _chs_exact(lba)


def _chs_exact(lba: int) -> bytes:
    heads, sectors = 255, 63
    cylinder, rem = divmod(lba, heads * sectors)
    head, sector = divmod(rem, sectors)
    sector += 1
    return bytes((head, ((cylinder >> 2) & 0xC0) | sector, cylinder & 0xFF))


def mbr(boot_code: bytes, partitions: Sequence[Partition], disk_id: int = 0x6B70636C) -> bytes:
    """A 512-byte master boot record: boot code, disk signature, up to 4 primary partitions."""
    if len(partitions) > 4:
        raise ValueError("an MBR holds at most 4 primary partitions")
    code = boot_code[:MBR_BOOT_CODE].ljust(MBR_BOOT_CODE, b"\0")
    table = b""
    for part in partitions:
        end = part.start + part.sectors - 1
        table += (
            bytes((0x80 if part.active else 0,))
            + _chs(part.start)
            + bytes((part.kind,))
            + _chs(end)
            + struct.pack("<II", part.start, part.sectors)
        )
    table = table.ljust(64, b"\0")
    return code + struct.pack("<I", disk_id) + b"\0\0" + table + MBR_SIGNATURE


def layout_partitions() -> list[Partition]:
    return [
        Partition(BOOT_START, BOOT_SECTORS, PART_EFI_SYSTEM, active=True),
        Partition(OEM_START, OEM_SECTORS, PART_NON_FS_DATA),
    ]


def layout_file() -> str:
    """/etc/kpc/layout in the initramfs: where the installer writes the OEM area."""
    return f"OEM_START={OEM_START}\nOEM_SECTORS={OEM_SECTORS}\n"


def syslinux_cfg(append: str = KERNEL_ARGS_INSTALLED) -> str:
    """BIOS boot: syslinux boots the lab OS from the boot partition at once."""
    return (
        "SERIAL 0 115200\n"
        "DEFAULT kpc\n"
        "PROMPT 0\n"
        "TIMEOUT 0\n"
        "LABEL kpc\n"
        "  KERNEL /vmlinuz\n"
        "  INITRD /initrd.gz\n"
        f"  APPEND {append}\n"
    )


def loader_conf() -> str:
    """UEFI boot: systemd-boot's settings (boot the one entry, no menu)."""
    return "default kpc.conf\ntimeout 0\nconsole-mode keep\n"


def loader_entry(append: str = KERNEL_ARGS_INSTALLED) -> str:
    return f"title kpc lab OS\nlinux /vmlinuz\ninitrd /initrd.gz\noptions {append}\n"


def os_release(version: str) -> str:
    return (
        f'NAME="kpc lab OS"\nID=kpc-lab\nVERSION_ID={version}\nPRETTY_NAME="kpc lab OS {version}"\n'
    )


def etc_files(version: str, modules: Sequence[str]) -> dict[str, str]:
    """The small text files of the initramfs, by path."""
    return {
        "etc/os-release": os_release(version),
        "etc/kpc/version": version + "\n",
        "etc/kpc/modules": "".join(f"{m}\n" for m in modules),
        "etc/kpc/layout": layout_file(),
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
        "etc/group": "root:x:0:\n",
        "etc/shells": "/bin/sh\n",
        "etc/hostname": "kpc-lab\n",
    }
