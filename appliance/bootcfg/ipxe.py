"""iPXE scripts. Pure text; every value in them comes from a checked profile.

Query values never reach these scripts: profile arguments such as ``${mac:hexhyp}`` are
expanded by iPXE on the machine, as in matchbox.
"""

from __future__ import annotations

import posixpath
from urllib.parse import urlsplit

from appliance.bootcfg.catalog import Boot

CHAIN_QUERY = (
    "uuid=${uuid}&mac=${mac:hexhyp}&domain=${domain}&hostname=${hostname}&serial=${serial}"
)

BOOTSTRAP = f"#!ipxe\nchain /ipxe?{CHAIN_QUERY}\n"

# BIOS: INT 13h drive 0x80 is the first hard disk; sanboot boots its MBR directly, which
# works even on firmware that would not move on to the next boot device after iPXE exits.
# UEFI: there is no drive 0x80; leaving iPXE hands control back to the firmware's boot
# manager, which tries the next entry in the boot order (the disk). If sanboot fails on BIOS
# (no bootable disk), exiting lets the BIOS try its next device, too.
LOCAL_BOOT = (
    "#!ipxe\n"
    "echo kpc: boot mode is local: booting from the local disk\n"
    "iseq ${platform} pcbios && sanboot --no-describe --drive 0x80 ||\n"
    "exit 0\n"
)


def initrd_name(url: str) -> str:
    """The name iPXE gives a downloaded image: the last segment of the URL's path."""
    return posixpath.basename(urlsplit(url).path) or "initrd"


def boot_script(boot: Boot) -> str:
    """kernel + initrds + boot. Adds ``initrd=NAME`` arguments when the profile has none:
    the EFI stub of a UEFI kernel needs them to find its initrd (BIOS boots ignore them)."""
    args = list(boot.args)
    names = [initrd_name(url) for url in boot.initrd]
    if names and not any(a.startswith("initrd=") for a in args):
        args = [f"initrd={name}" for name in names] + args
    lines = ["#!ipxe", " ".join(["kernel", boot.kernel, *args])]
    lines += [f"initrd --name {name} {url}" for name, url in zip(names, boot.initrd, strict=True)]
    lines.append("boot")
    return "\n".join(lines) + "\n"
