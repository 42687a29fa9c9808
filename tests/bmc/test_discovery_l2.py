"""Discovery on a real L2 segment: a /22 behind a veth, 50 IPMI BMCs, a Redfish BMC
(sushy-tools' emulator) and ~970 addresses that never answer ARP.

Two namespaces made by the test: ``kpcc-l2d`` (the deploy host's side, 198.19.244.1/22)
and ``kpcc-l2b`` (the BMCs, one address each), joined by a veth. kpc runs inside kpcc-l2d,
through its CLI, so it sees the segment as a directly attached network.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.state.sqlite import SqliteStore
from tests.bmc.conftest import Sims, write_config
from tests.bmc.redfish_peer import Emulator, start_emulator
from tests.conftest import REPO, require_root, require_tool

DEPLOY_NS, BMC_NS = "kpcc-l2d", "kpcc-l2b"
NETWORK = "198.19.244.0/22"
IPMI = [f"198.19.245.{n}" for n in range(100, 150)]
REDFISH = "198.19.246.7"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _remove() -> None:
    for ns in (DEPLOY_NS, BMC_NS):
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


@pytest.fixture(scope="module")
def segment(module_sims: Sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    require_root()
    require_tool("ip", "openssl")
    _remove()
    try:
        for ns in (DEPLOY_NS, BMC_NS):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", "kpcc-d0", "netns", DEPLOY_NS, "type", "veth",
            "peer", "kpcc-b0", "netns", BMC_NS)  # fmt: skip
        _ip("-n", DEPLOY_NS, "addr", "add", "198.19.244.1/22", "dev", "kpcc-d0")
        batch = "".join(f"addr add {a}/22 dev kpcc-b0\n" for a in [*IPMI, REDFISH])
        subprocess.run(["ip", "-n", BMC_NS, "-batch", "-"], input=batch.encode(), check=True)
        for ns, link in ((DEPLOY_NS, "kpcc-d0"), (BMC_NS, "kpcc-b0")):
            _ip("-n", ns, "link", "set", link, "up")
        module_sims.start(IPMI[0], len(IPMI), netns=BMC_NS)
        emulator = start_emulator(tmp_path_factory.mktemp("redfish"), REDFISH, 443, netns=BMC_NS)
        try:
            yield emulator
        finally:
            emulator.stop()
            module_sims.stop_all()
    finally:
        _remove()


def _discover(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", DEPLOY_NS, sys.executable, "-m", "appliance",
            "-c", str(config), "bmc", "discover", NETWORK, "--json", *extra]  # fmt: skip
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_arp_first_finds_every_bmc_and_loses_no_probe(segment: Emulator, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = _discover(config)
    assert result.returncode == 0, result.stderr
    found = {f["address"]: f for f in json.loads(result.stdout)}
    assert sorted(found) == sorted([*IPMI, REDFISH], key=lambda a: tuple(map(int, a.split("."))))
    assert "could not be sent" not in result.stderr
    assert "ARP on kpcc-d0: 51 of 1021 addresses alive" in result.stderr
    assert found[IPMI[0]]["protocols"] == ["ipmi"]
    assert found[IPMI[0]]["mac"] and found[IPMI[0]]["answered"] == ["ping", "auth-caps"]
    assert found[REDFISH]["protocols"] == ["redfish"]
    assert found[REDFISH]["tls_fingerprint"] == segment.fingerprint
    with SqliteStore(tmp_path / "machines.db") as store:
        recorded = {b.address: b for b in store.list_bmcs()}
    assert len(recorded) == 51
    assert recorded[REDFISH].protocols == ("redfish",)
    assert recorded[REDFISH].tls_fingerprint == segment.fingerprint  # pinned on first use
    assert recorded[IPMI[-1]].protocols == ("ipmi",)


def test_a_changed_certificate_is_reported_at_discovery(segment: Emulator, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with SqliteStore(tmp_path / "machines.db") as store:
        store.pin_bmc_cert(REDFISH, "00" * 32)
    result = _discover(config)
    assert result.returncode == 0, result.stderr
    assert f"{REDFISH}: TLS certificate CHANGED" in result.stderr
    assert f"kpc bmc forget-cert {REDFISH}" in result.stderr
    with SqliteStore(tmp_path / "machines.db") as store:
        pinned = {b.address: b.tls_fingerprint for b in store.list_bmcs()}
    assert pinned[REDFISH] == "00" * 32  # never replaced silently
