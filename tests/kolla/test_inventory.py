"""Role assignment, validation and the rendered inventory (pure)."""

from __future__ import annotations

import pytest

from appliance.errors import ConfigError
from appliance.kolla.inventory import (
    FLATCAR_PYTHON,
    assign_roles,
    host_groups,
    render_inventory,
    validate,
)
from appliance.state.model import MachineState
from tests.kolla.helpers import MULTINODE, machine, site

GROUPS = ["control", "network", "compute", "storage", "monitoring"]


def test_first_n_by_registration_order_rest_compute() -> None:
    machines = [machine(4), machine(2), machine(3), machine(1), machine(5)]
    result = assign_roles(machines, site())
    assert [(h.name, h.groups) for h in result.hosts] == [
        ("node1", ("control", "network", "monitoring")),
        ("node2", ("control", "network", "monitoring")),
        ("node3", ("control", "network", "monitoring")),
        ("node4", ("compute",)),
        ("node5", ("compute",)),
    ]
    assert result.hosts[0].address == "10.0.0.11"
    assert result.hosts[0].mac == "52:54:00:00:00:01"
    assert result.hosts[0].flatcar is True
    assert result.warnings == ()


def test_only_ready_machines_and_by_mac_overrides() -> None:
    config = site(kolla={"roles": {"first": 1, "by_mac": {"52-54-00-00-00-03": ["storage"]}}})
    machines = [
        machine(1, state=MachineState.INSTALLING),
        machine(2),
        machine(3),
        machine(4, os_name="Debian GNU/Linux"),
    ]
    result = assign_roles(machines, config)
    assert [(h.name, h.groups, h.flatcar) for h in result.hosts] == [
        ("node2", ("control", "network", "monitoring"), True),
        ("node3", ("storage",), True),
        ("node4", ("compute",), False),
    ]


def test_by_mac_for_an_unready_machine_warns() -> None:
    config = site(kolla={"roles": {"by_mac": {"52:54:00:00:00:09": ["compute"]}}})
    result = assign_roles([machine(1)], config)
    assert result.warnings == (
        "kolla.roles.by_mac lists 52:54:00:00:00:09, which is not a ready machine",
    )


def test_no_ready_machine_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no machine is ready"):
        assign_roles([machine(1, state=MachineState.DISCOVERED)], site())


def test_ready_machine_without_address_is_an_error() -> None:
    with pytest.raises(ConfigError, match="52:54:00:00:00:01 is ready but has no management"):
        assign_roles([machine(1, address=None)], site())


def test_bad_and_duplicate_hostnames_fall_back_to_the_mac() -> None:
    machines = [
        machine(1, hostname="Node_1!"),
        machine(2, hostname="same.example"),
        machine(3, hostname="same"),
    ]
    result = assign_roles(machines, site(kolla={"roles": {"first": 1}}))
    assert [h.name for h in result.hosts] == ["node-525400000001", "same", "node-525400000003"]
    assert "share the hostname 'same'" in result.warnings[0]


def test_localhost_is_no_hostname() -> None:
    # a node without a hostname of its own says "localhost": in an Ansible inventory that
    # name is the deploy host itself
    result = assign_roles([machine(1, hostname="localhost")], site(kolla={"roles": {"first": 1}}))
    assert [h.name for h in result.hosts] == ["node-525400000001"]


def test_validate_vip_rules() -> None:
    machines = [machine(n) for n in range(1, 5)]
    for vip, expected in [
        (
            "10.0.1.5",
            "kolla.internal_vip: 10.0.1.5 is not inside the management subnet 10.0.0.0/24",
        ),
        ("10.0.0.255", "kolla.internal_vip: 10.0.0.255 is the network or broadcast address"),
        (
            "10.0.0.12",
            "kolla.internal_vip: 10.0.0.12 is not free, it is the address of machine "
            "52:54:00:00:00:02",
        ),
        (
            "10.0.0.1",
            "kolla.internal_vip: 10.0.0.1 is not free, it is the address of the deploy host",
        ),
    ]:
        config = site(kolla={"internal_vip": vip})
        with pytest.raises(ConfigError) as caught:
            validate(assign_roles(machines, config), config, machines, GROUPS)
        assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_validate_vip_missing() -> None:
    config = site(kolla={"internal_vip": None})
    with pytest.raises(ConfigError) as caught:
        validate(assign_roles([machine(1), machine(2)], config), config, [machine(1)], GROUPS)
    assert caught.value.problems[0].startswith("kolla.internal_vip: not set")


def test_validate_empty_group_and_unknown_group() -> None:
    machines = [machine(1), machine(2)]
    config = site(kolla={"roles": {"rest_groups": ["compute", "computer"]}})
    with pytest.raises(ConfigError) as caught:
        validate(assign_roles(machines, config), config, machines, GROUPS)
    assert caught.value.problems == [
        "kolla.roles: unknown group 'computer' (kolla's host groups are control, network, "
        "compute, storage, monitoring)",
        "kolla.roles: group 'compute' has no machine (2 ready; the first 3 get control, "
        "network, monitoring)",
    ]


def test_validate_even_control_count_warns() -> None:
    machines = [machine(n) for n in range(1, 4)]
    config = site(kolla={"roles": {"first": 2}})
    warnings = validate(assign_roles(machines, config), config, machines, GROUPS)
    assert len(warnings) == 1
    assert warnings[0].startswith("2 control nodes: an even number cannot keep a majority")
    odd = site()
    machines = [machine(n) for n in range(1, 5)]
    assert validate(assign_roles(machines, odd), odd, machines, GROUPS) == []


def test_host_groups_are_the_children_of_baremetal() -> None:
    assert host_groups(MULTINODE) == GROUPS
    with pytest.raises(ConfigError, match=r"no \[baremetal:children\]"):
        host_groups("[control]\nnode1\n")


def test_render_inventory_exact() -> None:
    config = site(kolla={"roles": {"first": 1}})
    machines = [machine(1), machine(2, os_name="Debian GNU/Linux")]
    text = render_inventory(
        assign_roles(machines, config), MULTINODE, ssh_user="core", source="kpc.yaml"
    )
    assert (
        text
        == f"""\
# Generated by 'kpc kolla genconfig' from the machine registry and kpc.yaml.
# Do not edit: change kolla.roles in the site config and run genconfig again.

[control]
node1 ansible_host=10.0.0.11 ansible_user=core network_interface=eth0

[network]
node1 ansible_host=10.0.0.11 ansible_user=core network_interface=eth0

[compute]
node2 ansible_host=10.0.0.12 ansible_user=core network_interface=eth0

[storage]

[monitoring]
node1 ansible_host=10.0.0.11 ansible_user=core network_interface=eth0

# Flatcar hosts: kpc's preparation ('kpc kolla bootstrap') gives them {FLATCAR_PYTHON}
# with the Docker SDK and dbus-python; kolla's host OS check does not know Flatcar.
[flatcar]
node1

[flatcar:vars]
ansible_python_interpreter={FLATCAR_PYTHON}
virtualenv=/opt/kpc/python
prechecks_enable_host_os_checks=false

# ---- below: kolla-ansible's service groups, unchanged ----
[deployment]
localhost       ansible_connection=local

[baremetal:children]
control
network
compute
storage
monitoring

[common:children]
control
network
compute
storage
monitoring

[memcached:children]
control
"""
    )


def test_render_inventory_names_a_non_default_ssh_port() -> None:
    text = render_inventory(
        assign_roles([machine(1)], site()), MULTINODE, ssh_user="kolla", source="x", ssh_port=2222
    )
    line = "node1 ansible_host=10.0.0.11 ansible_user=kolla ansible_port=2222"
    assert line + " network_interface=eth0\n" in text


def test_each_host_gets_the_nic_that_carries_its_address() -> None:
    import dataclasses

    from appliance.kolla.inventory import interface_of

    node = machine(1)
    node = dataclasses.replace(
        node,
        facts={
            **node.facts,
            "interfaces": [
                {"name": "lo", "addresses": ["127.0.0.1/8"]},
                {"name": "enp1s0", "addresses": ["10.0.0.11/24", "fe80::1/64"]},
            ],
        },
    )
    assert interface_of(node, "10.0.0.11") == "enp1s0"
    assert interface_of(node, "10.0.0.99") is None
    hostile = dataclasses.replace(
        node, facts={"interfaces": [{"name": "eth0 x=1", "addresses": ["10.0.0.11"]}]}
    )
    assert interface_of(hostile, "10.0.0.11") is None  # never a second variable in the line
    assignment = assign_roles([node, machine(2)], site(kolla={"roles": {"first": 1}}))
    text = render_inventory(assignment, MULTINODE, ssh_user="core", source="t")
    assert "node1 ansible_host=10.0.0.11 ansible_user=core network_interface=enp1s0\n" in text
    # without facts naming it: the site's kolla.network_interface, on the host's line too
    # (globals.yml, passed as extra vars, would override a per-host value on every host)
    assert "node2 ansible_host=10.0.0.12 ansible_user=core network_interface=eth0\n" in text
