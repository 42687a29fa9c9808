"""The registry's state rules as pure functions: a machine record in, the next record out.

Every store applies a transition by reading the record, calling one of these (or a caller's
decision function built from them, see ``MachineStore.transact``) and writing the result in
the same transaction, so the rules live here once and each backend only provides atomicity.

- ``seen``: a request from a machine; creates it as ``discovered`` / boot ``install`` when
  new, updates its last-seen data, never changes state.
- ``install_completed``: state ``installed``, boot ``local``, recorded SSH host key replaced
  (the reinstalled machine has a new one). A machine that reports a finished install must
  never be sent into another install.
- ``checked_in``: facts stored; state ``ready`` unless an operator put the machine into
  ``maintenance`` (that stays until they change it).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from typing import Any

from appliance.state.model import BootMode, EventKind, Machine, MachineState


def mint_install_token() -> str:
    """A fresh per-machine install token (256 bits)."""
    return secrets.token_urlsafe(32)


def new_machine(mac: str, now: float, boot: BootMode = BootMode.INSTALL) -> Machine:
    token = mint_install_token() if boot is BootMode.INSTALL else None
    return Machine(
        mac=mac, state=MachineState.DISCOVERED, boot=boot, first_seen=now, install_token=token
    )


def seen(
    machine: Machine | None,
    mac: str,
    *,
    address: str | None,
    endpoint: str,
    now: float,
    uuid: str | None = None,
    hostname: str | None = None,
    serial: str | None = None,
) -> Machine:
    current = machine if machine is not None else new_machine(mac, now)
    token = current.install_token
    if token is None and current.boot is BootMode.INSTALL:
        token = mint_install_token()  # a record from before install tokens existed
    return dataclasses.replace(
        current,
        install_token=token,
        last_seen=now,
        last_address=address,
        last_endpoint=endpoint,
        uuid=uuid if uuid is not None else current.uuid,
        hostname=hostname if hostname is not None else current.hostname,
        serial=serial if serial is not None else current.serial,
    )


def with_state(machine: Machine, state: MachineState) -> Machine:
    return dataclasses.replace(machine, state=MachineState(state))


def with_boot(machine: Machine, boot: BootMode) -> Machine:
    """A new boot mode. Entering ``install`` mints a new install token (an old one, which
    may have leaked from an earlier install, is worthless); leaving it clears the token."""
    boot = BootMode(boot)
    if boot is machine.boot:
        return machine
    token = mint_install_token() if boot is BootMode.INSTALL else None
    return dataclasses.replace(machine, boot=boot, install_token=token)


def install_completed(machine: Machine, host_key: str | None = None) -> Machine:
    return dataclasses.replace(
        machine,
        state=MachineState.INSTALLED,
        boot=BootMode.LOCAL,
        ssh_host_key=host_key,
        install_token=None,
    )


def checked_in(machine: Machine, facts: dict[str, Any], address: str | None, now: float) -> Machine:
    state = machine.state
    if state is not MachineState.MAINTENANCE:
        state = MachineState.READY
    bmc = facts.get("bmc_address")
    hostname = facts.get("hostname")
    return dataclasses.replace(
        machine,
        state=state,
        facts=dict(facts),
        last_seen=now,
        last_address=address if address is not None else machine.last_address,
        last_endpoint="checkin",
        hostname=hostname if isinstance(hostname, str) and hostname else machine.hostname,
        bmc_address=bmc if isinstance(bmc, str) and bmc else machine.bmc_address,
    )


def request_event(
    endpoint: str, address: str | None, detail: Mapping[str, Any] | None = None
) -> tuple[str, Mapping[str, Any]]:
    """The event a request from a machine appends: endpoint, address, and what was decided."""
    return (EventKind.REQUEST, {**(detail or {}), "endpoint": endpoint, "address": address})


def checkin_event(address: str | None) -> tuple[str, Mapping[str, Any]]:
    return (EventKind.CHECKIN, {"address": address})


def change_events(before: Machine, after: Machine) -> tuple[tuple[str, Mapping[str, Any]], ...]:
    """The state, boot and host-key events a change from ``before`` to ``after`` appends."""
    events: list[tuple[str, Mapping[str, Any]]] = []
    if before.state is not after.state:
        events.append((EventKind.STATE, {"from": before.state, "to": after.state}))
    if before.boot is not after.boot:
        events.append((EventKind.BOOT, {"from": before.boot, "to": after.boot}))
    if before.ssh_host_key != after.ssh_host_key:
        events.append((EventKind.HOST_KEY, {"recorded": after.ssh_host_key is not None}))
    return tuple(events)


def address_order(address: str) -> tuple[int, ...] | tuple[int, str]:
    """Sort key for BMC addresses: IPv4 addresses numerically, then names."""
    parts = address.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return (1 << 9, address)
