"""The machine registry as an Ansible dynamic inventory (what ``--list`` / ``--host`` print).

Pure: machines in, plain data out. Hosts are named by their checked-in hostname (or
``node-<mac digits>`` when there is none or it is taken); groups are the machine states.
Machines with no known address are left out: Ansible could not reach them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from appliance.naming import fallback_name, inventory_name
from appliance.state.model import Machine


def host_names(machines: Sequence[Machine]) -> dict[str, Machine]:
    names: dict[str, Machine] = {}
    for machine in sorted(machines, key=lambda m: m.mac):
        name = inventory_name(machine)
        if name in names:  # two machines with one hostname: the second by its MAC
            name = fallback_name(machine.mac)
        names[name] = machine
    return names


def hostvars(machine: Machine, ssh_user: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "ansible_host": machine.management_address,
        "ansible_user": ssh_user,
        "kpc_mac": machine.mac,
        "kpc_state": machine.state.value,
        "kpc_boot": machine.boot.value,
    }
    if machine.bmc_address:
        data["kpc_bmc_address"] = machine.bmc_address
    if machine.facts:
        data["kpc_facts"] = machine.facts
    return data


def ansible_list(machines: Sequence[Machine], ssh_user: str) -> dict[str, Any]:
    reachable = [m for m in machines if m.management_address]
    names = host_names(reachable)
    groups: dict[str, list[str]] = {}
    for name, machine in names.items():
        groups.setdefault(machine.state.value, []).append(name)
    result: dict[str, Any] = {
        "_meta": {"hostvars": {n: hostvars(m, ssh_user) for n, m in names.items()}},
        "all": {"hosts": sorted(names), "children": sorted(groups)},
    }
    for state, hosts in sorted(groups.items()):
        result[state] = {"hosts": sorted(hosts)}
    return result


def ansible_host(machines: Sequence[Machine], name: str, ssh_user: str) -> dict[str, Any]:
    machine = host_names([m for m in machines if m.management_address]).get(name)
    return hostvars(machine, ssh_user) if machine is not None else {}
