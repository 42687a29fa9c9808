"""Pure parts of node access: target selection, known_hosts, the ssh argv, report shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.drivers.ssh import Credentials, HostKey
from appliance.errors import KpcError, UsageError
from appliance.nodes.access import SshSettings
from appliance.nodes.checks import Check, CheckResult, Status
from appliance.nodes.gate import NodesUnfit
from appliance.nodes.hostkeys import known_hosts_text
from appliance.nodes.interactive import ssh_argv
from appliance.nodes.report import CheckReport, Failure, NodeReport
from appliance.nodes.targets import Target, matches, parse_macs, select_targets
from appliance.state.model import Machine, MachineState
from appliance.state.sqlite import SqliteStore

KEY = HostKey("ssh-ed25519", bytes(range(51)))
RSA = HostKey("ssh-rsa", b"\x00\x00\x00\x07ssh-rsa" + bytes(40))


def machine(mac: str, address: str | None, key: HostKey | None = None) -> Machine:
    facts = {"address": address} if address else {}
    return Machine(
        mac, state=MachineState.READY, facts=facts, ssh_host_key=key.line if key else None
    )


def test_known_hosts_lines() -> None:
    text = known_hosts_text(
        [
            machine("52:54:00:00:00:02", "198.18.0.12", RSA),
            machine("52:54:00:00:00:01", "198.18.0.11", KEY),
            machine("52:54:00:00:00:03", None, KEY),  # no address: left out
            machine("52:54:00:00:00:04", "198.18.0.14"),  # no key yet: left out
        ],
        22,
    )
    assert text == (
        f"198.18.0.11 {KEY.line} kpc:52:54:00:00:00:01\n"
        f"198.18.0.12 {RSA.line} kpc:52:54:00:00:00:02\n"
    )
    other_port = known_hosts_text([machine("52:54:00:00:00:01", "198.18.0.11", KEY)], 2222)
    assert other_port.startswith("[198.18.0.11]:2222 ssh-ed25519 ")


def test_ssh_argv_exact() -> None:
    settings = SshSettings(
        Credentials("core"), port=22, timeout=10, key_file=Path("/etc/kpc/id_ed25519")
    )
    argv = ssh_argv("198.18.0.11", settings, RSA, Path("/var/lib/kpc/ssh/known_hosts"), ["-x"])
    assert argv == [
        "ssh", "-p", "22", "-l", "core",
        "-i", "/etc/kpc/id_ed25519", "-o", "IdentitiesOnly=yes",
        "-o", "UserKnownHostsFile=/var/lib/kpc/ssh/known_hosts",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UpdateHostKeys=no",
        "-o", "HostKeyAlgorithms=rsa-sha2-512,rsa-sha2-256",
        "-o", "ConnectTimeout=10",
        "--", "198.18.0.11", "-x",
    ]  # fmt: skip
    agent_only = SshSettings(Credentials("core", (), "/run/agent.sock"))
    argv = ssh_argv("198.18.0.11", agent_only, KEY, Path("/k"))
    assert "-i" not in argv and "IdentitiesOnly=yes" not in argv
    assert argv[-2:] == ["--", "198.18.0.11"]
    assert "HostKeyAlgorithms=ssh-ed25519" in argv


def test_patterns_match_mac_hostname_or_address() -> None:
    target = Target("52:54:00:ab:cd:ef", "198.18.0.11", "Compute-1")
    assert matches(target, "compute-*")
    assert matches(target, "198.18.0.1?")
    assert matches(target, "52:54:00:AB:*")
    assert not matches(target, "control-*")


def test_parse_macs() -> None:
    assert parse_macs(["52-54-00-AB-CD-EF", "525400abcdef", "52:54:00:00:00:01"]) == [
        "52:54:00:ab:cd:ef",
        "52:54:00:00:00:01",
    ]
    with pytest.raises(UsageError, match="not a MAC address: nope, 12:34"):
        parse_macs(["nope", "12:34"])


def test_default_targets_are_ready_machines(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "m.db") as store:
        with pytest.raises(KpcError, match="no machine is ready"):
            select_targets(store)
        store.record_request("52:54:00:00:00:01", address="198.18.0.11", endpoint="/ipxe", now=1)
        store.record_request("52:54:00:00:00:02", address="198.18.0.12", endpoint="/ipxe", now=1)
        store.check_in("52:54:00:00:00:02", {"hostname": "n2"}, "198.18.0.12", 2)
        (only,) = select_targets(store)
        assert (only.mac, only.address, only.name) == ("52:54:00:00:00:02", "198.18.0.12", "n2")
        # named machines are taken in any state
        named = select_targets(store, ["52:54:00:00:00:01"])
        assert [t.mac for t in named] == ["52:54:00:00:00:01"]


def test_report_json_and_unfit_message() -> None:
    good = NodeReport(
        Target("52:54:00:00:00:01", "198.18.0.11", "n1"),
        checks=(CheckResult(Check.DOCKER, Status.OK, "24.0.9", data={"running": True}),),
    )
    no_docker = NodeReport(
        Target("52:54:00:00:00:02", "198.18.0.12", "n2"),
        checks=(CheckResult(Check.DOCKER, Status.FAIL, "absent", "docker is not installed"),),
    )
    refused = NodeReport(
        Target("52:54:00:00:00:03", "198.18.0.13"),
        failure=Failure("refused", "198.18.0.13: connection refused", "is it up?"),
    )
    report = CheckReport((good, no_docker, refused))
    assert not report.fit
    data = report.as_json()
    assert data["unfit"] == ["52:54:00:00:00:02", "52:54:00:00:00:03"]
    assert data["nodes"][0]["checks"]["docker"] == {
        "status": "ok",
        "summary": "24.0.9",
        "running": True,
    }
    assert data["nodes"][2]["failure"] == {
        "kind": "refused",
        "message": "198.18.0.13: connection refused",
        "hint": "is it up?",
    }
    error = NodesUnfit(report, skip_hint="--skip-checks to go ahead anyway")
    assert error.message.splitlines() == [
        "2 of 3 nodes not fit:",
        "  n2 (52:54:00:00:00:02): check failed: docker: docker is not installed",
        "  52:54:00:00:00:03 (52:54:00:00:00:03): refused: 198.18.0.13: connection refused",
    ]
    assert error.hint is not None and error.hint.endswith("--skip-checks to go ahead anyway")
    assert not CheckReport(()).fit  # zero nodes is never "all fit"
