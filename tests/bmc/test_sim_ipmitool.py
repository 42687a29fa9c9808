"""The simulator, driven by independent clients: ipmitool (lanplus) and freeipmi's pings."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.bmc.conftest import PASSWORD, USER, Sims
from tests.conftest import require_tool, wait_for

ADDRESS = "127.44.0.10"


def ipmitool(address: str, *args: str, user: str = USER, password: str = PASSWORD) -> str:
    """Run ipmitool with the password in its environment (-E), never on its command line."""
    result = subprocess.run(
        ["ipmitool", "-I", "lanplus", "-H", address, "-U", user, "-E", "-N", "1", "-R", "2", *args],
        env={**os.environ, "IPMITOOL_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"ipmitool {' '.join(args)} failed: {result.stderr}")
    return result.stdout


@pytest.fixture
def bmc(sims: Sims) -> Sims:
    require_tool("ipmitool")
    sims.start(ADDRESS, power="off")
    return sims


def test_ipmitool_power_and_one_time_pxe(bmc: Sims) -> None:
    sim = bmc.running[0]
    assert ipmitool(ADDRESS, "power", "status").strip() == "Chassis Power is off"
    ipmitool(ADDRESS, "power", "on")
    assert ipmitool(ADDRESS, "power", "status").strip() == "Chassis Power is on"

    assert "Set Boot Device to pxe" in ipmitool(ADDRESS, "chassis", "bootdev", "pxe")
    flags = ipmitool(ADDRESS, "chassis", "bootparam", "get", "5")
    assert "Boot Flag Valid" in flags
    assert "Options apply to only next boot" in flags
    assert "Boot Device Selector : Force PXE" in flags

    ipmitool(ADDRESS, "power", "reset")
    # one-time: the reset used it, and it is gone afterwards
    after = ipmitool(ADDRESS, "chassis", "bootparam", "get", "5")
    assert "Boot Flag Invalid" in after and "No override" in after

    ipmitool(ADDRESS, "chassis", "bootdev", "disk", "options=persistent")
    persistent = ipmitool(ADDRESS, "chassis", "bootparam", "get", "5")
    assert "Options apply to all future boots" in persistent
    assert "Force Boot from default Hard-Drive" in persistent

    ipmitool(ADDRESS, "power", "off")
    assert ipmitool(ADDRESS, "power", "status").strip() == "Chassis Power is off"

    actions = [(e["action"], e.get("next_boot") or e.get("device")) for e in sim.events()]
    assert actions == [
        ("power_on", "default"),
        ("bootdev", "network"),
        ("reset", "network"),  # the reset booted from the network ...
        ("bootdev", "hd"),
        ("power_off", None),
    ]


def test_ipmitool_reset_of_a_machine_that_is_off_is_refused(bmc: Sims) -> None:
    with pytest.raises(
        AssertionError, match="Reset failed: Command not supported in present state"
    ):
        ipmitool(ADDRESS, "power", "reset")
    assert bmc.running[0].events() == []


def test_wrong_credentials_are_refused(bmc: Sims) -> None:
    with pytest.raises(AssertionError):
        ipmitool(ADDRESS, "power", "status", password="not-the-password")
    with pytest.raises(AssertionError):
        ipmitool(ADDRESS, "power", "status", user="nobody")


def test_freeipmi_pings_and_the_password_stays_out_of_argv(bmc: Sims) -> None:
    require_tool("ipmiping", "rmcpping")
    sim = bmc.running[0]
    for tool in (["ipmiping", "-r", "2.0"], ["ipmiping"], ["rmcpping"]):
        out = subprocess.run(
            [*tool, "-c", "1", ADDRESS], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        assert f"received from {ADDRESS}" in out, (tool, out)
    assert PASSWORD not in sim.cmdline()
    assert ADDRESS in sim.cmdline()


def test_a_farm_serves_every_address(sims: Sims) -> None:
    require_tool("ipmitool")
    sims.start("127.44.0.20", 3, power="on")
    for last in (20, 21, 22):
        assert "on" in ipmitool(f"127.44.0.{last}", "power", "status")
    ipmitool("127.44.0.21", "power", "off")
    assert "off" in ipmitool("127.44.0.21", "power", "status")
    assert "on" in ipmitool("127.44.0.22", "power", "status")
    wait_for(lambda: sims.running[0].events(), 5, "the power-off event")
    assert [e["bmc"] for e in sims.running[0].events()] == ["127.44.0.21"]
