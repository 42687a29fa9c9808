"""Loop devices as disks for the install-host tests (root only)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_root, require_tool

DISK_SIZE = 8 << 30  # sparse; Flatcar's minimum (smaller disks are refused)


def sparse_digest(path: Path) -> str:
    """A hash of a sparse file's content: its data extents and where they are."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        fd, end, offset = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while offset < end:
            try:
                offset = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            stop = os.lseek(fd, offset, os.SEEK_HOLE)
            h.update(f"{offset}:".encode())
            f.seek(offset)
            while offset < stop:
                chunk = f.read(min(1 << 20, stop - offset))
                h.update(chunk)
                offset += len(chunk)
    return h.hexdigest()


@dataclass
class Loop:
    device: str
    image: Path

    @property
    def name(self) -> str:
        return self.device.removeprefix("/dev/")

    def digest(self) -> str:
        return sparse_digest(self.image)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def mounts_of(prefix: str) -> list[str]:
    """Mount points whose source or target starts with ``prefix``."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        dash = fields.index("-")
        if fields[4].startswith(prefix) or fields[dash + 2].startswith(prefix):
            found.append(fields[4])
    return found


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Callable[..., Loop]]:
    """Factory for file-backed loop devices; all unmounted and detached afterwards."""
    require_root()
    require_tool("losetup", "sfdisk", "mkfs.ext4", "blkid", "lsblk", "mount", "umount")
    made: list[Loop] = []

    def make(read_only: bool = False, size: int = DISK_SIZE) -> Loop:
        image = tmp_path / f"disk{len(made)}.img"
        with image.open("wb") as f:
            f.truncate(size)
        argv = ["losetup", "--find", "--show", "--partscan"]
        if read_only:
            argv.append("--read-only")
        device = sh(*argv, str(image)).stdout.strip()
        loop = Loop(device, image)
        made.append(loop)
        return loop

    yield make
    for loop in made:
        for point in reversed(mounts_of(loop.device)):
            sh("umount", "--lazy", point, check=False)
        sh("losetup", "--detach", loop.device, check=False)
