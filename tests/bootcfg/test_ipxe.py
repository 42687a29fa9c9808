"""iPXE scripts."""

from __future__ import annotations

import pytest

from appliance.bootcfg.catalog import Boot
from appliance.bootcfg.ipxe import BOOTSTRAP, LOCAL_BOOT, boot_script, grub_script


def test_bootstrap_is_matchboxs_relative_chain_with_arch() -> None:
    assert BOOTSTRAP == (
        "#!ipxe\nchain ipxe?uuid=${uuid}&mac=${mac:hexhyp}&domain=${domain}"
        "&hostname=${hostname}&serial=${serial}&arch=${buildarch:uristring}\n"
    )


@pytest.mark.parametrize(
    ("boot", "expected"),
    [
        # matchbox's flatcar example: the profile's own initrd= argument, nothing added
        (
            Boot("/assets/f/vmlinuz", ("/assets/f/image.cpio.gz",),
                 ("initrd=image.cpio.gz", "flatcar.first_boot=yes")),
            "#!ipxe\nkernel /assets/f/vmlinuz initrd=image.cpio.gz flatcar.first_boot=yes\n"
            "initrd /assets/f/image.cpio.gz\nboot\n",
        ),
        # matchbox's Fedora CoreOS example: iPXE options inside the initrd entry
        (
            Boot("/k", ("--name main /assets/initramfs.img",),
                 ("initrd=main", "ignition.firstboot")),
            "#!ipxe\nkernel /k initrd=main ignition.firstboot\n"
            "initrd --name main /assets/initramfs.img\nboot\n",
        ),
        (Boot("/k", (), ()), "#!ipxe\nkernel /k\nboot\n"),
        (Boot("/k", ("/a", "/b"), ("quiet",)),
         "#!ipxe\nkernel /k quiet\ninitrd /a\ninitrd /b\nboot\n"),
    ],
)  # fmt: skip
def test_boot_script_is_matchboxs(boot: Boot, expected: str) -> None:
    assert boot_script(boot) == expected


def test_grub_script_is_matchboxs() -> None:
    script = grub_script(Boot("/k", ("/a", "/b"), ("x=1", "y")))
    assert script == (
        "default=0\nfallback=1\ntimeout=1\n"
        'menuentry "CoreOS (EFI)" {\necho "Loading kernel"\nlinuxefi "/k" x=1 y\n'
        'echo "Loading initrd"\ninitrdefi  "/a" "/b"\n}\n'
        'menuentry "CoreOS (BIOS)" {\necho "Loading kernel"\nlinux "/k" x=1 y\n'
        'echo "Loading initrd"\ninitrd  "/a" "/b"\n}\n'
    )


def test_local_boot_covers_bios_and_uefi() -> None:
    lines = LOCAL_BOOT.splitlines()
    assert lines[0] == "#!ipxe"
    assert "iseq ${platform} pcbios && sanboot --no-describe --drive 0x80 ||" in lines
    assert lines[-1] == "exit 0"
