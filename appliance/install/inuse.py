"""Which block devices are in use, and why: mounts, swap, the running system, the boot media.

Pure: it works on parsed ``/proc/self/mountinfo``, ``/proc/swaps``, the lsblk tree and the
loop devices' backing files. A mounted device marks everything it is stored on: its
partition's disk, a device-mapper device's members, a loop device's backing file (and so the
filesystem and disk holding that file), an overlay's lower and upper directories.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from appliance.install.disks import BlockDevice

# Mount points that mean "the system that is running right now".
SYSTEM_MOUNTS = ("/", "/usr", "/boot", "/sysroot", "/boot/efi", "/efi")
# Mount points and filesystems that live systems use for their boot media.
LIVE_MOUNT_RE = re.compile(r"^/(run/(media|initramfs/live|archiso|live)|cdrom|lib/live)(/|$)")
LIVE_FSTYPES = frozenset({"iso9660", "udf", "squashfs"})
MAX_DEPTH = 8


@dataclass(frozen=True)
class Mount:
    mount_id: int
    parent_id: int
    maj_min: str
    root: str
    mountpoint: str
    fstype: str
    source: str
    options: str


@dataclass(frozen=True)
class LoopBacking:
    """A loop device's backing file: its path, the device of the filesystem holding it (st_dev)
    and, when the backing file is itself a block device, that device's number (st_rdev)."""

    path: str
    fs_dev: str | None = None
    block_dev: str | None = None


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text: str) -> list[Mount]:
    """``/proc/self/mountinfo`` (see proc(5)), octal escapes decoded."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 7:
            continue
        dash = fields.index("-")
        tail = fields[dash + 1 :]
        if len(tail) < 2:
            continue
        mounts.append(
            Mount(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                maj_min=fields[2],
                root=_unescape(fields[3]),
                mountpoint=_unescape(fields[4]),
                fstype=tail[0],
                source=_unescape(tail[1]),
                options=tail[2] if len(tail) > 2 else "",
            )
        )
    return mounts


def parse_swaps(text: str) -> list[str]:
    """The swap areas' paths from ``/proc/swaps`` (header skipped)."""
    paths = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if fields:
            paths.append(_unescape(fields[0]))
    return paths


def containing_mount(mounts: list[Mount], path: str) -> Mount | None:
    """The mount whose mount point is the longest prefix of ``path`` (the last one wins)."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.mountpoint.rstrip("/") or "/"
        inside = path == point or path.startswith(point + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best.mountpoint.rstrip("/") or "/")):
            best = mount
    return best


class _Index:
    def __init__(self, devices: list[BlockDevice]) -> None:
        self.by_devnum: dict[str, str] = {}
        self.by_name: dict[str, str] = {}
        self.ancestors: dict[str, set[str]] = {}
        for top in devices:
            self._add(top, [])

    def _add(self, device: BlockDevice, above: list[str]) -> None:
        if device.maj_min:
            self.by_devnum[device.maj_min] = device.kname
        for key in (device.name, device.kname, device.path, device.path.removeprefix("/dev/")):
            self.by_name[key] = device.kname
        self.ancestors.setdefault(device.kname, set()).update(above)
        for child in device.children:
            self._add(child, [*above, device.kname])

    def lookup(self, devnum: str | None, source: str | None) -> str | None:
        if devnum and not devnum.startswith("0:") and devnum in self.by_devnum:
            return self.by_devnum[devnum]
        if source and source.startswith("/dev/"):
            name = source.removeprefix("/dev/")
            return self.by_name.get(source) or self.by_name.get(name.removeprefix("mapper/"))
        return None


def _describe_mount(mount: Mount, kname: str) -> str:
    point = mount.mountpoint
    if point in SYSTEM_MOUNTS:
        return f"holds the running system ({point} is mounted from {kname})"
    if LIVE_MOUNT_RE.match(point) or mount.fstype in LIVE_FSTYPES:
        return f"holds the live boot media ({mount.fstype} on {point}, from {kname})"
    return f"has a mounted filesystem ({kname} on {point})"


def _overlay_dirs(options: str) -> list[str]:
    dirs: list[str] = []
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key in {"lowerdir", "upperdir", "workdir"} and value:
            dirs.extend(d for d in value.split(":") if d)
    return dirs


def devices_in_use(
    devices: list[BlockDevice],
    mounts: list[Mount],
    swaps: list[str],
    loops: Mapping[str, LoopBacking],
    root_dev: str | None = None,
) -> dict[str, list[str]]:
    """For every device (kname) that must not be erased, the reasons why.

    ``root_dev`` is the ``major:minor`` of the filesystem holding this process's ``/``. It
    matters when no mount explains it: in a chroot the kernel's mountinfo leaves out every
    mount above the new root, so the disk the chroot lives on would otherwise look free.
    """
    index = _Index(devices)
    reasons: dict[str, list[str]] = {}

    def mark(kname: str, reason: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        for target in [kname, *sorted(index.ancestors.get(kname, ()))]:
            bucket = reasons.setdefault(target, [])
            if reason in bucket:
                continue
            bucket.append(reason)
            backing = loops.get(target)
            if backing is not None:
                via = f"{reason}, via {target} (backed by {backing.path})"
                held = index.lookup(backing.block_dev, backing.path) if backing.block_dev else None
                if held is None and backing.fs_dev is not None:
                    held = index.lookup(backing.fs_dev, None)
                if held is None:
                    holder = containing_mount(mounts, backing.path)
                    if holder is not None:
                        held = index.lookup(holder.maj_min, holder.source)
                if held is not None:
                    mark(held, via, depth + 1)

    def mark_mount(mount: Mount, reason_for: Mount, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        kname = index.lookup(mount.maj_min, mount.source)
        if kname is not None:
            mark(kname, _describe_mount(reason_for, kname), depth)
        elif mount.fstype == "overlay":
            for directory in _overlay_dirs(mount.options):
                holder = containing_mount([m for m in mounts if m is not mount], directory)
                if holder is not None:
                    mark_mount(holder, reason_for, depth + 1)

    for mount in mounts:
        mark_mount(mount, mount, 0)
    root_kname = index.lookup(root_dev, None)
    if root_kname is not None and not any(
        m.mountpoint == "/" and index.lookup(m.maj_min, m.source) == root_kname for m in mounts
    ):
        mark(
            root_kname,
            f"holds the running system (this process's / is on {root_kname}, though no "
            "mount says so: kpc runs in a chroot or container)",
            0,
        )
    for path in swaps:
        kname = index.lookup(None, path)
        if kname is not None:
            mark(kname, f"is in use as swap ({path})", 0)
        else:
            holder = containing_mount(mounts, path)
            if holder is not None:
                found = index.lookup(holder.maj_min, holder.source)
                if found is not None:
                    mark(found, f"holds an active swap file ({path})", 0)
    return reasons
