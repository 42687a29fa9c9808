"""Registry records as JSON data: the etcd backend's values and ``kpc state export``'s file.

Every field of ``Machine`` and ``Bmc`` is written by name, so a field added to the model is
carried without touching this module; a reader ignores names it does not know and leaves
missing ones at their defaults (a record from an older or newer kpc still loads).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from appliance.errors import StateError
from appliance.state.model import Bmc, BootMode, Event, Machine, MachineState

_MACHINE_FIELDS = {f.name for f in dataclasses.fields(Machine)}
_BMC_FIELDS = {f.name for f in dataclasses.fields(Bmc)}
_BMC_TUPLES = ("ipmi_versions", "auth_types", "protocols", "macs")


def machine_to_data(machine: Machine) -> dict[str, Any]:
    data = dataclasses.asdict(machine)
    data["state"] = machine.state.value
    data["boot"] = machine.boot.value
    return data


def machine_from_data(data: Any, where: str = "a machine record") -> Machine:
    if not isinstance(data, dict) or not isinstance(data.get("mac"), str):
        raise StateError(f"{where} is not a machine record (a JSON object with a 'mac')")
    fields = {k: v for k, v in data.items() if k in _MACHINE_FIELDS}
    try:
        fields["state"] = MachineState(fields.get("state", MachineState.DISCOVERED))
        fields["boot"] = BootMode(fields.get("boot", BootMode.INSTALL))
    except ValueError as exc:
        raise StateError(f"{where}: {exc}") from None
    if not isinstance(fields.get("facts", {}), dict):
        raise StateError(f"{where}: 'facts' is not a JSON object")
    return Machine(**fields)


def bmc_to_data(bmc: Bmc, *, with_macs: bool = True) -> dict[str, Any]:
    data = dataclasses.asdict(bmc)
    for name in _BMC_TUPLES:
        data[name] = list(data[name])
    if not with_macs:
        del data["macs"]
    return data


def bmc_from_data(data: Any, where: str = "a BMC record") -> Bmc:
    if not isinstance(data, dict) or not isinstance(data.get("address"), str):
        raise StateError(f"{where} is not a BMC record (a JSON object with an 'address')")
    fields = {k: v for k, v in data.items() if k in _BMC_FIELDS}
    for name in _BMC_TUPLES:
        if name in fields:
            fields[name] = tuple(fields[name] or ())
    return Bmc(**fields)


def event_to_data(event: Event) -> dict[str, Any]:
    return dataclasses.asdict(event)


def event_from_data(data: Any, where: str = "an event") -> Event:
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise StateError(f"{where} is not an event (a JSON object with a 'kind')")
    try:
        return Event(
            id=int(data.get("id", 0)),
            time=float(data["time"]),
            kind=data["kind"],
            mac=data.get("mac"),
            detail=dict(data.get("detail") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"{where}: {exc}") from None
