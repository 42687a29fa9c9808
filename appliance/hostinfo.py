"""What ``kpc config init`` detects on this host: the provisioning network.

The server address of ``SSH_CONNECTION`` (the address the operator reached this
host on), else the default route's interface and its address. The environment is passed in;
``ip -j`` output is parsed by pure functions and fetched through drivers/process.py.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.drivers import process
from appliance.errors import KpcError


@dataclass(frozen=True)
class HostNetwork:
    """An interface with an IPv4 address, and how kpc found it."""

    interface: str
    address: ipaddress.IPv4Address
    subnet: ipaddress.IPv4Network
    reason: str


@dataclass(frozen=True)
class LinkAddress:
    """One IPv4 address of a link, as ``ip -j addr`` shows it."""

    link: str
    interface: ipaddress.IPv4Interface
    scope: str  # global, link, host
    up: bool  # the link is administratively and operationally up


def parse_ipv4_addresses(ip_addr_json: str) -> list[LinkAddress]:
    """Every IPv4 address in ``ip -j addr`` output (the one parser of it in kpc)."""
    found: list[LinkAddress] = []
    for link in _json_list(ip_addr_json, "ip -j addr"):
        name = str(link.get("ifname", ""))
        up = link.get("operstate") in {"UP", "UNKNOWN"} and "UP" in (link.get("flags") or [])
        for info in link.get("addr_info", []) or []:
            if not isinstance(info, dict) or info.get("family") != "inet" or "local" not in info:
                continue
            try:
                iface = ipaddress.IPv4Interface(f"{info['local']}/{info.get('prefixlen', 32)}")
            except ValueError:
                continue
            found.append(LinkAddress(name, iface, str(info.get("scope", "")), up))
    return found


def parse_addresses(ip_addr_json: str) -> list[tuple[str, ipaddress.IPv4Interface]]:
    """(interface, address/prefix) for every IPv4 address in ``ip -j addr`` output."""
    return [(a.link, a.interface) for a in parse_ipv4_addresses(ip_addr_json)]


def default_route_interface(ip_route_json: str) -> str | None:
    """The interface of the first IPv4 default route in ``ip -j route`` output."""
    for route in _json_list(ip_route_json, "ip -j route"):
        if route.get("dst") == "default" and route.get("dev"):
            return str(route["dev"])
    return None


def ssh_server_address(ssh_connection: str | None) -> ipaddress.IPv4Address | None:
    """The local address of the operator's SSH session: the third field of SSH_CONNECTION
    if it is IPv4 (or IPv4-mapped IPv6; an IPv6 zone such as ``%eth0`` is dropped)."""
    fields = (ssh_connection or "").split()
    if len(fields) != 4:
        return None
    try:
        address = ipaddress.ip_address(fields[2].split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        return address.ipv4_mapped
    return address


def choose_network(
    environ: Mapping[str, str], ip_route_json: str, ip_addr_json: str
) -> HostNetwork | None:
    """SSH_CONNECTION's server address if it is on an interface here, else the default route's."""
    addresses = parse_addresses(ip_addr_json)
    wanted = ssh_server_address(environ.get("SSH_CONNECTION"))
    if wanted is not None and not wanted.is_loopback:
        for name, iface in addresses:
            if iface.ip == wanted:
                return HostNetwork(
                    name,
                    iface.ip,
                    iface.network,
                    f"the address you reached this host on ({wanted}, SSH_CONNECTION)",
                )
    dev = default_route_interface(ip_route_json)
    if dev is not None:
        for name, iface in addresses:
            if name == dev and not iface.ip.is_link_local:
                return HostNetwork(
                    name, iface.ip, iface.network, f"the default route's interface {dev}"
                )
    return None


def detect_network(environ: Mapping[str, str]) -> HostNetwork | None:
    """Ask ``ip`` and choose (None when this host has no usable IPv4 address)."""
    try:
        routes = process.run(["ip", "-j", "-4", "route", "show", "default"]).stdout
        addrs = process.run(["ip", "-j", "-4", "addr", "show"]).stdout
    except KpcError:
        return None
    return choose_network(environ, routes, addrs)


def _json_list(text: str, what: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text or "[]")
    except json.JSONDecodeError:
        raise KpcError(f"cannot read the output of {what} (not JSON)") from None
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
