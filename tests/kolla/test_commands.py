"""The exact argv run inside the deployer for each step (pure)."""

from __future__ import annotations

import pytest

from appliance.kolla.commands import STEPS, genpwd_argv, kolla_argv

BASE = ["--configdir", "/etc/kolla", "--inventory", "/etc/kolla/inventory"]


@pytest.mark.parametrize(
    ("step", "sub"),
    [
        ("prechecks", "prechecks"),
        ("deploy", "deploy"),
        ("pull", "pull"),
        ("post-deploy", "post-deploy"),
        ("reconfigure", "reconfigure"),
        ("upgrade", "upgrade"),
    ],
)
def test_kolla_ansible_steps(step: str, sub: str) -> None:
    assert kolla_argv(step) == ["kolla-ansible", sub, *BASE]


def test_extra_arguments_come_last() -> None:
    assert kolla_argv("deploy", ["--tags", "keystone", "-v"]) == [
        "kolla-ansible",
        "deploy",
        *BASE,
        "--tags",
        "keystone",
        "-v",
    ]


def test_destroy_carries_kollas_own_confirmation_flag() -> None:
    assert kolla_argv("destroy", ["--include-images"]) == [
        "kolla-ansible",
        "destroy",
        *BASE,
        "--yes-i-really-really-mean-it",
        # the nodes only: the deployer container (the deployment group's localhost) has no
        # Docker, and kolla failed the whole destroy on it
        "--limit",
        "all:!localhost",
        "--include-images",
    ]
    assert STEPS["destroy"].destructive
    assert [s for s in STEPS.values() if s.destructive] == [STEPS["destroy"]]


def test_bootstrap_is_kpcs_playbook() -> None:
    argv = kolla_argv(
        "bootstrap", ["--limit", "node1"], sysext_url="http://10.0.0.1:8080/assets/flatcar"
    )
    assert argv == [
        "ansible-playbook",
        "--inventory",
        "/etc/kolla/inventory",
        "--extra-vars",
        "@/etc/kolla/globals.yml",
        "--extra-vars",
        "kpc_wheels=/opt/kpc/wheels",
        "--extra-vars",
        "kpc_sysext_base_url=http://10.0.0.1:8080/assets/flatcar",
        "/usr/share/kpc/kolla/flatcar-prepare.yml",
        "--limit",
        "node1",
    ]


def test_unknown_step() -> None:
    with pytest.raises(ValueError, match="unknown kolla step 'bootstrap-servers'"):
        kolla_argv("bootstrap-servers")


def test_genpwd_fills_a_private_copy_of_kollas_template() -> None:
    argv = genpwd_argv("/etc/kolla/.passwords.yml.new")
    assert argv[:2] == ["sh", "-ec"]
    assert argv[2].startswith(
        "umask 077; cp /opt/kolla/share/kolla-ansible/etc_examples/kolla/passwords.yml"
    )
    assert 'kolla-genpwd -p "$1"' in argv[2]
    assert argv[3:] == ["genpwd", "/etc/kolla/.passwords.yml.new"]
