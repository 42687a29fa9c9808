"""Choosing BMCs: inventory, addresses, networks, names, --only/--exclude."""

from __future__ import annotations

import ipaddress

import pytest

from appliance.bmc.targets import Candidate, inventory, select
from appliance.config import BmcHost, SecretRef
from appliance.errors import UsageError
from appliance.state.model import Bmc

REF = SecretRef(env="RACK2_BMC_PASSWORD")
HOSTS = [
    BmcHost(address=ipaddress.IPv4Address("10.0.1.11"), name="rack1-a"),
    BmcHost(address=ipaddress.IPv4Address("10.0.1.12"), name="rack1-b", user="ops"),
    BmcHost(address=ipaddress.IPv4Address("10.0.2.11"), name="rack2-a", password=REF),
]
FOUND = [Bmc("10.0.1.12"), Bmc("10.0.1.20"), Bmc("10.0.3.5")]


def known() -> list[Candidate]:
    return inventory(HOSTS, FOUND)


def addresses(chosen: list[Candidate]) -> list[str]:
    return [c.address for c in chosen]


def test_inventory_configured_first_then_discovered_without_duplicates() -> None:
    inv = known()
    assert addresses(inv) == ["10.0.1.11", "10.0.1.12", "10.0.2.11", "10.0.1.20", "10.0.3.5"]
    assert inv[1] == Candidate("10.0.1.12", name="rack1-b", user="ops")
    assert inv[2].password == REF
    assert [c.source for c in inv] == ["inventory"] * 3 + ["discovered"] * 2


def test_no_targets_means_everything_known() -> None:
    assert addresses(select(known())) == addresses(known())


def test_addresses_keep_inventory_settings_and_accept_unknown_ones() -> None:
    chosen = select(known(), ["10.0.1.12", "192.0.2.7:6230", "10.0.1.12"])
    assert chosen == [
        Candidate("10.0.1.12", name="rack1-b", user="ops"),
        Candidate("192.0.2.7", 6230, source="argument"),
    ]


def test_networks_names_and_globs() -> None:
    assert addresses(select(known(), ["10.0.1.0/24"])) == ["10.0.1.11", "10.0.1.12", "10.0.1.20"]
    assert addresses(select(known(), ["rack2-a"])) == ["10.0.2.11"]
    assert addresses(select(known(), ["rack1-*"])) == ["10.0.1.11", "10.0.1.12"]
    assert addresses(select(known(), ["10.0.?.11"])) == ["10.0.1.11", "10.0.2.11"]


def test_only_and_exclude() -> None:
    chosen = select(known(), only=["10.0.1.0/24,rack2-*"], exclude=["rack1-b"])
    assert addresses(chosen) == ["10.0.1.11", "10.0.2.11", "10.0.1.20"]
    assert select(known(), ["rack1-a"], exclude=["10.0.0.0/8"]) == []


def test_unknown_name_is_an_error_naming_it() -> None:
    with pytest.raises(UsageError, match="no known BMC matches 'rack9-\\*'"):
        select(known(), ["rack9-*"])


@pytest.mark.parametrize("bad", ["10.0.1.0/33", "10.0.1.5:99999", "10.0.1.5:x"])
def test_bad_targets(bad: str) -> None:
    with pytest.raises(UsageError):
        select(known(), [bad])


def test_bad_network_in_a_filter() -> None:
    with pytest.raises(UsageError, match="not a network"):
        select(known(), only=["10.0.1.0/40"])
