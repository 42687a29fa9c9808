"""The in-memory machine behind a simulated BMC: power and boot device, nothing else.

Boots are recorded (``boots``: "network" or "disk" per power on/reset) so a test can tell
whether a one-time PXE request reached the boot it was meant for — and only that one.
"""

from __future__ import annotations

from appliance.bmc.backend import BootDevice, PowerState
from appliance.errors import BmcError


class MemoryBackend:
    """Implements ``appliance.bmc.backend.MachineBackend`` with plain attributes."""

    def __init__(self, power: PowerState = "off") -> None:
        self._power: PowerState = power
        self._device: BootDevice = "default"
        self._persistent = False
        self.boots: list[str] = []
        self.media: str | None = None  # the URL in the virtual CD drive

    def _boot(self) -> None:
        device = self._device
        self.boots.append(
            "network" if device == "network" else "cd" if device == "cd" and self.media else "disk"
        )
        if not self._persistent:
            self._device = "default"

    def power_state(self) -> PowerState:
        return self._power

    def power_on(self) -> None:
        if self._power == "off":
            self._power = "on"
            self._boot()

    def power_off(self) -> None:
        self._power = "off"

    def power_reset(self) -> None:
        if self._power == "off":
            raise BmcError("the machine is powered off: nothing to reset")
        self._boot()

    def power_cycle(self) -> None:
        if self._power == "off":
            raise BmcError("the machine is powered off: nothing to power-cycle")
        self._boot()

    def boot_device(self) -> BootDevice:
        return self._device

    def set_boot_device(self, device: BootDevice, persistent: bool) -> None:
        self._device = device
        self._persistent = persistent and device != "default"

    def insert_media(self, url: str) -> None:
        self.media = url

    def eject_media(self) -> None:
        self.media = None
