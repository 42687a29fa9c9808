"""What a simulated BMC controls: the interface between the simulator and a machine.

The simulator (a pyghmi Bmc subclass) speaks IPMI; a backend does the work. The in-memory
backend serves tests; the QEMU backend (in appliance.lab) drives a VM over QMP.
"""

from __future__ import annotations

from typing import Literal, Protocol

PowerState = Literal["on", "off"]
BootDevice = Literal["default", "network", "hd", "cd", "setup"]


class MachineBackend(Protocol):
    def power_state(self) -> PowerState: ...

    def power_on(self) -> None: ...

    def power_off(self) -> None: ...

    def power_reset(self) -> None:
        """Warm reset; applies a pending one-time boot device."""
        ...

    def power_cycle(self) -> None: ...

    def boot_device(self) -> BootDevice: ...

    def set_boot_device(self, device: BootDevice, persistent: bool) -> None: ...
