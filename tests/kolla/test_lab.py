"""kpc drives the real kolla-ansible 23.0.0 (the kolla_deployer image) against lab nodes.

The nodes checked in through bootcfg's real /checkin endpoint; kolla-ansible's own
prechecks run against them over SSH. The tests run in file order and share the lab.
"""

from __future__ import annotations

import re
import socket
import stat
from pathlib import Path

import pytest
import yaml

from tests.conftest import wait_for
from tests.kolla.conftest import VIP, KollaLab, LocalRegistry, docker, kpc, make_registry

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def kolla_dir(lab: KollaLab) -> Path:
    return Path(lab.data["kolla"]["config_dir"])


def test_genconfig_writes_globals_inventory_and_passwords(kolla_lab: KollaLab) -> None:
    result = kpc(kolla_lab.config, "kolla", "genconfig")
    assert result.exit_code == 0, result.output
    assert re.search(r"kpch-node1\s+100\.77\.231\.11\s+\S+\s+control, network,", result.stdout)
    assert "passwords.yml: generated" in result.stdout

    config_dir = kolla_dir(kolla_lab)
    globals_yml = yaml.safe_load((config_dir / "globals.yml").read_text(encoding="utf-8"))
    assert globals_yml["kolla_internal_vip_address"] == VIP
    assert globals_yml["docker_registry"] == f"127.0.0.1:{kolla_lab.data['registry']['port']}"
    assert globals_yml["enable_memcached"] is True

    inventory = (config_dir / "inventory").read_text(encoding="utf-8")
    line = "kpch-node{} ansible_host=100.77.231.1{} ansible_user=core network_interface=eth0\n"
    assert "[control]\n" + line.format(1, 1) in inventory
    assert "[compute]\n" + line.format(2, 2) in inventory
    assert "[flatcar]\nkpch-node1\n" in inventory
    # kolla-ansible's own service groups, read from the deployer image
    assert "[memcached:children]\ncontrol\n" in inventory
    assert "[mariadb:children]\ncontrol\n" in inventory

    passwords = config_dir / "passwords.yml"
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    secrets = yaml.safe_load(passwords.read_text(encoding="utf-8"))
    assert len(secrets["keystone_admin_password"]) >= 20
    # kolla's "empty passwords" precheck: a key with nothing after it (ssh keys are maps)
    text = passwords.read_text(encoding="utf-8")
    empty = re.findall(r"(?m)^[^#\s][^:]*:\s*$", text)
    assert [key for key in empty if "ssh_key" not in key] == []

    again = kpc(kolla_lab.config, "kolla", "genconfig")
    assert again.exit_code == 0, again.output
    assert "passwords.yml: kept" in again.stdout
    assert yaml.safe_load(passwords.read_text(encoding="utf-8")) == secrets

    forced = kpc(kolla_lab.config, "kolla", "genconfig", "--force")
    assert forced.exit_code == 0, forced.output
    assert "passwords.yml: regenerated" in forced.stdout
    renewed = yaml.safe_load(passwords.read_text(encoding="utf-8"))
    assert renewed["keystone_admin_password"] != secrets["keystone_admin_password"]
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600


def test_bootstrap_then_kollas_prechecks_pass(kolla_lab: KollaLab) -> None:
    boot = kpc(kolla_lab.config, "kolla", "bootstrap")
    assert boot.exit_code == 0, boot.output
    # kpc's Python for the "Flatcar" node: the Docker SDK and dbus-python from the wheels
    probe = docker(
        "exec", "kpch-node1", "/opt/kpc/python/bin/python3", "-c",
        "import docker, dbus, sys; print(docker.__version__, sys.prefix)",
    )  # fmt: skip
    assert probe.stdout.split() == ["7.1.0", "/opt/kpc/python"]
    # kolla's services name their peers by inventory name (HAProxy's MariaDB members)
    hosts = docker("exec", "kpch-node1", "getent", "hosts", "kpch-node2").stdout.split()
    assert hosts[1:] == ["kpch-node2"] and hosts[0] == kolla_lab.node("kpch-node2").address
    assert docker("exec", "kpch-node2", "test", "-e", "/opt/kpc", check=False).returncode == 1
    again = kpc(kolla_lab.config, "kolla", "bootstrap", "--skip-checks")
    assert again.exit_code == 0, again.output
    assert re.search(r"kpch-node1\s+: ok=\d+\s+changed=0 ", again.stdout), again.stdout

    result = kpc(kolla_lab.config, "kolla", "prechecks")  # with kpc's node fitness gate
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"kpch-node1\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0 ", out)
    assert re.search(r"kpch-node2\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0 ", out)
    assert "TASK [memcached : Checking free port for Memcached]" in out
    assert "TASK [prechecks : Checking docker SDK version]" in out
    # kolla's host OS check ran for the Debian node only
    os_check = out.split("TASK [prechecks : Checking host OS distribution]")[1].split("TASK")[0]
    assert "ok: [kpch-node2]" in os_check and "kpch-node1" not in os_check
    assert "kolla prechecks: done" in out

    logs = sorted((Path(kolla_lab.data["paths"]["log_dir"]) / "kolla").glob("*-prechecks.log"))
    assert len(logs) == 1
    # kolla's output can carry secrets: the logs are the operator's alone
    assert stat.S_IMODE(logs[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(logs[0].parent.stat().st_mode) == 0o700
    text = logs[0].read_text(encoding="utf-8")
    assert text.startswith("# kpc kolla prechecks, ")
    assert "kolla-ansible prechecks --configdir /etc/kolla --inventory /etc/kolla/inventory" in text
    assert "PLAY RECAP" in text


def test_prechecks_fail_with_kollas_message_when_a_port_is_taken(kolla_lab: KollaLab) -> None:
    node = kolla_lab.node("kpch-node1")
    docker(
        "exec", "-d", node.name, "python3", "-m", "http.server", "11211", "--bind", node.address
    )  # fmt: skip

    def listening() -> bool:
        with socket.create_connection((node.address, 11211), timeout=1):
            return True

    try:
        wait_for(listening, 20, "a squatter on port 11211 of kpch-node1")
        result = kpc(
            kolla_lab.config, "kolla", "prechecks", "--skip-checks", "--", "--tags", "memcached"
        )
    finally:
        docker("exec", node.name, "pkill", "-f", "http.server 11211", check=False)
    assert result.exit_code == 2, result.output  # kolla-ansible's own exit code
    assert "kolla prechecks failed (exit code 2):" in result.stderr
    assert (
        "kpch-node1: memcached : Checking free port for Memcached: "
        f"Timeout when waiting for {node.address}:11211 to stop." in result.stderr
    )
    assert "hint: fix the problem above and run 'kpc kolla prechecks' again" in result.stderr


def test_deploy_names_the_image_and_registry_it_cannot_pull(
    kolla_lab: KollaLab, registries: list[LocalRegistry], tmp_path: Path
) -> None:
    # the deploy host's registry is up, but nobody mirrored the release into it
    registry = make_registry(registries, tmp_path / "registry")
    kolla_lab.data["registry"]["port"] = registry.port
    kolla_lab.reconfigure()
    assert kpc(kolla_lab.config, "kolla", "genconfig").exit_code == 0

    result = kpc(kolla_lab.config, "kolla", "deploy", "--skip-checks")
    assert result.exit_code == 2, result.output
    where = f"127.0.0.1:{registry.port}"
    match = re.search(
        r"(kpch-node1, kpch-node2|kpch-node2, kpch-node1): "
        rf"cannot pull image {re.escape(where)}/openstack\.kolla/(kolla-toolbox|cron):"
        rf"2026\.2-debian-trixie from registry {re.escape(where)}: "
        r"the registry does not have this image",
        result.stderr,
    )
    assert match, result.stderr
    assert "kpc registry mirror" in result.stderr


def test_kolla_pulls_the_images_kpc_built_from_the_deploy_hosts_registry(
    kolla_lab: KollaLab, registries: list[LocalRegistry], tmp_path: Path
) -> None:
    # kolla-ansible's own pull, on the node, of an image kpc built with kolla-build and
    # pushed where kolla-ansible looks: <registry>/<namespace>/<name>:<openstack_tag>
    registry = make_registry(registries, tmp_path / "registry")
    kolla_lab.data["registry"]["port"] = registry.port
    kolla_lab.reconfigure()
    assert kpc(kolla_lab.config, "images", "build", "kolla_builder").exit_code == 0
    built = kpc(kolla_lab.config, "kolla", "images", "build", "memcached")
    assert built.exit_code == 0, built.output
    assert kpc(kolla_lab.config, "kolla", "genconfig").exit_code == 0
    ref = f"127.0.0.1:{registry.port}/openstack.kolla/memcached:2026.2-debian-trixie"
    try:
        result = kpc(
            kolla_lab.config, "kolla", "pull", "--skip-checks", "--", "--tags", "memcached"
        )
        assert result.exit_code == 0, result.output
        assert re.search(r"kpch-node1\s+: ok=\d+\s+changed=[1-9]", result.stdout), result.stdout
        assert docker("image", "inspect", ref, check=False).returncode == 0
    finally:
        docker("rmi", ref, check=False)
