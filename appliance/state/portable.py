"""The registry as a versioned JSON document (``kpc state export|import``), and its check.

The document moves a registry between files or backends, or keeps a copy:

    {"format": "kpc-registry", "version": 1, "exported_at": 1764380000.0,
     "machines": [{"mac": ..., "state": ..., "boot": ..., ...}], "bmcs": [{...}]}

Machines carry every field except the install token: a secret has no place in a file an
operator copies around, and a machine in boot mode ``install`` gets a fresh token at its
next request (``rules.seen``). Reading is strict: an unknown format or version, an unknown
field, a wrong type or an invalid MAC, state or boot mode is refused with its place in the
document, before anything is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.errors import StateError
from appliance.mac import MAC_RE
from appliance.state.model import Bmc, BootMode, Machine, MachineState
from appliance.state.store import MachineStore, Step, Transition

FORMAT = "kpc-registry"
VERSION = 1
_SECRET_FIELDS = ("install_token",)
_MACHINE_FIELDS = {f.name: f for f in dataclasses.fields(Machine) if f.name not in _SECRET_FIELDS}
_BMC_FIELDS = {f.name: f for f in dataclasses.fields(Bmc)}


def export_document(machines: Sequence[Machine], bmcs: Sequence[Bmc], now: float) -> dict[str, Any]:
    def machine(m: Machine) -> dict[str, Any]:
        data = {name: getattr(m, name) for name in _MACHINE_FIELDS}
        data["state"], data["boot"] = m.state.value, m.boot.value
        return data

    def bmc(b: Bmc) -> dict[str, Any]:
        data = dataclasses.asdict(b)
        for name in ("ipmi_versions", "auth_types", "protocols", "macs"):
            data[name] = list(data[name])
        return data

    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": now,
        "machines": [machine(m) for m in machines],
        "bmcs": [bmc(b) for b in bmcs],
    }


def _fields(item: Any, where: str, known: Mapping[str, Any], required: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise StateError(f"{where}: expected an object")
    unknown = sorted(set(item) - set(known))
    if unknown:
        raise StateError(f"{where}: unknown field {unknown[0]!r}")
    if not isinstance(item.get(required), str):
        raise StateError(f"{where}.{required}: missing or not a string")
    return dict(item)


def _optional(
    data: dict[str, Any], where: str, names: Sequence[str], kind: type | tuple[type, ...]
) -> None:
    for name in names:
        value = data.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise StateError(f"{where}.{name}: expected {getattr(kind, '__name__', 'a number')}")


def parse_document(doc: Any) -> tuple[list[Machine], list[Bmc]]:
    """The machines and BMCs of an export; ``StateError`` naming the first problem."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateError(f'not a kpc registry export (expected "format": "{FORMAT}")')
    if doc.get("version") != VERSION:
        raise StateError(
            f"registry export version {doc.get('version')!r}; this kpc reads version {VERSION}",
            hint="export again with this kpc's version, or upgrade kpc",
        )
    machines: list[Machine] = []
    seen: set[str] = set()
    for i, item in enumerate(_list(doc, "machines")):
        where = f"machines[{i}]"
        data = _fields(item, where, _MACHINE_FIELDS, "mac")
        if not MAC_RE.fullmatch(data["mac"]) or data["mac"] in seen:
            raise StateError(f"{where}.mac: {data['mac']!r} is not a new normalised MAC")
        seen.add(data["mac"])
        try:
            data["state"] = MachineState(data.get("state", "discovered"))
            data["boot"] = BootMode(data.get("boot", "install"))
        except ValueError as exc:
            raise StateError(f"{where}: {exc}") from None
        _optional(data, where, ("first_seen", "last_seen"), (int, float))
        _optional(data, where, ("uuid", "hostname", "serial", "last_address", "last_endpoint",
                                "bmc_address", "ssh_host_key"), str)  # fmt: skip
        if not isinstance(data.setdefault("facts", {}), dict):
            raise StateError(f"{where}.facts: expected an object")
        machines.append(Machine(**data))
    bmcs: list[Bmc] = []
    for i, item in enumerate(_list(doc, "bmcs")):
        where = f"bmcs[{i}]"
        data = _fields(item, where, _BMC_FIELDS, "address")
        for name in ("ipmi_versions", "auth_types", "protocols", "macs"):
            value = data.get(name, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise StateError(f"{where}.{name}: expected a list of strings")
            data[name] = tuple(value)
        _optional(data, where, ("first_seen", "last_seen"), (int, float))
        _optional(data, where, ("iana",), int)
        _optional(data, where, ("machine_mac", "tls_fingerprint", "model", "serial", "uuid"), str)
        bmcs.append(Bmc(**data))
    return machines, bmcs


def _list(doc: Mapping[str, Any], name: str) -> list[Any]:
    value = doc.get(name, [])
    if not isinstance(value, list):
        raise StateError(f"{name}: expected a list")
    return value


def _put(machine: Machine) -> Step[None]:
    def step(current: Machine | None) -> Transition[None]:
        return Transition(machine, None)

    return step


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # present and different, not replaced
    bmcs: int = 0


def import_document(
    store: MachineStore, doc: Any, now: float, *, replace: bool = False, dry_run: bool = False
) -> ImportReport:
    """Write an export into ``store``: machines not present are added; present ones that
    differ are conflicts (left alone) unless ``replace``. Each machine is one transaction;
    the document is checked completely before the first write."""
    machines, bmcs = parse_document(doc)
    report = ImportReport()
    for machine in machines:
        current = store.get(machine.mac)
        if current is None:
            report.added.append(machine.mac)
        elif dataclasses.replace(current, install_token=None) == machine:
            continue
        elif replace:
            report.replaced.append(machine.mac)
        else:
            report.conflicts.append(machine.mac)
            continue
        if not dry_run:
            store.transact(machine.mac, _put(machine), now)
    for bmc in bmcs:
        report.bmcs += 1
        if dry_run:
            continue
        store.record_bmc(bmc, now)
        if bmc.model or bmc.serial or bmc.uuid or bmc.macs:
            store.record_bmc_inventory(
                bmc.address, model=bmc.model, serial=bmc.serial, uuid=bmc.uuid, macs=bmc.macs,
                now=now,
            )  # fmt: skip
        if bmc.tls_fingerprint:
            store.pin_bmc_cert(bmc.address, bmc.tls_fingerprint)
    return report
