"""Discovery over real UDP on loopback: exactly the live BMCs of a /24 are found."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance.bmc import discovery
from appliance.cli.main import app
from appliance.state.sqlite import SqliteStore
from tests.bmc.conftest import Sims, write_config

runner = CliRunner()
NET = ipaddress.IPv4Network("127.44.1.0/24")
LIVE = [f"127.44.1.{n}" for n in (1, 10, 11, 12, 13, 14, 77, 200, 254)]


@pytest.fixture(scope="module")
def live(module_sims: Sims) -> list[str]:
    module_sims.start("127.44.1.10", 5, wait=False)  # a farm on .10-.14
    for address in ("127.44.1.1", "127.44.1.77", "127.44.1.200", "127.44.1.254"):
        module_sims.start(address, iana=674 if address.endswith(".77") else 4542, wait=False)
    module_sims.start("127.44.1.150", mute_after=0, wait=False)  # listening, never answering
    module_sims.wait_ready()
    return LIVE


def test_sweep_finds_exactly_the_live_ones(live: list[str]) -> None:
    result = discovery.run_sweep([NET], discovery.SweepOptions(rate=0, timeout=1.0))
    assert [f.address for f in result.found] == live
    assert result.probed == 254
    by_address = {f.address: f for f in result.found}
    dell = by_address["127.44.1.77"]
    assert dell.iana == 674
    assert dell.ipmi_versions == ("2.0",)
    assert dell.auth_types == ("rmcp+",)
    assert dell.complete and dell.pong is not None and dell.pong.ipmi_supported
    assert by_address["127.44.1.10"].iana == 4542


SO_TIMESTAMPNS = 35  # linux/socket.h: the kernel stamps each datagram when it arrives
TIMESPEC = struct.Struct("@qq")


def test_rate_paces_the_probes() -> None:
    """At ``rate`` packets/s, 60 probes cannot all have left in less than (60 - burst) / rate
    seconds. Measured by the kernel's arrival stamps on a socket of the test's own. (The whole
    sweep, not each gap: a pacer that was held up by the scheduler may catch up, and load on
    this machine can only make the sweep longer, never shorter.)"""
    rate = 100
    small = ipaddress.IPv4Network("127.44.2.0/27")  # 30 addresses, nothing else there
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as catcher:
        catcher.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        catcher.bind(("0.0.0.0", 0))  # every 127.44.2.x:port arrives here, over loopback
        port = catcher.getsockname()[1]
        result = discovery.run_sweep(
            [small], discovery.SweepOptions(rate=rate, timeout=0.1, retries=0, port=port)
        )
        catcher.setblocking(False)
        stamps = []
        with contextlib.suppress(BlockingIOError):
            while True:
                _data, ancillary, _flags, _addr = catcher.recvmsg(512, 64)
                (level, kind, raw) = ancillary[0]
                assert (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS)
                seconds, nanoseconds = TIMESPEC.unpack(raw[: TIMESPEC.size])
                stamps.append(seconds + nanoseconds / 1e9)
    assert result.found == [] and result.packets == 60
    assert len(stamps) == 60  # a presence ping and an auth-caps request per address
    took = max(stamps) - min(stamps)  # the span: stamps may arrive out of order
    burst = 4  # the sender's first burst: one probe pair, rounded up twice
    assert took >= (len(stamps) - burst) / rate, f"60 packets in {took:.3f} s: faster than {rate}/s"


def test_cli_discover_records_and_lists(live: list[str], tmp_path: Path) -> None:
    config = write_config(tmp_path, "bmc: {networks: [127.44.1.0/24]}\n")
    result = runner.invoke(app, ["-c", str(config), "bmc", "discover", "--rate", "0", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert [f["address"] for f in found] == live
    assert found[0]["answered"] == ["ping", "auth-caps"]

    again = runner.invoke(app, ["-c", str(config), "bmc", "discover", "--rate", "0"])
    assert again.exit_code == 0, again.output
    assert "found 9 BMC(s) among 254 addresses" in again.stderr
    assert "127.44.1.77" in again.stdout and "Dell (674)" in again.stdout

    with SqliteStore(tmp_path / "machines.db") as store:
        recorded = {b.address: b for b in store.list_bmcs()}
    assert sorted(recorded) == sorted(live)
    assert recorded["127.44.1.77"].iana == 674
    assert recorded["127.44.1.77"].ipmi_versions == ("2.0",)

    listed = runner.invoke(app, ["-c", str(config), "bmc", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["address"] for r in rows] == live
    assert {r["source"] for r in rows} == {"discovered"}

    table = runner.invoke(app, ["-c", str(config), "bmc", "list"])
    assert "Dell (674)" in table.stdout


def test_cli_discover_needs_networks(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = runner.invoke(app, ["-c", str(config), "bmc", "discover"])
    assert result.exit_code == 2
    assert "no networks to sweep" in result.stderr
    bad = runner.invoke(app, ["-c", str(config), "bmc", "discover", "10.0.0.0/33"])
    assert bad.exit_code == 2 and "not an IPv4 network: '10.0.0.0/33'" in bad.stderr


def test_neighbour_budget() -> None:
    lan = [ipaddress.IPv4Network("10.0.0.0/22")]
    assert discovery.neighbour_budget(lan, 1024) == 512  # 768 entries / 3 s, 2 packets each
    assert discovery.neighbour_budget([NET], 1024) is None  # loopback: no ARP
