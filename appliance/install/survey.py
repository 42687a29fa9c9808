"""Look at this host's block devices and what uses them, then judge each one. Reads only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.drivers import blockdev
from appliance.install.disks import BlockDevice, parse_lsblk, with_probes
from appliance.install.inuse import LoopBacking, devices_in_use, parse_mountinfo, parse_swaps
from appliance.install.safety import Verdict, check_all, check_device


@dataclass(frozen=True)
class Survey:
    devices: list[BlockDevice]
    in_use: dict[str, list[str]]

    def verdicts(self, *, allow_removable: bool) -> list[Verdict]:
        return check_all(self.devices, self.in_use, allow_removable=allow_removable)

    def check(self, name: str, *, allow_removable: bool) -> Verdict:
        return check_device(self.devices, name, self.in_use, allow_removable=allow_removable)


def survey() -> Survey:
    """lsblk (with blkid filling in what udev would), mounts, swaps and loop backing files."""
    devices = parse_lsblk(blockdev.lsblk_json())
    probes: dict[str, dict[str, str]] = {}
    for top in devices:
        for node in top.walk():
            if node.fstype is None and node.size > 0 and node.path not in probes:
                probes[node.path] = blockdev.blkid_probe(node.path)
    devices = [with_probes(top, probes) for top in devices]
    loops = {
        name: LoopBacking(path, fs_dev, block_dev)
        for name, (path, fs_dev, block_dev) in blockdev.loop_backings().items()
    }
    in_use = devices_in_use(
        devices,
        parse_mountinfo(blockdev.mountinfo()),
        parse_swaps(blockdev.swaps()),
        loops,
        root_dev=blockdev.filesystem_device(Path("/")),
    )
    return Survey(devices, in_use)
