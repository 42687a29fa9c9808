"""iPXE and GRUB scripts, in matchbox's shapes. Pure text; every value in them comes from
a checked profile.

Query values never reach these scripts: profile arguments such as ``${mac:hexhyp}`` are
expanded by iPXE on the machine, as in matchbox. Profiles write what their kernel needs
(``initrd=NAME`` arguments for a UEFI kernel's EFI stub, ``--name NAME`` initrd options);
nothing is added.
"""

from __future__ import annotations

from appliance.bootcfg.catalog import Boot

CHAIN_QUERY = (
    "uuid=${uuid}&mac=${mac:hexhyp}&domain=${domain}&hostname=${hostname}&serial=${serial}"
    "&arch=${buildarch:uristring}"
)

# Relative, as matchbox's: iPXE resolves it against the URL the script came from.
BOOTSTRAP = f"#!ipxe\nchain ipxe?{CHAIN_QUERY}\n"

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


# GRUB's ``exit`` hands control back to the firmware, which boots the next device (the disk).
GRUB_LOCAL_BOOT = (
    'default=0\ntimeout=1\nmenuentry "kpc: boot mode is local: local disk" {\nexit\n}\n'
)


def boot_script(boot: Boot) -> str:
    """matchbox's iPXE script: kernel and its arguments, one ``initrd`` line per entry
    (entries may carry iPXE options: ``--name main URL``), boot."""
    lines = ["#!ipxe", " ".join(["kernel", boot.kernel, *boot.args])]
    lines += [f"initrd {entry}" for entry in boot.initrd]
    lines.append("boot")
    return "\n".join(lines) + "\n"


def grub_script(boot: Boot) -> str:
    """matchbox's GRUB config: an EFI entry and a BIOS entry for the same kernel."""
    args = "".join(f" {arg}" for arg in boot.args)
    initrds = "".join(f' "{entry}"' for entry in boot.initrd)
    entries = []
    for title, linux, initrd in (("EFI", "linuxefi", "initrdefi"), ("BIOS", "linux", "initrd")):
        entries.append(
            f'menuentry "CoreOS ({title})" {{\n'
            'echo "Loading kernel"\n'
            f'{linux} "{boot.kernel}"{args}\n'
            'echo "Loading initrd"\n'
            f"{initrd} {initrds}\n"
            "}\n"
        )
    return "default=0\nfallback=1\ntimeout=1\n" + "".join(entries)
