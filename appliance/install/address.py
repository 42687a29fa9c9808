"""The deploy host's management address: where the operator reached it, or a choice.

``SSH_CONNECTION`` ("client port server port") names the address the operator's SSH session
came in on; that is the address the nodes will reach too. Without it (plain ``sudo`` drops
it), the operator picks one of the host's global IPv4 addresses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from appliance.drivers import process
from appliance.hostinfo import parse_ipv4_addresses, ssh_server_address


@dataclass(frozen=True)
class HostAddress:
    interface: str
    address: ipaddress.IPv4Address
    network: ipaddress.IPv4Network
    up: bool = True

    def describe(self) -> str:
        state = "" if self.up else " (link down)"
        return f"{self.address}/{self.network.prefixlen} on {self.interface}{state}"


@dataclass(frozen=True)
class AddressChoice:
    """Either the chosen address, or the candidates to ask about and why no choice was made."""

    chosen: HostAddress | None
    candidates: tuple[HostAddress, ...]
    note: str


def parse_ip_addresses(text: str) -> list[HostAddress]:
    """Global IPv4 addresses from ``ip -j address show`` output."""
    return [
        HostAddress(a.link, a.interface.ip, a.interface.network, a.up)
        for a in parse_ipv4_addresses(text)
        if a.scope == "global"
    ]


def choose_address(addresses: list[HostAddress], ssh_connection: str | None) -> AddressChoice:
    """Pick the address the operator's SSH session arrived on, else offer the candidates."""
    candidates = tuple(addresses)
    server = ssh_server_address(ssh_connection)
    if server is not None:
        for candidate in candidates:
            if candidate.address == server:
                return AddressChoice(
                    candidate, candidates, f"the address your SSH session reached ({server})"
                )
        note = f"your SSH session reached {server}, which is not on any local interface"
    elif ssh_connection:
        note = f"SSH_CONNECTION ({ssh_connection!r}) names no IPv4 server address"
    else:
        note = "SSH_CONNECTION is not set (plain sudo drops it; 'sudo -E' keeps it)"
    return AddressChoice(None, candidates, note)


def host_addresses() -> list[HostAddress]:
    """This host's global IPv4 addresses (runs ``ip -j -4 address show scope global``)."""
    ip = process.which("ip", "iproute2")
    result = process.run([ip, "-j", "-4", "address", "show", "scope", "global"])
    return parse_ip_addresses(result.stdout)
