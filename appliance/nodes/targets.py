"""Which nodes a command talks to: from the machine registry, by MAC or by pattern."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from appliance.errors import KpcError, UsageError
from appliance.mac import normalize_mac
from appliance.naming import hostname_of
from appliance.state.model import Machine, MachineState
from appliance.state.store import MachineStore


@dataclass(frozen=True)
class Target:
    """A node as the SSH commands see it."""

    mac: str
    address: str | None
    hostname: str | None = None
    host_key: str | None = None  # "type base64" recorded on first use

    @property
    def name(self) -> str:
        """How output names the node: its hostname, else its MAC."""
        return self.hostname or self.mac

    @classmethod
    def from_machine(cls, machine: Machine) -> Target:
        hostname = hostname_of(machine)
        return cls(machine.mac, machine.management_address, hostname, machine.ssh_host_key)


def parse_macs(values: Sequence[str]) -> list[str]:
    """Normalise MACs given on the command line; UsageError naming every bad one."""
    macs: list[str] = []
    bad: list[str] = []
    for value in values:
        try:
            mac = normalize_mac(value)
        except ValueError:
            bad.append(value)
            continue
        if mac not in macs:
            macs.append(mac)
    if bad:
        raise UsageError(
            f"not a MAC address: {', '.join(bad)}",
            hint="write MACs as aa:bb:cc:dd:ee:ff (or aa-bb-.., aabbcc..); "
            "'kpc nodes list' shows them",
        )
    return macs


def matches(target: Target, pattern: str) -> bool:
    """A shell-style pattern against the MAC, hostname or address (case-insensitive)."""
    wanted = pattern.lower()
    fields = (target.mac, target.hostname or "", target.address or "")
    return any(f and fnmatchcase(f.lower(), wanted) for f in fields)


def select_targets(
    store: MachineStore, macs: Sequence[str] = (), only: str | None = None
) -> list[Target]:
    """The named machines (any state), else every ``ready`` one; then filtered by ``only``.

    Unknown MACs are an error listing them; an empty selection is an error too, so a
    check never "passes" on zero nodes.
    """
    if macs:
        wanted = parse_macs(macs)
        found = {mac: store.get(mac) for mac in wanted}
        unknown = [mac for mac, machine in found.items() if machine is None]
        if unknown:
            raise UsageError(
                f"no machine with MAC {', '.join(unknown)} in the registry",
                hint="'kpc nodes list' shows the machines kpc knows",
            )
        targets = [Target.from_machine(m) for m in found.values() if m is not None]
    else:
        targets = [Target.from_machine(m) for m in store.machines(MachineState.READY)]
        if not targets:
            raise KpcError(
                "no machine is ready: there is nothing to reach over SSH",
                hint="nodes become ready when they check in after installing; "
                "'kpc nodes list' shows every machine and its state",
            )
    if only is not None:
        selected = [t for t in targets if matches(t, only)]
        if not selected:
            raise UsageError(
                f"--only {only!r} matches none of the {len(targets)} selected machines",
                hint="the pattern (shell wildcards) is matched against MAC, hostname and address",
            )
        targets = selected
    return targets
