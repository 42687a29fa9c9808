"""What an operator asks of BMCs, in words both protocols share. Pure.

An ``Action`` is one of: a power action (status, on, off, cycle, reset), a boot device
(one-time or persistent, optionally with the firmware mode), ``pxe`` (one-time PXE boot,
then reset or power on: what ``kpc pxe-all`` does), ``inventory`` (what the machine is and
its MACs), or virtual media (insert an ISO URL / eject). ``appliance.bmc.ipmi_jobs`` and
``appliance.bmc.redfish_jobs`` turn an action into each protocol's steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PowerAction(StrEnum):
    STATUS = "status"
    ON = "on"
    OFF = "off"
    CYCLE = "cycle"
    RESET = "reset"


class BootDevice(StrEnum):
    PXE = "pxe"
    DISK = "disk"
    HTTP = "http"  # UEFI HTTP boot (Redfish UefiHttp)
    CD = "cd"  # virtual media


class BootMode(StrEnum):
    UEFI = "uefi"
    LEGACY = "legacy"


class Kind(StrEnum):
    POWER = "power"
    BOOTDEV = "bootdev"
    PXE = "pxe"
    INVENTORY = "inventory"
    MEDIA_INSERT = "media-insert"
    MEDIA_EJECT = "media-eject"


@dataclass(frozen=True)
class Action:
    kind: Kind
    power: PowerAction | None = None
    device: BootDevice | None = None
    persistent: bool = False
    mode: BootMode | None = None
    image: str | None = None  # virtual media URL
    boot: bool = False  # after inserting media: one-time boot from it, then reset

    @property
    def changes_state(self) -> bool:
        return not (
            self.kind is Kind.INVENTORY
            or (self.kind is Kind.POWER and self.power is PowerAction.STATUS)
        )

    def describe(self) -> str:
        """What the action will do, for confirmations and --dry-run."""
        if self.kind is Kind.POWER:
            return {
                PowerAction.STATUS: "read the power state",
                PowerAction.ON: "power on (if off)",
                PowerAction.OFF: "power off (hard, if on)",
                PowerAction.CYCLE: "power-cycle (if on)",
                PowerAction.RESET: "hard reset (if on)",
            }[self.power or PowerAction.STATUS]
        if self.kind is Kind.BOOTDEV:
            when = "every boot" if self.persistent else "the next boot"
            mode = f" in {self.mode.value} mode" if self.mode else ""
            device = self.device.value if self.device else "?"
            return f"set boot device {device}{mode} for {when}"
        if self.kind is Kind.PXE:
            return "set one-time PXE boot, then reset (or power on if off)"
        if self.kind is Kind.INVENTORY:
            return "read model, serial, UUID and MACs (Redfish)"
        if self.kind is Kind.MEDIA_INSERT:
            then = ", boot from it once and reset (or power on)" if self.boot else ""
            return f"insert virtual media {self.image}{then}"
        return "eject virtual media"


def power(action: PowerAction) -> Action:
    return Action(Kind.POWER, power=action)


PXE = Action(Kind.PXE)
INVENTORY = Action(Kind.INVENTORY)
