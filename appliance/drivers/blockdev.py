"""Block devices and mounts: lsblk, blkid, partprobe, udevadm, mount, umount, and /proc, /sys.

Returns raw text or plain data; ``appliance/install`` parses it. Every program runs through
``drivers/process`` so failures become CommandFailed with the command and its output.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

from appliance.drivers import process


def lsblk_json(device: str | None = None) -> str:
    """``lsblk -J -b -O [DEVICE]``: every column, sizes in bytes, as JSON text."""
    lsblk = process.which("lsblk", "util-linux")
    argv = [lsblk, "-J", "-b", "-O"]
    if device is not None:
        argv += ["--", device]
    return process.run(argv, hint="is util-linux installed and /sys mounted?").stdout


def blkid_probe(path: str) -> dict[str, str]:
    """Low-level probe of one device (``blkid -p -o export``), bypassing any cache.

    Returns {} when blkid finds no signature (its exit code 2) or the device has no medium.
    """
    blkid = process.which("blkid", "util-linux")
    result = process.run([blkid, "-p", "-o", "export", "--", path], check=False, timeout=30)
    if result.returncode != 0:
        return {}
    values: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def read_text(path: Path) -> str:
    """A /proc or /sys file's text ("" when it does not exist)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def mountinfo(proc: Path = Path("/proc")) -> str:
    return read_text(proc / "self" / "mountinfo")


def swaps(proc: Path = Path("/proc")) -> str:
    return read_text(proc / "swaps")


def _devnum(number: int) -> str:
    return f"{os.major(number)}:{os.minor(number)}"


def filesystem_device(path: Path) -> str | None:
    """``major:minor`` of the filesystem holding ``path`` (None if it cannot be read)."""
    try:
        return _devnum(os.stat(path).st_dev)
    except OSError:
        return None


def loop_backings(sys: Path = Path("/sys")) -> dict[str, tuple[str, str | None, str | None]]:
    """For each attached loop device: (backing file, st_dev of its filesystem, st_rdev if the
    backing file is a block device). The numbers are ``major:minor`` strings."""
    found: dict[str, tuple[str, str | None, str | None]] = {}
    block = sys / "block"
    if not block.is_dir():
        return found
    for entry in sorted(block.glob("loop*")):
        backing = read_text(entry / "loop" / "backing_file").strip()
        if not backing:
            continue
        fs_dev: str | None = None
        block_dev: str | None = None
        path = backing.removesuffix(" (deleted)")
        try:
            info = os.stat(path)
        except OSError:
            pass
        else:
            fs_dev = _devnum(info.st_dev)
            if stat.S_ISBLK(info.st_mode):
                block_dev = _devnum(info.st_rdev)
        found[entry.name] = (backing, fs_dev, block_dev)
    return found


def canonical_device(name: str) -> str:
    """``sda``, ``/dev/sda`` or a ``/dev/disk/by-*`` link to the real ``/dev/NAME`` path."""
    path = Path(name if name.startswith("/") else f"/dev/{name}")
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return str(path)
    return str(resolved)


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def reread_partitions(device: str) -> None:
    """Make the kernel (and udev, where it runs) see the new partition table."""
    partprobe = shutil.which("partprobe")
    if partprobe is not None:
        process.run([partprobe, "--", device], check=False, timeout=60)
    else:
        blockdev = shutil.which("blockdev")
        if blockdev is not None:
            process.run([blockdev, "--rereadpt", "--", device], check=False, timeout=60)
    settle()


def settle() -> None:
    """Wait for udev to finish with new devices; no-op on hosts without udev."""
    udevadm = shutil.which("udevadm")
    if udevadm is not None:
        process.run([udevadm, "settle", "--timeout=30"], check=False, timeout=60)


def mount(source: str, target: Path) -> None:
    process.run(
        [process.which("mount", "mount"), "--", source, str(target)],
        hint=f"check that {source} holds a filesystem this kernel can mount",
    )


def umount(target: Path, *, lazy: bool = False) -> None:
    argv = [process.which("umount", "mount")]
    if lazy:
        argv.append("--lazy")
    process.run([*argv, "--", str(target)], hint=f"is a process still using {target}?")


def is_mountpoint(path: Path, proc: Path = Path("/proc")) -> bool:
    """True when something is mounted exactly at ``path``."""
    wanted = os.path.realpath(path)
    for line in mountinfo(proc).splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == wanted:
                return True
    return False


def sync() -> None:
    os.sync()
