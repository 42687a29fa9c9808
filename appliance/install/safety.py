"""The disk safety rules: may kpc erase this device? Pure.

Every rule that refuses adds its own sentence, so the operator sees all the reasons at once.
``--yes`` never bypasses a rule; only ``--allow-removable`` relaxes the removable rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from appliance.install.disks import BlockDevice, find, human_size

# Flatcar's disk image is about 8.5 GB once written (its ROOT partition grows to fill the
# disk on first boot); flatcar-install on a smaller disk fails half-way, after wiping it.
MIN_DISK_SIZE = 8 << 30
INSTALLABLE_TYPES = frozenset({"disk", "loop"})
LIVE_MEDIA_FSTYPES = frozenset({"iso9660", "udf"})
MOUNTED_PREFIX = "has a mounted filesystem"
MAX_MOUNTS_SHOWN = 3
TYPE_WORDS = {
    "rom": "an optical drive (rom)",
    "lvm": "an LVM logical volume",
    "crypt": "an encrypted (dm-crypt) volume",
    "dm": "a device-mapper device",
    "mpath": "a multipath device",
}


@dataclass(frozen=True)
class Verdict:
    """The answer for one device: safe when there are no refusals."""

    name: str
    device: BlockDevice | None
    refusals: tuple[str, ...]

    @property
    def safe(self) -> bool:
        return not self.refusals


def _parent_of(devices: Sequence[BlockDevice], device: BlockDevice) -> str | None:
    if device.pkname:
        return device.pkname
    for top in devices:
        for node in top.walk():
            if any(child.kname == device.kname for child in node.children):
                return node.kname
    return None


def check_device(
    devices: Sequence[BlockDevice],
    name: str,
    in_use: Mapping[str, Sequence[str]],
    *,
    allow_removable: bool = False,
) -> Verdict:
    """Every reason why ``name`` must not be erased (none: it may be)."""
    device = find(list(devices), name)
    if device is None:
        known = ", ".join(top.name for top in devices) or "none"
        return Verdict(name, None, (f"there is no block device called {name} (disks: {known})",))

    refusals: list[str] = []
    if device.is_partition:
        parent = _parent_of(devices, device)
        whole = f" of /dev/{parent}" if parent else ""
        refusals.append(f"is a partition{whole}; kpc installs to a whole disk")
    elif device.type not in INSTALLABLE_TYPES:
        word = TYPE_WORDS.get(device.type) or (
            f"a {device.type} device" if not device.type.startswith("raid") else "a RAID array"
        )
        refusals.append(f"is {word}, not a disk")
    if device.size <= 0:
        refusals.append("has no medium (size 0)")
    elif device.size < MIN_DISK_SIZE and not device.is_partition:
        refusals.append(
            f"is too small ({_exact_size(device.size)}): Flatcar needs a disk of at least "
            f"{MIN_DISK_SIZE >> 30} GiB"
        )
    if device.ro:
        refusals.append("is read-only")
    if device.rm and not allow_removable:
        refusals.append("is removable (add --allow-removable if you really mean this device)")

    for node in device.walk():
        reasons = list(in_use.get(node.kname, ()))
        refusals.extend(reasons)
        if not reasons:  # lsblk saw a mount that /proc/self/mountinfo did not explain
            refusals.extend(
                f"has a mounted filesystem ({node.kname} on {mount})" for mount in node.mountpoints
            )
        if node is not device and not node.is_partition:
            refusals.append(f"is part of {node.type} device {node.name}, which is active")
        if node.fstype in LIVE_MEDIA_FSTYPES:
            label = f' labelled "{node.label}"' if node.label else ""
            refusals.append(
                f"carries an {node.fstype} filesystem{label} on {node.name}: "
                "it looks like live boot media"
            )
    return Verdict(name, device, _collapse_mounts(list(dict.fromkeys(refusals))))


def _exact_size(size: int) -> str:
    """lsblk's rounded size, or bytes when rounding would make it read like the limit."""
    shown = human_size(size)
    return f"{size} bytes" if shown == human_size(MIN_DISK_SIZE) else shown


def _collapse_mounts(refusals: list[str]) -> tuple[str, ...]:
    """Keep the first few "mounted filesystem" reasons; count the rest (docker has many)."""
    mounted = [r for r in refusals if r.startswith(MOUNTED_PREFIX)]
    if len(mounted) <= MAX_MOUNTS_SHOWN:
        return tuple(refusals)
    dropped = set(mounted[MAX_MOUNTS_SHOWN:])
    kept = [r for r in refusals if r not in dropped]
    kept.append(f"has {len(dropped)} more mounted filesystems")
    return tuple(kept)


def check_all(
    devices: Sequence[BlockDevice],
    in_use: Mapping[str, Sequence[str]],
    *,
    allow_removable: bool = False,
) -> list[Verdict]:
    """A verdict for each top-level device, in lsblk's order."""
    return [
        check_device(devices, top.kname, in_use, allow_removable=allow_removable) for top in devices
    ]


def confirmation_matches(typed: str, device: BlockDevice) -> bool:
    """The operator typed this device's name (``sdb`` or ``/dev/sdb``), nothing else."""
    text = typed.strip()
    return text in {device.name, device.kname, device.path, f"/dev/{device.kname}"}
