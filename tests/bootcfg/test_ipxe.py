"""iPXE scripts."""

from __future__ import annotations

from appliance.bootcfg.catalog import Boot
from appliance.bootcfg.ipxe import BOOTSTRAP, LOCAL_BOOT, boot_script


def test_bootstrap_chains_with_identity() -> None:
    assert BOOTSTRAP.startswith("#!ipxe\n")
    assert (
        "chain /ipxe?uuid=${uuid}&mac=${mac:hexhyp}&domain=${domain}"
        "&hostname=${hostname}&serial=${serial}\n" in BOOTSTRAP
    )


def test_boot_script_adds_initrd_names_for_uefi() -> None:
    script = boot_script(
        Boot("/assets/v", ("/assets/a/initrd.gz", "http://h/b.cpio?x=1"), ("quiet",))
    )
    assert script.splitlines() == [
        "#!ipxe",
        "kernel /assets/v initrd=initrd.gz initrd=b.cpio quiet",
        "initrd --name initrd.gz /assets/a/initrd.gz",
        "initrd --name b.cpio http://h/b.cpio?x=1",
        "boot",
    ]


def test_boot_script_keeps_the_profiles_own_initrd_args() -> None:
    script = boot_script(Boot("/v", ("/i.gz",), ("initrd=i.gz", "console=ttyS0")))
    assert "kernel /v initrd=i.gz console=ttyS0\n" in script
    assert script.count("initrd=") == 1


def test_local_boot_covers_bios_and_uefi() -> None:
    lines = LOCAL_BOOT.splitlines()
    assert lines[0] == "#!ipxe"
    assert "iseq ${platform} pcbios && sanboot --no-describe --drive 0x80 ||" in lines
    assert lines[-1] == "exit 0"
