"""The block-device model, what is in use, and the disk safety rules (pure)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from appliance.errors import KpcError
from appliance.install.disks import find, human_size, parse_lsblk, with_probes
from appliance.install.inuse import (
    LoopBacking,
    containing_mount,
    devices_in_use,
    parse_mountinfo,
    parse_swaps,
)
from appliance.install.safety import check_all, check_device, confirmation_matches
from tests.conftest import require_tool

GiB = 1 << 30


def dev(
    name: str, maj_min: str, type_: str = "disk", size: int = 100 * GiB, **extra: Any
) -> dict[str, Any]:
    node: dict[str, Any] = {
        "name": name,
        "kname": name,
        "path": f"/dev/{name}",
        "maj:min": maj_min,
        "type": type_,
        "size": size,
        "ro": False,
        "rm": False,
        "mountpoints": [None],
    }
    node.update(extra)
    return node


def lsblk(*nodes: dict[str, Any]) -> str:
    return json.dumps({"blockdevices": list(nodes)})


def mountinfo(*rows: tuple[str, str, str, str] | tuple[str, str, str, str, str]) -> str:
    """rows of (maj:min, mountpoint, fstype, source[, super options])."""
    lines = []
    for number, row in enumerate(rows, 20):
        majmin, point, fstype, source = row[:4]
        options = row[4] if len(row) > 4 else "rw"
        lines.append(
            f"{number} 1 {majmin} / {point} rw,relatime shared:1 - {fstype} {source} {options}"
        )
    return "\n".join(lines) + "\n"


# A host with most of what can go wrong.
HOST = lsblk(
    dev(
        "sda",
        "8:0",
        model="Samsung SSD 870",
        serial="S5Y1NX0R",
        tran="sata",
        children=[
            dev("sda1", "8:1", "part", GiB, pkname="sda", mountpoints=["/boot"]),
            dev(
                "sda2",
                "8:2",
                "part",
                99 * GiB,
                pkname="sda",
                children=[
                    dev("vg-root", "254:0", "lvm", 99 * GiB, kname="dm-0", mountpoints=["/"])
                ],
            ),
        ],
    ),
    dev("sdb", "8:16", size=8 * GiB, rm=True, tran="usb", fstype="iso9660", label="Flatcar"),
    dev("sdc", "8:32", children=[dev("sdc1", "8:33", "part", 50 * GiB)]),
    dev("sdd", "8:48"),
    dev("sde", "8:64", children=[dev("sde1", "8:65", "part", GiB)]),
    dev("sdf", "8:80", children=[dev("sdf2", "8:82", "part", GiB)]),
    dev("sdg", "8:96", model="WDC WD10", serial="WD-1234", tran="sata"),
    dev("sdh", "8:112", children=[dev("sdh2", "8:114", "part", GiB)]),
    dev(
        "nvme0n1",
        "259:0",
        tran="nvme",
        children=[
            dev("nvme0n1p1", "259:1", "part", GiB, fstype="vfat", label="EFI-SYSTEM"),
            dev("nvme0n1p9", "259:9", "part", 9 * GiB, fstype="ext4", label="ROOT"),
        ],
    ),
    dev("sr0", "11:0", "rom", 700 << 20, rm=True),
    dev("sr1", "11:1", "rom", 0, rm=True),
    dev("sdi", "8:128", ro=True),
    dev("loop0", "7:0", "loop", 300 << 20, mountpoints=["/usr"]),
    dev("loop1", "7:1", "loop", 100 * GiB, mountpoints=["/mnt/raw"]),
    dev("loop2", "7:2", "loop", 20 * GiB),
    dev("sdj", "8:144", size=8 * GiB - 512, model="Small disk"),
)

HOST_MOUNTS = mountinfo(
    ("254:0", "/", "ext4", "/dev/mapper/vg-root"),
    ("8:1", "/boot", "ext4", "/dev/sda1"),
    ("8:33", "/run/media/iso", "ext4", "/dev/sdc1"),
    ("7:0", "/usr", "squashfs", "/dev/loop0"),
    ("7:1", "/mnt/raw", "ext4", "/dev/loop1"),
    ("8:65", "/run/overlay", "ext4", "/dev/sde1"),
    (
        "0:40",
        "/var/lib/containers",
        "overlay",
        "overlay",
        "rw,lowerdir=/run/overlay/lower,upperdir=/run/overlay/upper,workdir=/run/overlay/work",
    ),
    ("0:45", "/srv/data\\040store", "btrfs", "/dev/sdh2"),
    ("0:22", "/proc", "proc", "proc"),
)
HOST_SWAPS = "Filename\tType\tSize\tUsed\tPriority\n/dev/sdf2\tpartition\t1048572\t0\t-2\n"
HOST_LOOPS = {
    "loop0": LoopBacking("/run/media/iso/flatcar/usr.squashfs", fs_dev="8:33"),
    "loop1": LoopBacking("/dev/sdd", fs_dev="0:6", block_dev="8:48"),
    "loop2": LoopBacking("/var/tmp/disk.img", fs_dev="254:0"),
}


@pytest.fixture
def host() -> tuple[list[Any], dict[str, list[str]]]:
    devices = parse_lsblk(HOST)
    in_use = devices_in_use(
        devices, parse_mountinfo(HOST_MOUNTS), parse_swaps(HOST_SWAPS), HOST_LOOPS
    )
    return devices, in_use


def refusals(host: Any, name: str, **kw: Any) -> tuple[str, ...]:
    devices, in_use = host
    return check_device(devices, name, in_use, **kw).refusals


def test_a_clean_disk_is_safe(host: Any) -> None:
    assert refusals(host, "sdg") == ()
    assert refusals(host, "/dev/sdg") == ()


def test_a_previous_unmounted_install_may_be_overwritten(host: Any) -> None:
    assert refusals(host, "nvme0n1") == ()


def test_the_running_systems_disk_gives_every_reason(host: Any) -> None:
    reasons = refusals(host, "sda")
    assert "holds the running system (/ is mounted from dm-0)" in reasons
    assert "holds the running system (/boot is mounted from sda1)" in reasons
    assert "is part of lvm device vg-root, which is active" in reasons


def test_a_partition_is_refused_and_names_its_disk(host: Any) -> None:
    assert refusals(host, "nvme0n1p9") == (
        "is a partition of /dev/nvme0n1; kpc installs to a whole disk",
    )


def test_live_usb_stick_removable_and_iso(host: Any) -> None:
    reasons = refusals(host, "sdb")
    assert "is removable (add --allow-removable if you really mean this device)" in reasons
    assert (
        'carries an iso9660 filesystem labelled "Flatcar" on sdb: it looks like live boot media'
        in reasons
    )
    # --allow-removable relaxes only the removable rule
    assert refusals(host, "sdb", allow_removable=True) == (
        'carries an iso9660 filesystem labelled "Flatcar" on sdb: it looks like live boot media',
    )


def test_boot_media_behind_a_loop_device_is_found(host: Any) -> None:
    # /usr is a squashfs on loop0, whose backing file lives on sdc1 (mounted at /run/media/iso)
    reasons = refusals(host, "sdc")
    assert (
        "holds the running system (/usr is mounted from loop0), via loop0 "
        "(backed by /run/media/iso/flatcar/usr.squashfs)" in reasons
    )
    assert "holds the live boot media (ext4 on /run/media/iso, from sdc1)" in reasons


def test_a_disk_used_raw_by_a_mounted_loop_device(host: Any) -> None:
    assert refusals(host, "sdd") == (
        "has a mounted filesystem (loop1 on /mnt/raw), via loop1 (backed by /dev/sdd)",
    )


def test_a_loop_device_backed_by_a_file_on_the_root_disk_is_itself_safe(host: Any) -> None:
    # writing loop2 writes a file on the root disk: harmless; the root disk is not loop2's
    assert refusals(host, "loop2") == ()
    assert refusals(host, "loop0") == (
        "is too small (300.0M): Flatcar needs a disk of at least 8 GiB",
        "holds the running system (/usr is mounted from loop0)",
    )


def test_a_disk_smaller_than_flatcar_needs_is_refused(host: Any) -> None:
    # Flatcar's image does not fit below 8 GiB: flatcar-install would wipe it, then fail
    assert refusals(host, "sdj") == (
        "is too small (8589934080 bytes): Flatcar needs a disk of at least 8 GiB",
    )
    assert refusals(host, "sdb", allow_removable=True)[0].startswith("carries an iso9660")


def test_overlay_directories_are_followed(host: Any) -> None:
    reasons = refusals(host, "sde")
    assert "has a mounted filesystem (sde1 on /run/overlay)" in reasons
    assert "has a mounted filesystem (sde1 on /var/lib/containers)" in reasons


def test_swap_and_btrfs_by_source_path(host: Any) -> None:
    assert refusals(host, "sdf") == ("is in use as swap (/dev/sdf2)",)
    assert refusals(host, "sdh") == ("has a mounted filesystem (sdh2 on /srv/data store)",)


def test_optical_read_only_empty(host: Any) -> None:
    assert "is an optical drive (rom), not a disk" in refusals(host, "sr0", allow_removable=True)
    assert "has no medium (size 0)" in refusals(host, "sr1")
    assert refusals(host, "sdi") == ("is read-only",)


def test_unknown_device_lists_the_disks(host: Any) -> None:
    (reason,) = refusals(host, "sdz")
    assert reason.startswith("there is no block device called sdz (disks: sda, sdb, sdc")


def test_lsblk_mount_without_mountinfo_is_still_refused() -> None:
    devices = parse_lsblk(
        lsblk(dev("sdx", "8:0", children=[dev("sdx1", "8:1", "part", mountpoints=["/data"])]))
    )
    assert check_device(devices, "sdx", {}).refusals == (
        "has a mounted filesystem (sdx1 on /data)",
    )


def test_many_mounts_are_counted_not_listed() -> None:
    devices = parse_lsblk(lsblk(dev("sdx", "8:0")))
    rows = [("8:0", f"/var/lib/docker/overlay2/{n}/merged", "ext4", "/dev/sdx") for n in range(7)]
    in_use = devices_in_use(devices, parse_mountinfo(mountinfo(*rows)), [], {})
    reasons = check_device(devices, "sdx", in_use).refusals
    assert len(reasons) == 4
    assert reasons[-1] == "has 4 more mounted filesystems"


def test_check_all_covers_each_top_level_device(host: Any) -> None:
    devices, in_use = host
    verdicts = check_all(devices, in_use)
    assert [v.name for v in verdicts][:3] == ["sda", "sdb", "sdc"]
    assert {v.name for v in verdicts if v.safe} == {"sdg", "nvme0n1", "loop2"}


def test_old_lsblk_format_strings_and_single_mountpoint() -> None:
    old = json.dumps(
        {
            "blockdevices": [
                {
                    "name": "sda",
                    "maj:min": "8:0",
                    "rm": "0",
                    "size": "500107862016",
                    "ro": "0",
                    "type": "disk",
                    "mountpoint": None,
                    "model": "ST500  ",
                    "children": [
                        {
                            "name": "sda1",
                            "maj:min": "8:1",
                            "rm": "0",
                            "size": "1048576",
                            "ro": "1",
                            "type": "part",
                            "mountpoint": "/boot",
                        }
                    ],
                }
            ]
        }
    )
    (sda,) = parse_lsblk(old)
    assert (sda.path, sda.size, sda.rm, sda.ro, sda.model) == (
        "/dev/sda",
        500107862016,
        False,
        False,
        "ST500",
    )
    assert sda.children[0].mountpoints == ("/boot",) and sda.children[0].ro is True


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{}",
        '{"blockdevices": [{"size": 1}]}',
        '{"blockdevices": [{"name": "a", "size": "1.5G"}]}',
    ],
)
def test_bad_lsblk_output_is_an_error(text: str) -> None:
    with pytest.raises(KpcError):
        parse_lsblk(text)


def test_probes_fill_in_what_udev_would() -> None:
    (top,) = parse_lsblk(lsblk(dev("sdx", "8:0", children=[dev("sdx1", "8:1", "part")])))
    probed = with_probes(top, {"/dev/sdx1": {"TYPE": "ext4", "LABEL": "ROOT"}})
    assert (probed.children[0].fstype, probed.children[0].label) == ("ext4", "ROOT")
    assert find([probed], "/dev/sdx1") is not None and find([probed], "sdx9") is None


def test_mountinfo_escapes_and_containing_mount() -> None:
    mounts = parse_mountinfo(HOST_MOUNTS)
    assert mounts[7].mountpoint == "/srv/data store"
    holder = containing_mount(mounts, "/run/media/iso/flatcar/usr.squashfs")
    assert holder is not None and holder.source == "/dev/sdc1"
    root = containing_mount(mounts, "/etc/passwd")
    assert root is not None and root.mountpoint == "/"


def test_confirmation_must_be_the_device_name() -> None:
    (sdg,) = [d for d in parse_lsblk(HOST) if d.name == "sdg"]
    assert confirmation_matches("sdg", sdg)
    assert confirmation_matches(" /dev/sdg\n", sdg)
    for wrong in ("", "y", "yes", "sda", "/dev/sdg1", "SDG"):
        assert not confirmation_matches(wrong, sdg)


def test_human_size() -> None:
    assert human_size(512) == "512B"
    assert human_size(1000204886016) == "931.5G"


def test_this_hosts_real_lsblk_output_parses() -> None:
    require_tool("lsblk")
    out = subprocess.run(
        [shutil.which("lsblk") or "lsblk", "-J", "-b", "-O"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    devices = parse_lsblk(out)
    assert devices, "lsblk listed no block devices"
    checked = 0
    for d in devices:  # each size as the kernel counts it (512-byte sectors in sysfs)
        assert d.path.startswith("/dev/"), d
        sectors = Path("/sys/class/block", Path(d.path).name, "size")
        if sectors.exists():
            assert d.size == int(sectors.read_text()) * 512, d
            checked += 1
    assert checked, devices


def test_the_disk_under_a_chroot_is_refused_though_no_mount_shows_it() -> None:
    # In a chroot the kernel's mountinfo leaves out the mounts above the new root: only the
    # filesystem of / itself (its device number) tells that vda1 holds the running system.
    devices = parse_lsblk(
        lsblk(dev("vda", "254:0", children=[dev("vda1", "254:1", "part")]), dev("vdb", "254:16"))
    )
    in_use = devices_in_use(devices, [], [], {}, root_dev="254:1")
    assert check_device(devices, "vda", in_use).refusals == (
        "holds the running system (this process's / is on vda1, though no mount says so: "
        "kpc runs in a chroot or container)",
    )
    assert check_device(devices, "vdb", in_use).safe
    # on a normal host the mount of / already says it, once
    mounts = parse_mountinfo(mountinfo(("254:1", "/", "ext4", "/dev/vda1")))
    in_use = devices_in_use(devices, mounts, [], {}, root_dev="254:1")
    assert check_device(devices, "vda", in_use).refusals == (
        "holds the running system (/ is mounted from vda1)",
    )
    # a root on tmpfs (a live Flatcar) has an anonymous device number: nothing is marked
    assert devices_in_use(devices, [], [], {}, root_dev="0:23") == {}
