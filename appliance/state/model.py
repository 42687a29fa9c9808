"""Machine records and their life cycle. Pure data; no I/O.

States: discovered -> installing -> installed -> ready, plus maintenance and rescue.
Boot mode decides what bootcfg's /ipxe answers: ``install`` (the installer profile),
``local`` (boot the local disk; set by install-complete so a PXE-first machine never loops
into reinstalling) or ``rescue``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class MachineState(StrEnum):
    DISCOVERED = "discovered"
    INSTALLING = "installing"
    INSTALLED = "installed"
    READY = "ready"
    MAINTENANCE = "maintenance"
    RESCUE = "rescue"


class BootMode(StrEnum):
    INSTALL = "install"
    LOCAL = "local"
    RESCUE = "rescue"


@dataclass(frozen=True)
class Machine:
    """One machine, keyed by its (normalised) boot MAC address."""

    mac: str
    state: MachineState = MachineState.DISCOVERED
    boot: BootMode = BootMode.INSTALL
    uuid: str | None = None
    hostname: str | None = None
    serial: str | None = None
    first_seen: float | None = None
    last_seen: float | None = None
    last_address: str | None = None
    last_endpoint: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    bmc_address: str | None = None
    ssh_host_key: str | None = None  # "type base64" recorded on first use
    # the machine's own install token: minted when it enters boot mode install, served
    # only inside its installer config, valid only for its install-complete, then cleared
    install_token: str | None = field(default=None, repr=False)

    @property
    def management_address(self) -> str | None:
        """Where Ansible and SSH reach the machine: its checked-in address, else last seen."""
        addr = self.facts.get("address")
        return str(addr) if addr else self.last_address


@dataclass(frozen=True)
class Bmc:
    """A BMC found by discovery (or listed in the inventory).

    ``protocols``: what it answered to at its last discovery ("ipmi", "redfish").
    ``tls_fingerprint``: the SHA-256 of its HTTPS certificate, pinned on first use (as SSH
    host keys are) and cleared only by ``kpc bmc forget-cert``. ``model``, ``serial``,
    ``uuid`` and ``macs`` (its system's network interfaces) come from a Redfish inventory,
    so a machine is known by MAC, with its BMC, before it ever PXE-boots.
    """

    address: str
    ipmi_versions: tuple[str, ...] = ()
    auth_types: tuple[str, ...] = ()
    iana: int | None = None
    first_seen: float | None = None
    last_seen: float | None = None
    machine_mac: str | None = None
    protocols: tuple[str, ...] = ()
    tls_fingerprint: str | None = None
    model: str | None = None
    serial: str | None = None
    uuid: str | None = None
    macs: tuple[str, ...] = ()


class EventKind(StrEnum):
    """What an ``Event`` records. Stored as text: a reader keeps kinds it does not know."""

    REQUEST = "request"  # the machine asked bootcfg something: detail endpoint, address
    STATE = "state"  # detail from, to
    BOOT = "boot"  # detail from, to
    CHECKIN = "checkin"  # detail address
    HOST_KEY = "host-key"  # detail recorded (bool); never the key itself
    BMC = "bmc"  # a BMC record changed: detail address
    FORGOTTEN = "forgotten"  # the machine was removed from the registry
    ACTION = "action"  # an operator's action, audited: detail who, action, dry_run, result


@dataclass(frozen=True)
class Event:
    """One entry of the registry's append-only event log.

    ``id`` grows with every event and is never reused, so it is also the cursor of
    ``changes_since``. ``mac`` is None for events about no single machine.
    """

    id: int
    time: float
    kind: str
    mac: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
