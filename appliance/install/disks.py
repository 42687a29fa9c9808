"""The block-device model, parsed from ``lsblk -J -b -O`` output. Pure.

Tolerates the differences between util-linux versions: ``mountpoints`` (a list, 2.37+) or
``mountpoint`` (one value); booleans as JSON booleans or "0"/"1"; sizes as numbers or strings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from appliance.errors import KpcError


@dataclass(frozen=True)
class BlockDevice:
    name: str
    kname: str
    path: str
    type: str
    size: int
    maj_min: str = ""
    model: str | None = None
    serial: str | None = None
    tran: str | None = None
    vendor: str | None = None
    ro: bool = False
    rm: bool = False
    fstype: str | None = None
    label: str | None = None
    partlabel: str | None = None
    pkname: str | None = None
    mountpoints: tuple[str, ...] = ()
    children: tuple[BlockDevice, ...] = field(default=())

    def walk(self) -> Iterator[BlockDevice]:
        """This device and everything below it (partitions, dm/md/loop holders)."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def is_partition(self) -> bool:
        return self.type == "part"

    def describe(self) -> str:
        """The model as lsblk shows it (the vendor when there is no model), for prompts."""
        return self.model or self.vendor or "-"


class LsblkError(KpcError):
    """lsblk's output cannot be understood."""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    return str(value).strip() in {"1", "true"}


def _size(value: Any) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise LsblkError(
            f"lsblk reported size {value!r}, not a number of bytes",
            hint="kpc runs lsblk with -b; is this util-linux's lsblk?",
        ) from None


def _device(node: Mapping[str, Any]) -> BlockDevice:
    mounts: list[str] = []
    raw_mounts = node.get("mountpoints")
    if raw_mounts is None:
        raw_mounts = [node.get("mountpoint")]
    for mount in raw_mounts or []:
        if mount:
            mounts.append(str(mount))
    name = str(node.get("name", ""))
    if not name:
        raise LsblkError("lsblk reported a device without a name")
    kname = _text(node.get("kname")) or name
    return BlockDevice(
        name=name,
        kname=kname,
        path=_text(node.get("path")) or f"/dev/{name}",
        type=_text(node.get("type")) or "unknown",
        size=_size(node.get("size")),
        maj_min=_text(node.get("maj:min")) or "",
        model=_text(node.get("model")),
        serial=_text(node.get("serial")),
        tran=_text(node.get("tran")),
        vendor=_text(node.get("vendor")),
        ro=_flag(node.get("ro", False)),
        rm=_flag(node.get("rm", False)),
        fstype=_text(node.get("fstype")),
        label=_text(node.get("label")),
        partlabel=_text(node.get("partlabel")),
        pkname=_text(node.get("pkname")),
        mountpoints=tuple(dict.fromkeys(mounts)),
        children=tuple(_device(child) for child in node.get("children", []) or []),
    )


def parse_lsblk(text: str) -> list[BlockDevice]:
    """The top-level devices (each with its children) from ``lsblk -J`` output."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LsblkError(f"lsblk printed something that is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("blockdevices"), list):
        raise LsblkError("lsblk's JSON has no 'blockdevices' list")
    return [_device(node) for node in data["blockdevices"]]


def with_probes(device: BlockDevice, probes: Mapping[str, Mapping[str, str]]) -> BlockDevice:
    """Fill in fstype/label from blkid probes (keyed by path) where lsblk had none.

    lsblk takes these from udev; on a host without udev they are empty.
    """
    probe = probes.get(device.path, {})
    return replace(
        device,
        fstype=device.fstype or probe.get("TYPE"),
        label=device.label or probe.get("LABEL"),
        children=tuple(with_probes(child, probes) for child in device.children),
    )


def find(devices: list[BlockDevice], name: str) -> BlockDevice | None:
    """The device called ``name`` (``sda``, ``/dev/sda``, kname or path), wherever it sits."""
    wanted = name.removeprefix("/dev/")
    for top in devices:
        for device in top.walk():
            if wanted in {device.name, device.kname} or name == device.path:
                return device
    return None


def human_size(size: int) -> str:
    """1000204886016 -> ``931.5G`` (binary units, as lsblk prints them)."""
    value = float(size)
    for unit in ("B", "K", "M", "G", "T", "P"):
        if value < 1024 or unit == "P":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}B"
