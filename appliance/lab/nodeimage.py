"""The node OS's disk layout and boot loader pieces as pure data (``kpc lab build-os``).

The node OS stands in for Flatcar in the lab, so its disk image is laid out like Flatcar's
(GPT; partition numbers and labels as Flatcar has them; sizes in 512-byte sectors)::

    1  EFI-SYSTEM  FAT: GRUB for UEFI (EFI/BOOT/BOOTX64.EFI), grub/grub.cfg, flatcar/vmlinuz-a,
                   flatcar/initrd-a, and flatcar/first_boot, the flag GRUB turns into
                   ``flatcar.first_boot=detected`` until Ignition has run once
    2  BIOS-BOOT   GRUB's core image for BIOS (the MBR's boot code loads it)
    6  OEM         ext4: flatcar-install puts the Ignition config here (config.ign)
    9  ROOT        ext4: the whole root file system; flatcar-install grows it to the disk's end

Flatcar's USR-A/USR-B (3, 4) are absent: this OS keeps /usr on the root file system.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SECTOR = 512
MIB = 1024 * 1024
MIB_SECTORS = MIB // SECTOR

# GPT partition type GUIDs (UEFI spec; GRUB's BIOS boot partition; Linux file system)
TYPE_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
TYPE_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
TYPE_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

ESP_LABEL = "EFI-SYSTEM"
OEM_LABEL = "OEM"
ROOT_LABEL = "ROOT"
ESP_MIB = 64
BIOS_BOOT_MIB = 1
OEM_MIB = 32
FIRST_BOOT_FLAG = "flatcar/first_boot"
KERNEL_ON_ESP = "flatcar/vmlinuz-a"
INITRD_ON_ESP = "flatcar/initrd-a"

# GRUB 2's BIOS boot sector (grub-core/boot/i386/pc/boot.S) and the block list at the end of
# the first sector of core.img (diskboot.S), as grub-setup patches them.
BOOT_CODE_BYTES = 440
BOOT_KERNEL_SECTOR = 0x5C  # u64: where core.img starts
BOOT_DRIVE = 0x64  # 0xff: the drive the BIOS booted from
BOOT_DRIVE_CHECK = 0x66  # a jump replaced by two NOPs for hard disks
CORE_BLOCKLIST = SECTOR - 12  # u64 start, u16 sectors, u16 segment
CORE_SEGMENT = 0x820

# Modules built into GRUB's images: partitions, FAT (the config and kernel live on the ESP),
# search by label, the config language, Linux boot, and the serial console.
GRUB_MODULES = [
    "part_gpt",
    "fat",
    "ext2",
    "search",
    "search_label",
    "normal",
    "configfile",
    "linux",
    "echo",
    "test",
    "serial",
    "terminal",
    "gzio",
]
GRUB_BIOS_MODULES = ("biosdisk", *GRUB_MODULES)

# no_timer_check: under TCG on a busy host the IO-APIC timer check can fail and panic;
# panic=10: reboot after a panic, as a server would.
KERNEL_ARGS = "console=tty0 console=ttyS0,115200n8 no_timer_check panic=10"


@dataclass(frozen=True)
class Part:
    number: int
    label: str
    type_guid: str
    start: int  # sectors
    size: int  # sectors

    @property
    def offset(self) -> int:
        return self.start * SECTOR

    @property
    def end(self) -> int:
        return self.start + self.size


def layout(root_bytes: int) -> list[Part]:
    """The partitions of an image whose root file system is ``root_bytes`` long."""
    root_sectors = -(-root_bytes // MIB) * MIB_SECTORS
    esp = Part(1, ESP_LABEL, TYPE_ESP, MIB_SECTORS, ESP_MIB * MIB_SECTORS)
    bios = Part(2, "BIOS-BOOT", TYPE_BIOS_BOOT, esp.end, BIOS_BOOT_MIB * MIB_SECTORS)
    oem = Part(6, OEM_LABEL, TYPE_LINUX, bios.end, OEM_MIB * MIB_SECTORS)
    root = Part(9, ROOT_LABEL, TYPE_LINUX, oem.end, root_sectors)
    return [esp, bios, oem, root]


def image_bytes(parts: list[Part]) -> int:
    """The image's size: the last partition plus one MiB (room for the backup GPT)."""
    return (max(p.end for p in parts) + MIB_SECTORS) * SECTOR


def sfdisk_script(device: str, parts: list[Part]) -> str:
    """sfdisk's input for the GPT of ``device`` (the image file's name as sfdisk sees it)."""
    lines = ["label: gpt", "unit: sectors", f"first-lba: {MIB_SECTORS}", ""]
    for p in parts:
        lines.append(
            f"{device}{p.number} : start={p.start}, size={p.size}, type={p.type_guid}, "
            f'name="{p.label}"'
        )
    return "\n".join(lines) + "\n"


def by_label(parts: list[Part], label: str) -> Part:
    return next(p for p in parts if p.label == label)


def patch_boot_sector(boot_img: bytes, core_sector: int) -> bytes:
    """GRUB's boot.img with core.img's first sector filled in: the MBR's boot code."""
    if len(boot_img) != SECTOR:
        raise ValueError(f"GRUB's boot.img has {len(boot_img)} bytes, not {SECTOR}")
    code = bytearray(boot_img[:BOOT_CODE_BYTES])
    struct.pack_into("<Q", code, BOOT_KERNEL_SECTOR, core_sector)
    code[BOOT_DRIVE] = 0xFF
    code[BOOT_DRIVE_CHECK : BOOT_DRIVE_CHECK + 2] = b"\x90\x90"
    return bytes(code)


def patch_core_image(core_img: bytes, core_sector: int, room_sectors: int) -> bytes:
    """GRUB's core.img with its block list pointing at the sectors after its first one,
    padded to whole sectors; ValueError when it does not fit in ``room_sectors``."""
    sectors = -(-len(core_img) // SECTOR)
    if sectors > room_sectors:
        raise ValueError(
            f"GRUB's core image has {sectors} sectors; the BIOS boot partition holds {room_sectors}"
        )
    data = bytearray(core_img.ljust(sectors * SECTOR, b"\0"))
    struct.pack_into("<QHH", data, CORE_BLOCKLIST, core_sector + 1, sectors - 1, CORE_SEGMENT)
    struct.pack_into("<QHH", data, CORE_BLOCKLIST - 12, 0, 0, 0)
    return bytes(data)


def grub_early_config() -> str:
    """Built into both GRUB images: find the ESP by its label and read its grub.cfg."""
    return (
        f"search --no-floppy --set=root --label {ESP_LABEL}\n"
        "set prefix=($root)/grub\n"
        "configfile ($root)/grub/grub.cfg\n"
    )


def grub_config(version: str) -> str:
    """grub/grub.cfg on the ESP: Flatcar's first-boot detection, then the kernel."""
    return (
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        "set timeout=0\n"
        'set first_boot=""\n'
        f"if [ -f ($root)/{FIRST_BOOT_FLAG} ]; then\n"
        '    set first_boot="flatcar.first_boot=detected"\n'
        "fi\n"
        f'menuentry "kpc lab node OS {version}" {{\n'
        f"    linux ($root)/{KERNEL_ON_ESP} root=LABEL={ROOT_LABEL} rw {KERNEL_ARGS} "
        "$first_boot\n"
        f"    initrd ($root)/{INITRD_ON_ESP}\n"
        "}\n"
    )


def version_for(key: str) -> str:
    """A Flatcar-shaped version (MAJOR.MINOR.PATCH) that names one build: 9999.0.N."""
    return f"9999.0.{int(key[:7], 16)}"


def version_txt(version: str, key: str) -> str:
    """version.txt as Flatcar's release directories carry it."""
    return (
        f"FLATCAR_BUILD={version.split('.')[0]}\n"
        f"FLATCAR_BRANCH={version.split('.')[1]}\n"
        f"FLATCAR_PATCH={version.split('.')[2]}\n"
        f"FLATCAR_VERSION={version}\n"
        f"FLATCAR_VERSION_ID={version}\n"
        f"FLATCAR_BUILD_ID=kpc-lab-{key}\n"
        "FLATCAR_SDK_VERSION=none\n"
    )
