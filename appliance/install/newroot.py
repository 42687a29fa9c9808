"""After the installer: find the new root filesystem by its label, mount it, copy kpc's files.

The mount lives inside the run's work directory and is always undone (``mounted`` is a
context manager whose exit unmounts, lazily as a last resort, even on Ctrl-C).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliance.drivers import blockdev
from appliance.errors import KpcError
from appliance.install.disks import BlockDevice, parse_lsblk

ROOT_LABEL = "ROOT"
KPC_DIR = Path("etc/kpc")
PARTITION_WAIT = 30.0
SETTLED_GRACE = 2.0  # seconds to wait on once the partitions are visible
INSTALLED_EXECUTABLE = Path("opt/bin/kpc")  # Flatcar's place for added programs (in PATH)


class NewRootError(KpcError):
    """The installed system's root filesystem cannot be found, mounted or written."""


@dataclass(frozen=True)
class CopyItem:
    """One thing to copy: a file or a directory, and its name under /etc/kpc."""

    source: Path
    name: str


def partitions(device: str) -> list[BlockDevice]:
    """The partitions lsblk shows on ``device`` (fstype/label completed by blkid probes)."""
    tops = parse_lsblk(blockdev.lsblk_json(device))
    found: list[BlockDevice] = []
    for top in tops:
        found.extend(node for node in top.walk() if node.is_partition)
    return found


def find_root_partition(
    device: str, label: str = ROOT_LABEL, timeout: float = PARTITION_WAIT
) -> str:
    """The path of the partition on ``device`` whose filesystem label is ``label``.

    Only ``device``'s own partitions are looked at (another disk may carry a ROOT label too).
    Waits for the kernel to show them after the partition table is re-read.
    """
    blockdev.reread_partitions(device)
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        seen = []
        nodes = partitions(device)
        for part in nodes:
            probe = blockdev.blkid_probe(part.path) if blockdev.is_block_device(part.path) else {}
            found = part.label or probe.get("LABEL")
            seen.append(f"{part.name}={found or '-'}")
            if found == label:
                return part.path
        if nodes and all(blockdev.is_block_device(part.path) for part in nodes):
            # every partition was read from the disk itself (blkid -p): waiting more for
            # udev cannot change a label; allow one grace period for late partitions only
            deadline = min(deadline, time.monotonic() + SETTLED_GRACE)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
        blockdev.settle()
    listed = ", ".join(seen) or "no partitions"
    raise NewRootError(
        f"no partition labelled {label} on {device} after the installer finished ({listed})",
        hint="check the installer's output above; the disk is installed but kpc's files are "
        "not on it: mount its ROOT partition and copy /etc/kpc by hand, or run install-host again",
    )


@contextmanager
def mounted(source: str, mountpoint: Path) -> Iterator[Path]:
    """Mount ``source`` on ``mountpoint`` (created here) and always unmount and remove it."""
    mountpoint.mkdir(mode=0o700, exist_ok=False)
    try:
        blockdev.mount(source, mountpoint)
        try:
            yield mountpoint
        finally:
            blockdev.sync()
            unmount(mountpoint)
    finally:
        if not blockdev.is_mountpoint(mountpoint):
            mountpoint.rmdir()


def unmount(mountpoint: Path) -> None:
    """Unmount; if the filesystem is busy, detach it lazily so nothing stays mounted here."""
    try:
        blockdev.umount(mountpoint)
    except KpcError:
        if blockdev.is_mountpoint(mountpoint):
            blockdev.umount(mountpoint, lazy=True)


def copy_into(root: Path, items: Sequence[CopyItem]) -> list[Path]:
    """Copy each item to ``root/etc/kpc/NAME``; returns what was written (relative to root)."""
    target = root / KPC_DIR
    written: list[Path] = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o755)
        for item in items:
            dest = target / item.name
            if item.source.is_dir():
                shutil.copytree(item.source, dest, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(item.source, dest)
            written.append(KPC_DIR / item.name)
    except OSError as exc:
        where = exc.filename or target
        raise NewRootError(
            f"cannot copy kpc's files to the new system: {where}: {exc.strerror}",
            hint="is the new root filesystem full or read-only?",
        ) from None
    return written


def install_executable(root: Path, executable: Path) -> Path:
    """Copy kpc's self-contained executable to ``root/opt/bin/kpc`` (mode 0755)."""
    dest = root / INSTALLED_EXECUTABLE
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(executable, dest)
        dest.chmod(0o755)
    except OSError as exc:
        raise NewRootError(
            f"cannot copy kpc itself to the new system: {exc.filename or dest}: {exc.strerror}",
            hint=f"kpc's files are in /etc/kpc; after rebooting, copy {executable.name} to "
            f"/{INSTALLED_EXECUTABLE} by hand",
        ) from None
    return INSTALLED_EXECUTABLE
