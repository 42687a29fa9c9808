"""The storage interface of the machine registry.

A small Protocol so another backend can follow the SQLite one. Every method is atomic;
``now`` is passed in (seconds since the epoch) so callers and tests control time.
MACs passed in must already be normalised (``appliance.config.normalize_mac``).
"""

from __future__ import annotations

from typing import Any, Protocol

from appliance.state.model import Bmc, BootMode, Machine, MachineState


class MachineStore(Protocol):
    def get(self, mac: str) -> Machine | None: ...

    def machines(self, state: MachineState | None = None) -> list[Machine]: ...

    def record_request(
        self,
        mac: str,
        *,
        address: str | None,
        endpoint: str,
        now: float,
        uuid: str | None = None,
        hostname: str | None = None,
        serial: str | None = None,
    ) -> Machine:
        """Note a request from a machine (creating it as ``discovered`` if new)."""
        ...

    def set_state(self, mac: str, state: MachineState, now: float) -> Machine: ...

    def set_boot(self, mac: str, boot: BootMode, now: float) -> Machine: ...

    def install_complete(self, mac: str, now: float) -> Machine:
        """installing -> installed, boot -> local, and the recorded SSH host key cleared."""
        ...

    def check_in(self, mac: str, facts: dict[str, Any], address: str | None, now: float) -> Machine:
        """Store facts; the machine becomes ``ready``."""
        ...

    def set_host_key(self, mac: str, host_key: str | None) -> Machine: ...

    def forget(self, mac: str) -> None: ...

    def record_bmc(self, bmc: Bmc, now: float) -> Bmc: ...

    def list_bmcs(self) -> list[Bmc]: ...

    def record_bmc_inventory(
        self,
        address: str,
        *,
        model: str | None,
        serial: str | None,
        uuid: str | None,
        macs: tuple[str, ...],
        now: float,
    ) -> Bmc:
        """Note what a BMC's system is; its MACs point at it from then on (a machine with
        one of them, now or later, gets this BMC's address)."""
        ...

    def pin_bmc_cert(self, address: str, fingerprint: str | None) -> Bmc:
        """Pin (or with None forget) the fingerprint of a BMC's TLS certificate."""
        ...

    def close(self) -> None: ...
