"""Check-in facts: the JSON a booted node posts to ``/checkin``. Pure validation.

Known keys are checked for type and shape (the ones the registry, Ansible inventory and
SSH use); other keys are kept as sent. The body's size is bounded by the HTTP layer.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from appliance.bootcfg.labels import LabelError, validate_label
from appliance.mac import normalize_mac

MAX_ITEMS = 256
MAX_TEXT = 256
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


class FactsError(ValueError):
    """The facts were refused; the message says which field and why."""


def _text(value: Any, where: str, *, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise FactsError(f"{where}: expected a string of at most {limit} characters")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise FactsError(f"{where}: expected a list of at most {MAX_ITEMS} items")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FactsError(f"{where}: expected an object")
    return value


def _ipv4(value: Any, where: str) -> str:
    try:
        return str(ipaddress.IPv4Address(_text(value, where, limit=15)))
    except ValueError:
        raise FactsError(f"{where}: not an IPv4 address: {str(value)[:40]!r}") from None


def validate_facts(data: Any) -> dict[str, Any]:
    """The facts to store (MACs normalised), or FactsError."""
    facts = dict(_object(data, "facts"))
    if "hostname" in facts:
        try:
            facts["hostname"] = validate_label("hostname", _text(facts["hostname"], "hostname"))
        except LabelError as exc:
            raise FactsError(str(exc)) from None
    if "os" in facts:
        os_info = _object(facts["os"], "os")
        for key in ("name", "version"):
            if key in os_info:
                _text(os_info[key], f"os.{key}", limit=64)
    if "interfaces" in facts:
        interfaces = []
        for i, item in enumerate(_list(facts["interfaces"], "interfaces")):
            where = f"interfaces[{i}]"
            iface = dict(_object(item, where))
            name = _text(iface.get("name"), f"{where}.name", limit=15)
            if not _IFNAME_RE.fullmatch(name):
                raise FactsError(f"{where}.name: not an interface name: {name!r}")
            if iface.get("mac") in ("", None):
                iface["mac"] = None  # tunnels and the like have no MAC
            else:
                try:
                    iface["mac"] = normalize_mac(_text(iface["mac"], f"{where}.mac", limit=17))
                except ValueError:
                    raise FactsError(f"{where}.mac: not a MAC address") from None
            addresses = _list(iface.get("addresses", []), f"{where}.addresses")
            for j, address in enumerate(addresses):
                try:
                    ipaddress.ip_interface(_text(address, f"{where}.addresses[{j}]", limit=64))
                except ValueError:
                    raise FactsError(f"{where}.addresses[{j}]: not an IP address") from None
            interfaces.append(iface)
        facts["interfaces"] = interfaces
    if "disks" in facts:
        for i, item in enumerate(_list(facts["disks"], "disks")):
            disk = _object(item, f"disks[{i}]")
            _text(disk.get("name"), f"disks[{i}].name", limit=64)
            size = disk.get("size")
            if size is not None and (
                not isinstance(size, int) or isinstance(size, bool) or size < 0
            ):
                raise FactsError(f"disks[{i}].size: expected a number of bytes")
    if facts.get("address") is not None:
        facts["address"] = _ipv4(facts["address"], "address")
    if facts.get("bmc_address") is not None:
        facts["bmc_address"] = _ipv4(facts["bmc_address"], "bmc_address")
    return facts
