"""Host key trust on first use, kept in the machine registry.

A node's key is recorded the first time kpc logs in to it. From then on a different key
is a loud failure until an operator runs ``kpc nodes forget-hostkey MAC`` (a reinstall
through kpc's install-complete clears it too). kpc also writes an OpenSSH known_hosts file
from the recorded keys, so ``ssh`` and Ansible check the same keys strictly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from appliance.drivers.ssh import SSH_PORT, HostKey
from appliance.errors import StateError, UsageError
from appliance.mac import normalize_mac
from appliance.nodes.report import HostKeyStatus
from appliance.nodes.targets import Target
from appliance.outputfile import write_atomic
from appliance.state.model import Machine
from appliance.state.store import MachineStore


def record_first_use(
    store: MachineStore, seen: Iterable[tuple[Target, str | None, HostKeyStatus]]
) -> list[str]:
    """Record every key met for the first time (after a successful login). Returns the
    MACs recorded. A key recorded meanwhile by someone else is left alone."""
    recorded: list[str] = []
    for target, key, status in seen:
        if status is not HostKeyStatus.RECORDED or not key:
            continue
        current = store.get(target.mac)
        if current is None or current.ssh_host_key:
            continue
        store.set_host_key(target.mac, key)
        recorded.append(target.mac)
    return recorded


def forget_host_key(store: MachineStore, mac: str) -> Machine:
    """Clear the recorded key of one machine: the next login trusts whatever it presents."""
    try:
        normal = normalize_mac(mac)
    except ValueError:
        raise UsageError(f"not a MAC address: {mac!r}") from None
    if store.get(normal) is None:
        raise StateError(
            f"no machine with MAC {normal} in the registry",
            hint="'kpc nodes list' shows the machines kpc knows",
        )
    return store.set_host_key(normal, None)


def host_pattern(address: str, port: int) -> str:
    """How known_hosts names a host: ``addr``, or ``[addr]:port`` off port 22."""
    return address if port == SSH_PORT else f"[{address}]:{port}"


def known_hosts_text(machines: Iterable[Machine], port: int) -> str:
    """known_hosts lines for every machine with an address and a recorded key."""
    lines: list[str] = []
    for machine in sorted(machines, key=lambda m: m.mac):
        address = machine.management_address
        if not address or not machine.ssh_host_key:
            continue
        try:
            key = HostKey.parse(machine.ssh_host_key)
        except ValueError:
            continue
        lines.append(f"{host_pattern(address, port)} {key.line} kpc:{machine.mac}")
    return "".join(line + "\n" for line in lines)


def write_known_hosts(path: Path, machines: Iterable[Machine], port: int) -> Path:
    """Write (atomically, mode 0644) the known_hosts file for the recorded keys."""
    write_atomic(path, known_hosts_text(machines, port))
    return path
