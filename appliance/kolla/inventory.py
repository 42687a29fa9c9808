"""The Kolla inventory from the machine registry. Pure: no I/O.

Roles follow ``kolla.roles`` in the site config: machines named in ``by_mac`` get exactly
the groups listed there; the other ``ready`` machines, oldest registration first, are dealt
out so the first ``first`` of them get ``first_groups`` and the rest ``rest_groups``. Sorting
by first registration keeps the control plane where it is when a machine is added.

The inventory file is kolla-ansible's own ``multinode`` example with its host groups
(the children of ``[baremetal:children]``: control, network, compute, ...) replaced by ours,
so the service groups always match the installed kolla-ansible release.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from appliance.config import SiteConfig
from appliance.errors import ConfigError
from appliance.naming import fallback_name, inventory_name
from appliance.state.model import Machine, MachineState

# Where kpc's Flatcar preparation puts a Python with the Docker SDK and dbus-python.
FLATCAR_VENV = "/opt/kpc/python"
FLATCAR_PYTHON = f"{FLATCAR_VENV}/bin/python3"
FLATCAR_GROUP = "flatcar"
SECTION_RE = re.compile(r"^\s*\[([^\]]+)\]\s*$")
BAREMETAL_CHILDREN = "baremetal:children"


@dataclass(frozen=True)
class Host:
    """One machine as kolla-ansible sees it."""

    name: str
    mac: str
    address: str
    groups: tuple[str, ...]
    flatcar: bool
    interface: str | None = None  # the NIC that carries ``address`` (facts, else the site's)


def interface_of(machine: Machine, address: str) -> str | None:
    """The checked-in interface holding ``address`` (kolla's per-host network_interface)."""
    interfaces = machine.facts.get("interfaces")
    if not isinstance(interfaces, list):
        return None
    for item in interfaces:
        if not isinstance(item, dict):
            continue
        held = [str(a).split("/")[0] for a in item.get("addresses") or []]
        name = item.get("name")
        if address in held and isinstance(name, str) and re.fullmatch(r"[\w.:-]{1,15}", name):
            return name
    return None


@dataclass(frozen=True)
class Assignment:
    hosts: tuple[Host, ...]
    warnings: tuple[str, ...]

    def members(self, group: str) -> list[Host]:
        return [h for h in self.hosts if group in h.groups]


def is_flatcar(machine: Machine) -> bool:
    """Whether the machine checked in from Flatcar (facts ``os.name``/``os.id``)."""
    os_facts = machine.facts.get("os")
    if not isinstance(os_facts, dict):
        return False
    text = " ".join(str(os_facts.get(k, "")) for k in ("id", "name")).lower()
    return "flatcar" in text


def _order(machine: Machine) -> tuple[float, str]:
    return (machine.first_seen if machine.first_seen is not None else math.inf, machine.mac)


def assign_roles(machines: Iterable[Machine], config: SiteConfig) -> Assignment:
    """Deal the ``ready`` machines into Kolla groups by the site's role rules."""
    roles = config.kolla.roles
    ready = sorted((m for m in machines if m.state is MachineState.READY), key=_order)
    if not ready:
        raise ConfigError(
            "no machine is ready for Kolla (the registry has none in state 'ready')",
            hint="provision the servers first; 'kpc nodes list' shows each machine's state",
        )
    warnings: list[str] = []
    ready_macs = {m.mac for m in ready}
    for mac in roles.by_mac:
        if mac not in ready_macs:
            warnings.append(f"kolla.roles.by_mac lists {mac}, which is not a ready machine")
    hosts: list[Host] = []
    used: dict[str, str] = {}
    dealt = 0
    for machine in ready:
        address = machine.management_address
        if not address:
            raise ConfigError(
                f"machine {machine.mac} is ready but has no management address",
                hint="it has not checked in with its facts; check its boot log, then "
                "re-run its check-in (or 'kpc nodes' to inspect it)",
            )
        if machine.mac in roles.by_mac:
            groups = tuple(roles.by_mac[machine.mac])
        else:
            groups = tuple(roles.first_groups if dealt < roles.first else roles.rest_groups)
            dealt += 1
        if not groups:
            warnings.append(f"machine {machine.mac} gets no Kolla group and is left out")
            continue
        name = inventory_name(machine)
        if name in used:
            fallback = fallback_name(machine.mac)
            warnings.append(
                f"machines {used[name]} and {machine.mac} share the hostname {name!r}; "
                f"{machine.mac} is called {fallback!r} in the inventory"
            )
            name = fallback
        used[name] = machine.mac
        hosts.append(
            Host(
                name,
                machine.mac,
                address,
                groups,
                is_flatcar(machine),
                # per host: globals.yml (extra vars, above every inventory var) has none
                interface_of(machine, address) or config.kolla.network_interface,
            )
        )
    return Assignment(tuple(hosts), tuple(warnings))


def role_groups(config: SiteConfig) -> list[str]:
    """Every group the role rules name, in first-mention order."""
    roles = config.kolla.roles
    named = [*roles.first_groups, *roles.rest_groups]
    for groups in roles.by_mac.values():
        named.extend(groups)
    return list(dict.fromkeys(named))


def validate(
    assignment: Assignment,
    config: SiteConfig,
    machines: Sequence[Machine],
    host_groups: Sequence[str],
) -> list[str]:
    """Check the plan; raise ConfigError listing every problem, return the warnings."""
    problems: list[str] = []
    warnings = list(assignment.warnings)
    subnet = config.provisioning.subnet

    vip = config.kolla.internal_vip
    if vip is None:
        problems.append(
            "kolla.internal_vip: not set (pick a free address in the management subnet)"
        )
    else:
        if vip not in subnet:
            problems.append(
                f"kolla.internal_vip: {vip} is not inside the management subnet {subnet}"
            )
        elif vip in (subnet.network_address, subnet.broadcast_address):
            problems.append(
                f"kolla.internal_vip: {vip} is the network or broadcast address of {subnet}"
            )
        taken = {
            str(config.provisioning.address): "the deploy host (provisioning.address)",
            str(config.registry_address): "the deploy host's registry",
        }
        for machine in machines:
            for addr in (machine.management_address, machine.last_address):
                if addr:
                    taken.setdefault(addr, f"machine {machine.mac}")
        if str(vip) in taken:
            problems.append(
                f"kolla.internal_vip: {vip} is not free, it is the address of {taken[str(vip)]}"
            )

    known = set(host_groups)
    for group in role_groups(config):
        if group not in known:
            problems.append(
                f"kolla.roles: unknown group {group!r} (kolla's host groups are "
                f"{', '.join(host_groups)})"
            )
    for group in dict.fromkeys(["control", *role_groups(config)]):
        if group in known and not assignment.members(group):
            problems.append(
                f"kolla.roles: group {group!r} has no machine ({len(assignment.hosts)} ready; "
                f"the first {config.kolla.roles.first} get "
                f"{', '.join(config.kolla.roles.first_groups) or 'nothing'})"
            )
    control = len(assignment.members("control"))
    if control and control % 2 == 0:
        warnings.append(
            f"{control} control nodes: an even number cannot keep a majority (quorum) when "
            "half of them fail; use an odd number"
        )
    if problems:
        raise ConfigError(
            f"the Kolla inventory cannot be built ({len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''})",
            hint="fix the kolla section of the site config, then run 'kpc kolla genconfig' again",
            problems=problems,
        )
    return warnings


# --- rendering ------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    header: str | None  # None for the text before the first section
    lines: tuple[str, ...]


def parse_sections(text: str) -> list[Section]:
    sections: list[Section] = []
    header: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        match = SECTION_RE.match(line)
        if match:
            sections.append(Section(header, tuple(lines)))
            header, lines = match.group(1).strip(), []
        else:
            lines.append(line)
    sections.append(Section(header, tuple(lines)))
    return sections


def _entries(lines: Iterable[str]) -> list[str]:
    return [
        line.split()[0]
        for line in lines
        if line.strip() and not line.lstrip().startswith(("#", ";"))
    ]


def host_groups(kolla_inventory: str) -> list[str]:
    """The groups that hold hosts in kolla's multinode inventory (children of baremetal)."""
    for section in parse_sections(kolla_inventory):
        if section.header == BAREMETAL_CHILDREN:
            return _entries(section.lines)
    raise ConfigError(
        "kolla-ansible's multinode inventory has no [baremetal:children] section",
        hint="the deployer image's kolla-ansible is not one kpc knows; rebuild it "
        "('kpc images build kolla_deployer')",
    )


def _host_line(host: Host, ssh_user: str, ssh_port: int) -> str:
    line = f"{host.name} ansible_host={host.address} ansible_user={ssh_user}"
    if ssh_port != 22:
        line += f" ansible_port={ssh_port}"
    if host.interface:  # NIC names differ between machines; kolla takes the host's own
        line += f" network_interface={host.interface}"
    return line


def render_inventory(
    assignment: Assignment,
    kolla_inventory: str,
    *,
    ssh_user: str,
    source: str,
    ssh_port: int = 22,
) -> str:
    """kolla's multinode inventory with its host groups filled from ``assignment``."""
    groups = host_groups(kolla_inventory)
    out = [
        f"# Generated by 'kpc kolla genconfig' from the machine registry and {source}.",
        "# Do not edit: change kolla.roles in the site config and run genconfig again.",
        "",
    ]
    for group in groups:
        out.append(f"[{group}]")
        out.extend(_host_line(h, ssh_user, ssh_port) for h in assignment.members(group))
        out.append("")
    flatcar = [h for h in assignment.hosts if h.flatcar]
    out.append(
        f"# Flatcar hosts: kpc's preparation ('kpc kolla bootstrap') gives them {FLATCAR_PYTHON}"
    )
    out.append(
        "# with the Docker SDK and dbus-python; kolla's host OS check does not know Flatcar."
    )
    out.append(f"[{FLATCAR_GROUP}]")
    out.extend(h.name for h in flatcar)
    out.append("")
    out.append(f"[{FLATCAR_GROUP}:vars]")
    out.append(f"ansible_python_interpreter={FLATCAR_PYTHON}")
    # kolla's playbook group_vars/baremetal set ansible_python_interpreter again, over the
    # inventory's group vars, from 'virtualenv' (else the gathered python): kolla's own hook
    out.append(f"virtualenv={FLATCAR_VENV}")
    out.append("prechecks_enable_host_os_checks=false")
    out.append("")
    out.append("# ---- below: kolla-ansible's service groups, unchanged ----")
    for section in parse_sections(kolla_inventory):
        if section.header is None or section.header in groups:
            continue
        out.append(f"[{section.header}]")
        out.extend(section.lines)
    return "\n".join(out).rstrip("\n") + "\n"
