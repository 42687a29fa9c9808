"""The lab OS on a CD: the ISO a lab server boots from its BMC's virtual media.

Made with ``grub-mkrescue`` (GRUB for BIOS and UEFI on an ISO 9660 image, via xorriso) from
the lab OS's kernel and initramfs, once per lab OS build, beside it in the cache
(``media.iso``); ``kpc lab up`` puts it in bootcfg's assets (``/assets/lab/media.iso``). It
boots the lab OS's probe role: the OS says on the console that it runs, then powers off,
without touching the network: the DHCP-less path (no DHCP, no PXE) that virtual media gives
a server whose network does not boot.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from appliance.drivers import process
from appliance.lab.osbuild import LabOs
from appliance.lab.osimage import KERNEL_ARGS_COMMON

MEDIA_NAME = "media.iso"
MEDIA_VOLUME = "KPC_LAB_MEDIA"
MEDIA_MARK = "kpc.boot=media"  # on the kernel command line the console shows
# Not quiet: the kernel prints its command line (with MEDIA_MARK) on the console.
KERNEL_ARGS_MEDIA = f"{KERNEL_ARGS_COMMON.replace(' quiet', '')} kpc.role=probe {MEDIA_MARK}"
EXTRA_INITRD = "extra.img"
TOOLS = {"grub-mkrescue": "grub-common", "xorriso": "xorriso", "mformat": "mtools"}


def grub_cfg(
    append: str = KERNEL_ARGS_MEDIA,
    title: str = "kpc lab OS (virtual media)",
    initrds: Sequence[str] = ("/boot/initrd.gz",),
) -> str:
    """GRUB's menu on the CD: on the serial console, the one entry booted at once; the
    kernel gets ``initrds`` one after the other (a later archive's files win)."""
    return (
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        "set timeout=0\n"
        f"menuentry '{title}' {{\n"
        f"  linux /boot/vmlinuz {append}\n"
        f"  initrd {' '.join(initrds)}\n"
        "}\n"
    )


def media_path(lab_os: LabOs) -> Path:
    return lab_os.directory / MEDIA_NAME


def make_iso(
    kernel: Path, initrd: Path, menu: str, volume: str, target: Path, extra: bytes = b""
) -> Path:
    """A bootable ISO (BIOS and UEFI) at ``target`` that boots ``kernel`` and ``initrd``
    (and ``extra``, ``/boot/extra.img``, if given) with GRUB's ``menu`` (``grub_cfg``);
    written beside ``target`` and renamed into place."""
    for tool, package in TOOLS.items():
        process.which(tool, package)
    work = Path(tempfile.mkdtemp(prefix=".media-", dir=target.parent))
    try:
        tree = work / "tree"
        (tree / "boot" / "grub").mkdir(parents=True)
        shutil.copyfile(kernel, tree / "boot" / "vmlinuz")
        shutil.copyfile(initrd, tree / "boot" / "initrd.gz")
        if extra:
            (tree / "boot" / EXTRA_INITRD).write_bytes(extra)
        (tree / "boot" / "grub" / "grub.cfg").write_text(menu, encoding="utf-8")
        iso = work / target.name
        process.run(
            ["grub-mkrescue", "-o", str(iso), str(tree), "--", "-volid", volume],
            hint="grub-mkrescue needs grub-pc-bin, grub-efi-amd64-bin, xorriso and mtools",
        )
        iso.replace(target)  # atomic: a half-made ISO is never taken for a built one
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def build_media(lab_os: LabOs) -> Path:
    """``media.iso`` beside the lab OS build, made unless already there."""
    target = media_path(lab_os)
    if target.is_file():
        return target
    return make_iso(lab_os.kernel, lab_os.initrd, grub_cfg(), MEDIA_VOLUME, target)
