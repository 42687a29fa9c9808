"""Management-address choice, the installer's argv, and the site config install-host writes."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from appliance.config import parse_config
from appliance.errors import UsageError
from appliance.install.address import (
    HostAddress,
    choose_address,
    host_addresses,
    parse_ip_addresses,
    ssh_server_address,
)
from appliance.install.installer import installer_argv, parse_installer
from appliance.install.osrelease import TargetOs
from appliance.install.siteconfig import new_site_config
from tests.conftest import require_tool

IP_JSON = json.dumps(
    [
        {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP"], "operstate": "UNKNOWN",
         "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"}]},
        {"ifindex": 2, "ifname": "eno1", "flags": ["BROADCAST", "UP", "LOWER_UP"],
         "operstate": "UP",
         "addr_info": [
             {"family": "inet", "local": "10.101.0.15", "prefixlen": 24, "scope": "global"},
             {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"}]},
        {"ifindex": 3, "ifname": "eno2", "flags": ["BROADCAST"], "operstate": "DOWN",
         "addr_info": [
             {"family": "inet", "local": "192.168.7.2", "prefixlen": 23, "scope": "global"}]},
    ]
)  # fmt: skip


def test_parse_ip_addresses_keeps_global_ipv4_only() -> None:
    found = parse_ip_addresses(IP_JSON)
    assert [(a.interface, str(a.address), str(a.network), a.up) for a in found] == [
        ("eno1", "10.101.0.15", "10.101.0.0/24", True),
        ("eno2", "192.168.7.2", "192.168.6.0/23", False),
    ]
    assert found[1].describe() == "192.168.7.2/23 on eno2 (link down)"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.101.0.99 52814 10.101.0.15 22", "10.101.0.15"),
        ("::ffff:10.0.0.9 1 ::ffff:10.101.0.15 22", "10.101.0.15"),
        ("2001:db8::9 1 2001:db8::15 22", None),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_ssh_server_address(value: str | None, expected: str | None) -> None:
    found = ssh_server_address(value)
    assert (str(found) if found else None) == expected


def test_ssh_connection_picks_the_address() -> None:
    choice = choose_address(parse_ip_addresses(IP_JSON), "10.101.0.99 52814 10.101.0.15 22")
    assert choice.chosen is not None and choice.chosen.interface == "eno1"
    assert "SSH session" in choice.note


def test_without_ssh_connection_the_operator_chooses() -> None:
    choice = choose_address(parse_ip_addresses(IP_JSON), None)
    assert choice.chosen is None and len(choice.candidates) == 2
    assert "SSH_CONNECTION is not set" in choice.note
    nat = choose_address(parse_ip_addresses(IP_JSON), "1.2.3.4 5 203.0.113.7 22")
    assert nat.chosen is None and "203.0.113.7, which is not on any local interface" in nat.note


def test_this_hosts_addresses_parse() -> None:
    require_tool("ip")
    for found in host_addresses():
        assert not found.address.is_loopback and found.address in found.network


TARGET = TargetOs("flatcar", "beta", "3850.1.0", None, ())


def test_default_installer_argv_is_exact() -> None:
    argv = installer_argv(parse_installer(None), "/dev/sdb", TARGET, Path("/run/x/d.ign"))
    assert argv == [
        "flatcar-install", "-d", "/dev/sdb", "-C", "beta", "-V", "3850.1.0", "-i", "/run/x/d.ign",
    ]  # fmt: skip


def test_custom_installer_and_mirror() -> None:
    target = TargetOs("flatcar", "stable", "current", "http://mirror.lan/stable", ())
    command = parse_installer("/opt/bin/my-install --verbose 'two words'")
    argv = installer_argv(command, "/dev/nvme0n1", target, Path("/w/i.ign"))
    assert argv == [
        "/opt/bin/my-install", "--verbose", "two words",
        "-d", "/dev/nvme0n1", "-C", "stable", "-V", "current", "-i", "/w/i.ign",
        "-b", "http://mirror.lan/stable",
    ]  # fmt: skip


@pytest.mark.parametrize("bad", ["", "   ", "'unclosed"])
def test_bad_installer_text(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_installer(bad)


def test_new_site_config_is_valid_and_pins_the_os() -> None:
    address = HostAddress(
        "eno1", ipaddress.IPv4Address("10.101.0.15"), ipaddress.IPv4Network("10.101.0.0/24")
    )
    text = new_site_config(address, TARGET, "the address your SSH session reached")
    config = parse_config(text, "new.yaml")
    comments = " ".join(line.strip().lstrip("# ") for line in text.splitlines())
    assert "chosen by install-host: the address your SSH session reached" in comments
    assert "channel: beta" in text
    assert str(config.provisioning.address) == "10.101.0.15"
    assert config.provisioning.interface == "eno1"
    assert (config.os.channel, config.os.version) == ("beta", "3850.1.0")
