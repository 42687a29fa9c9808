"""Redfish power, boot override, virtual media and inventory: what each host is asked. Pure.

A job is a generator that yields HTTP ``Request``s (paths on the BMC) and receives
``Reply``s; a reply with an error status is thrown into the job as ``RequestError``. The
driver (``appliance.drivers.redfish``) runs jobs over HTTPS with sessions, TLS pinning,
deadlines and retries. Paths are followed from the service root (``Systems``, the system's
``Actions``, ``EthernetInterfaces``, ``VirtualMedia``), never guessed, so vendors' differing
ids work.

- reset types are chosen from the system's ``ResetType@Redfish.AllowableValues`` (or its
  ``@Redfish.ActionInfo``): a BMC that offers none of the types an action can use is
  "not supported", naming what it offers;
- boot override: ``BootSourceOverrideTarget`` (``Pxe``, ``Hdd``, ``UefiHttp``, ``Cd``)
  checked against its allowable values, ``BootSourceOverrideEnabled`` ``Once`` or
  ``Continuous``, ``BootSourceOverrideMode`` ``UEFI``/``Legacy`` when asked;
- PATCH carries ``If-Match`` with the ETag the BMC sent (some BMCs require it).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.bmc.actions import Action, BootDevice, BootMode, Kind, PowerAction
from appliance.bmc.jobs import Failure, HostError, Inventory, Target
from appliance.mac import normalize_mac

SERVICE_ROOT = "/redfish/v1/"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: Mapping[str, Any] | None = None
    label: str = ""
    changes_state: bool = False
    repeatable: bool = True  # safe to send again when its outcome is unknown
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # parsed JSON, or None
    headers: Mapping[str, str] = field(default_factory=dict)


class RequestError(Exception):
    """A reply with a status of 400 or more (thrown into the job)."""

    def __init__(self, request: Request, reply: Reply) -> None:
        self.request = request
        self.reply = reply
        super().__init__(f"{request.label or request.path}: {describe_error(reply)}")


@dataclass(frozen=True)
class Done:
    result: str
    inventory: Inventory | None = None


Job = Generator[Request, Reply, Done]
JobFactory = Callable[[Target], Job]


def describe_error(reply: Reply) -> str:
    """HTTP status and the BMC's own message (Redfish ``error.@Message.ExtendedInfo``)."""
    text = f"HTTP {reply.status}"
    error = reply.body.get("error") if isinstance(reply.body, dict) else None
    if isinstance(error, dict):
        infos = error.get("@Message.ExtendedInfo") or []
        messages = [
            str(i.get("Message")) for i in infos if isinstance(i, dict) and i.get("Message")
        ]
        message = "; ".join(messages) or str(error.get("message") or "")
        if message:
            text += f": {message}"
    return text


def _link(document: Any, *keys: str) -> str | None:
    node = document
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    if isinstance(node, dict):
        node = node.get("@odata.id")
    return node if isinstance(node, str) and node else None


def _members(collection: Any) -> list[str]:
    members = collection.get("Members") if isinstance(collection, dict) else None
    return [m for m in (_link(x) for x in members or []) if m]


def get(path: str, label: str) -> Request:
    return Request("GET", path, label=label)


def system() -> Generator[Request, Reply, tuple[str, dict[str, Any]]]:
    """The one ComputerSystem this BMC manages: (its path, its document)."""
    root = (yield get(SERVICE_ROOT, "read the service root")).body
    systems = _link(root, "Systems")
    if systems is None:
        raise HostError(Failure.NOT_SUPPORTED, "the service root links no Systems")
    members = _members((yield get(systems, "list systems")).body)
    if len(members) != 1:
        raise HostError(
            Failure.NOT_SUPPORTED,
            f"the BMC manages {len(members)} systems; kpc drives BMCs with exactly one",
        )
    reply = yield get(members[0], "read the system")
    if not isinstance(reply.body, dict):
        raise HostError(Failure.ERROR, "the system document is not a JSON object")
    document = dict(reply.body)
    if "ETag" in reply.headers:
        document["@kpc.etag"] = reply.headers["ETag"]
    return members[0], document


def _power_state(document: Mapping[str, Any]) -> str:
    state = document.get("PowerState")
    return str(state) if state else "Unknown"


def _is_on(document: Mapping[str, Any]) -> bool:
    return _power_state(document) in ("On", "PoweringOn")


def allowable_reset_types(
    path: str, document: Mapping[str, Any]
) -> Generator[Request, Reply, tuple[str, tuple[str, ...] | None]]:
    """(the Reset action's target, its allowed reset types or None when not stated)."""
    action = (document.get("Actions") or {}).get("#ComputerSystem.Reset")
    if not isinstance(action, dict) or not action.get("target"):
        raise HostError(Failure.NOT_SUPPORTED, "the system offers no Reset action")
    values = action.get("ResetType@Redfish.AllowableValues")
    if values is None and isinstance(action.get("@Redfish.ActionInfo"), str):
        info = (yield get(action["@Redfish.ActionInfo"], "read the Reset action's info")).body
        for parameter in (info or {}).get("Parameters") or []:
            if isinstance(parameter, dict) and parameter.get("Name") == "ResetType":
                values = parameter.get("AllowableValues")
    allowed = tuple(str(v) for v in values) if isinstance(values, list) else None
    return str(action["target"]), allowed


def choose_reset(wanted: tuple[str, ...], allowed: tuple[str, ...] | None, what: str) -> str:
    """The first of ``wanted`` the BMC allows (the first of all when it does not say)."""
    if allowed is None:
        return wanted[0]
    for value in wanted:
        if value in allowed:
            return value
    raise HostError(
        Failure.NOT_SUPPORTED,
        f"cannot {what}: the BMC offers ResetType {', '.join(allowed) or 'none'}, "
        f"none of {', '.join(wanted)}",
    )


def reset(target: str, reset_type: str, label: str, *, repeatable: bool) -> Request:
    return Request(
        "POST",
        target,
        {"ResetType": reset_type},
        label=f"{label} ({reset_type})",
        changes_state=True,
        repeatable=repeatable,
    )


_ON = ("On", "PushPowerButton")
_OFF = ("ForceOff", "GracefulShutdown", "PushPowerButton")
_RESTART = ("ForceRestart", "GracefulRestart", "PowerCycle")
_CYCLE = ("PowerCycle", "ForceRestart")

_TARGETS = {
    BootDevice.PXE: "Pxe",
    BootDevice.DISK: "Hdd",
    BootDevice.HTTP: "UefiHttp",
    BootDevice.CD: "Cd",
}
_MODES = {BootMode.UEFI: "UEFI", BootMode.LEGACY: "Legacy"}


def boot_override(
    path: str,
    document: Mapping[str, Any],
    device: BootDevice,
    *,
    persistent: bool,
    mode: BootMode | None,
) -> Request:
    """PATCH the system's Boot object (after checking the device is offered)."""
    found = document.get("Boot")
    boot: dict[str, Any] = found if isinstance(found, dict) else {}
    wanted = _TARGETS[device]
    offered = boot.get("BootSourceOverrideTarget@Redfish.AllowableValues")
    if isinstance(offered, list) and wanted not in offered:
        raise HostError(
            Failure.NOT_SUPPORTED,
            f"boot override {wanted} is not offered (offered: {', '.join(map(str, offered))})",
        )
    settings: dict[str, Any] = {
        "BootSourceOverrideTarget": wanted,
        "BootSourceOverrideEnabled": "Continuous" if persistent else "Once",
    }
    if mode is not None:
        modes = boot.get("BootSourceOverrideMode@Redfish.AllowableValues")
        if isinstance(modes, list) and _MODES[mode] not in modes:
            raise HostError(
                Failure.NOT_SUPPORTED,
                f"boot mode {_MODES[mode]} is not offered (offered: {', '.join(map(str, modes))})",
            )
        settings["BootSourceOverrideMode"] = _MODES[mode]
    etag = document.get("@kpc.etag")
    when = "every boot" if persistent else "next boot"
    return Request(
        "PATCH",
        path,
        {"Boot": settings},
        label=f"set boot override {wanted} ({when})",
        changes_state=True,
        repeatable=True,
        headers={"If-Match": str(etag)} if etag else {},
    )


# --- the jobs ------------------------------------------------------------------------------


def power_job(action: PowerAction) -> JobFactory:
    def job(target: Target) -> Job:
        path, document = yield from system()
        on = _is_on(document)
        if action is PowerAction.STATUS:
            return Done("on" if on else _power_state(document).lower())
        if action is PowerAction.ON and on:
            return Done("already on")
        if action is PowerAction.OFF and not on:
            return Done("already off")
        if action in (PowerAction.CYCLE, PowerAction.RESET) and not on:
            raise HostError(
                Failure.NOT_SUPPORTED,
                f"the machine is off: nothing to {action.value} (use 'kpc bmc power on')",
            )
        url, allowed = yield from allowable_reset_types(path, document)
        if action is PowerAction.ON:
            yield reset(url, choose_reset(_ON, allowed, "power on"), "power on", repeatable=True)
            return Done("powered on")
        if action is PowerAction.OFF:
            kind = choose_reset(_OFF, allowed, "power off")
            yield reset(url, kind, "power off", repeatable=True)
            return Done("powered off")
        if action is PowerAction.RESET:
            kind = choose_reset(_RESTART, allowed, "reset")
            yield reset(url, kind, "reset", repeatable=False)
            return Done("reset")
        try:
            kind = choose_reset(_CYCLE, allowed, "power-cycle")
        except HostError:
            off = choose_reset(_OFF[:1], allowed, "power-cycle")
            yield reset(url, off, "power off", repeatable=True)
            yield reset(url, choose_reset(_ON, allowed, "power on"), "power on", repeatable=True)
            return Done("power cycled (off, on)")
        yield reset(url, kind, "power cycle", repeatable=False)
        return Done("power cycled")

    return job


def bootdev_job(device: BootDevice, *, persistent: bool, mode: BootMode | None) -> JobFactory:
    def job(target: Target) -> Job:
        path, document = yield from system()
        yield boot_override(path, document, device, persistent=persistent, mode=mode)
        when = "every boot" if persistent else "next boot"
        return Done(f"boot device {device.value} ({when})")

    return job


def boot_and_reset(device: BootDevice, mode: BootMode | None) -> JobFactory:
    """One-time boot from ``device``, then reset (or power on a machine that is off)."""

    def job(target: Target) -> Job:
        path, document = yield from system()
        url, allowed = yield from allowable_reset_types(path, document)
        on = _is_on(document)
        kind = choose_reset(_RESTART, allowed, "reset") if on else choose_reset(_ON, allowed, "on")
        yield boot_override(path, document, device, persistent=False, mode=mode)
        name = _TARGETS[device].upper() if device is BootDevice.PXE else _TARGETS[device]
        if on:
            yield reset(url, kind, "reset", repeatable=False)
            return Done(f"{name} boot: reset")
        yield reset(url, kind, "power on", repeatable=True)
        return Done(f"{name} boot: powered on")

    return job


def _mac(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return normalize_mac(value)
    except ValueError:
        return None


def inventory_job(target: Target) -> Job:
    _path, document = yield from system()
    macs: list[str] = []
    interfaces = _link(document, "EthernetInterfaces")
    if interfaces is not None:
        for member in _members((yield get(interfaces, "list network interfaces")).body):
            nic = (yield get(member, "read a network interface")).body or {}
            mac = _mac(nic.get("MACAddress")) or _mac(nic.get("PermanentMACAddress"))
            if mac and mac not in macs:
                macs.append(mac)
    found = Inventory(
        manufacturer=_text(document.get("Manufacturer")),
        model=_text(document.get("Model")),
        serial=_text(document.get("SerialNumber")),
        uuid=_text(document.get("UUID")),
        macs=tuple(macs),
        power=_text(document.get("PowerState")),
    )
    summary = " ".join(x for x in (found.manufacturer, found.model) if x) or "system"
    return Done(f"{summary}, {len(macs)} MAC(s)", found)


def _text(value: Any) -> str | None:
    return str(value).strip() or None if isinstance(value, str | int) else None


def _virtual_media(
    system_path: str, document: Mapping[str, Any]
) -> Generator[Request, Reply, tuple[str, dict[str, Any]]]:
    """The first CD/DVD virtual media device: from the system, else from its manager."""
    collection = _link(document, "VirtualMedia")
    if collection is None:
        managers = (document.get("Links") or {}).get("ManagedBy") or []
        manager = _link(managers[0]) if managers else None
        if manager is not None:
            collection = _link((yield get(manager, "read the manager")).body, "VirtualMedia")
    if collection is None:
        raise HostError(Failure.NOT_SUPPORTED, "the BMC offers no virtual media")
    for member in _members((yield get(collection, "list virtual media")).body):
        device = (yield get(member, "read a virtual media device")).body or {}
        types = [str(t).upper() for t in device.get("MediaTypes") or []]
        if "CD" in types or "DVD" in types:
            return member, dict(device)
    raise HostError(Failure.NOT_SUPPORTED, "the BMC has no CD/DVD virtual media device")


def _media_action(path: str, device: Mapping[str, Any], name: str) -> str | None:
    action = (device.get("Actions") or {}).get(f"#VirtualMedia.{name}")
    return str(action["target"]) if isinstance(action, dict) and action.get("target") else None


def _eject(member: str, device: Mapping[str, Any]) -> Request:
    """The EjectMedia action, or a PATCH on BMCs that predate the actions."""
    eject = _media_action(member, device, "EjectMedia")
    if eject is None:
        body = {"Image": None, "Inserted": False}
        return Request("PATCH", member, body, label="eject media", changes_state=True)
    return Request("POST", eject, {}, label="eject media", changes_state=True)


def media_insert_job(image: str, *, boot: bool) -> JobFactory:
    def job(target: Target) -> Job:
        path, document = yield from system()
        member, device = yield from _virtual_media(path, document)
        if device.get("Inserted"):
            if device.get("Image") == image:
                done = "already inserted"
            else:
                yield _eject(member, device)
                done = ""
        else:
            done = ""
        if not done:
            insert = _media_action(member, device, "InsertMedia")
            body = {"Image": image, "Inserted": True, "WriteProtected": True}
            if insert is None:
                yield Request("PATCH", member, body, label="insert media", changes_state=True)
            else:
                yield Request("POST", insert, body, label="insert media", changes_state=True)
            done = "inserted"
        if not boot:
            return Done(f"media {done}")
        result = yield from boot_and_reset(BootDevice.CD, None)(target)
        return Done(f"media {done}; {result.result}")

    return job


def media_eject_job(target: Target) -> Job:
    path, document = yield from system()
    member, device = yield from _virtual_media(path, document)
    if not device.get("Inserted"):
        return Done("nothing inserted")
    yield _eject(member, device)
    return Done("ejected")


def job_for(action: Action) -> JobFactory:
    """The Redfish job of a protocol-neutral action."""
    if action.kind is Kind.POWER:
        return power_job(action.power or PowerAction.STATUS)
    if action.kind is Kind.PXE:
        return boot_and_reset(BootDevice.PXE, action.mode)
    if action.kind is Kind.BOOTDEV:
        assert action.device is not None
        return bootdev_job(action.device, persistent=action.persistent, mode=action.mode)
    if action.kind is Kind.INVENTORY:
        return inventory_job
    if action.kind is Kind.MEDIA_INSERT:
        assert action.image is not None
        return media_insert_job(action.image, boot=action.boot)
    return media_eject_job
