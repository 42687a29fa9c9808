"""`kpc bmc power|bootdev` and `kpc pxe-all` against simulated BMCs over real UDP.

One pxe-all run over healthy and misbehaving BMCs: each failure must be reported with
its own kind while every healthy BMC is done; secrets must not show anywhere.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance.cli.main import app
from tests.bmc.conftest import PASSWORD, Sims, write_config

runner = CliRunner()
ENV = {"KPC_BMC_PASSWORD": PASSWORD}


def kpc(config: Path, *args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["-c", str(config), *args], env=ENV if env is None else env)
    return result.exit_code, result.stdout, result.stderr


def rows(stdout: str) -> dict[str, dict[str, object]]:
    return {row["host"]: row for row in json.loads(stdout)}


def test_power_status_on_off(sims: Sims, tmp_path: Path) -> None:
    farm = sims.start("127.44.2.10", 3, power="off")
    config = write_config(tmp_path, "bmc: {user: admin}\n")
    hosts = ["127.44.2.10", "127.44.2.11", "127.44.2.12"]

    code, out, err = kpc(config, "bmc", "power", "status", *hosts, "--json")
    assert code == 0, err
    assert {h: r["result"] for h, r in rows(out).items()} == dict.fromkeys(hosts, "off")

    code, out, err = kpc(config, "bmc", "power", "on", "127.44.2.10", "127.44.2.11", "--yes")
    assert code == 0, err
    assert "127.44.2.10  ipmi  powered on" in out and "127.44.2.11  ipmi  powered on" in out
    assert "2 ok, 0 failed" in err

    code, out, _ = kpc(config, "bmc", "power", "status", *hosts, "--json")
    assert {h: r["result"] for h, r in rows(out).items()} == {
        "127.44.2.10": "on",
        "127.44.2.11": "on",
        "127.44.2.12": "off",
    }
    code, out, err = kpc(config, "bmc", "power", "off", "127.44.2.11", "--yes", "--json")
    assert code == 0 and rows(out)["127.44.2.11"]["result"] == "powered off", err
    code, out, err = kpc(config, "bmc", "power", "reset", "127.44.2.11", "--yes", "--json")
    assert code == 1
    assert rows(out)["127.44.2.11"]["failure"] == "not supported"
    assert "the machine is off" in str(rows(out)["127.44.2.11"]["error"])
    events = [(e["bmc"], e["action"]) for e in farm.events()]
    assert sorted(events[:2]) == [("127.44.2.10", "power_on"), ("127.44.2.11", "power_on")]
    assert events[2:] == [("127.44.2.11", "power_off")]  # and no reset


def test_pxe_all_reports_each_failure_while_the_others_succeed(
    sims: Sims, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good_on = sims.start("127.44.3.10", 4, power="on", wait=False)
    good_off = sims.start("127.44.3.20", 2, power="off", wait=False)
    sims.start("127.44.3.50", password="another-password", wait=False)  # wrong password
    sims.start("127.44.3.51", wait=False)  # the config gives it an unknown user
    sims.start("127.44.3.60", mute_on="bootdev", wait=False)  # silent from the boot flags on
    partial = sims.start("127.44.3.61", mute_on="control", wait=False)  # ... from the reset on
    slow_ok = sims.start("127.44.3.70", delay=0.1, wait=False)
    sims.start("127.44.3.71", delay=0.45, wait=False)  # too slow for --timeout 3
    busy = sims.start("127.44.3.80", busy=2, wait=False)  # busy twice, then fine
    sims.start("127.44.3.81", no_bootdev=True, wait=False)
    lossy = sims.start("127.44.3.82", drop_first=1, wait=False)  # a packet lost: re-sent
    sims.start("127.44.3.83", busy=100, wait=False)  # busy all along
    sims.wait_ready()
    config = write_config(
        tmp_path,
        """\
bmc:
  user: admin
  hosts:
    - {address: 127.44.3.51, name: wrong-user, user: nobody}
    - {address: 127.44.3.99, name: nobody-home}
""",
    )
    targets = [
        f"127.44.3.{n}" for n in (10, 11, 12, 13, 20, 21, 50, 51, 60, 61, 70, 71, 80, 81, 82, 83)
    ]
    targets.append("127.44.3.99")

    code, out, err = kpc(config, "-v", "pxe-all", *targets, "--yes", "--timeout", "3", "--json")
    assert code == 1
    result = rows(out)
    for host in ("127.44.3.10", "127.44.3.11", "127.44.3.12", "127.44.3.13"):
        assert result[host]["ok"] and result[host]["result"] == "PXE boot: reset", result[host]
    for host in ("127.44.3.20", "127.44.3.21", "127.44.3.70", "127.44.3.80", "127.44.3.82"):
        assert result[host]["ok"], result[host]
    assert result["127.44.3.20"]["result"] == "PXE boot: powered on"

    def failure(host: str) -> tuple[object, str]:
        return result[host]["failure"], str(result[host]["error"])

    assert failure("127.44.3.50") == ("wrong credentials", "login refused: wrong password")
    assert failure("127.44.3.51") == (
        "wrong credentials",
        "login refused: the BMC refused the user name",
    )
    kind, error = failure("127.44.3.60")
    assert kind == "no answer" and "stopped answering during 'set boot device pxe" in error
    kind, error = failure("127.44.3.61")
    assert kind == "partial success" and "stopped answering during 'reset'" in error
    assert result["127.44.3.61"]["done"] == ["set boot device pxe (next boot)"]
    kind, error = failure("127.44.3.71")
    assert kind == "timed out" and "slow BMC" in error
    kind, error = failure("127.44.3.81")
    assert kind == "not supported" and "0xC1" in error
    kind, error = failure("127.44.3.83")
    assert kind == "BMC busy" and "'set boot device pxe (next boot)'" in error
    assert failure("127.44.3.99") == ("no answer", "no answer within 3s")
    assert "error: 8 of 17 BMCs failed" in err

    # what the healthy machines really did: one-time PXE, used by the reset / power on
    healthy = ((good_on, "reset"), (good_off, "power_on"), (busy, "reset"), (lossy, "reset"))
    for sim, action in healthy:
        by_bmc: dict[str, list[tuple[str, object]]] = {}
        for event in sim.events():
            by_bmc.setdefault(event["bmc"], []).append(
                (event["action"], event.get("device") or event.get("next_boot"))
            )
        for bmc, events in by_bmc.items():
            assert events == [("bootdev", "network"), (action, "network")], bmc
    assert len({e["bmc"] for e in good_on.events()}) == 4
    assert [e["action"] for e in slow_ok.events()] == ["bootdev", "reset"]
    assert [e["action"] for e in partial.events()] == ["bootdev"]

    # the password is nowhere: output, logs (-v), the simulators' command lines
    everything = out + err + caplog.text
    assert PASSWORD not in everything and "another-password" not in everything
    for sim in sims.running:
        assert PASSWORD not in sim.cmdline() and "another-password" not in sim.cmdline()


def test_a_lost_session_is_started_again(sims: Sims, tmp_path: Path) -> None:
    # after login (6 packets) and the power state (7), the BMC forgets its sessions: the boot
    # flags go unanswered, and kpc logs in again instead of giving up
    sim = sims.start("127.44.8.10", forget_after=7)
    config = write_config(tmp_path, "bmc: {user: admin}\n")
    code, out, err = kpc(config, "pxe-all", "127.44.8.10", "--yes", "--json", "--timeout", "15")
    assert code == 0, err
    row = rows(out)["127.44.8.10"]
    assert row["result"] == "PXE boot: reset" and row["attempts"] == 2
    assert [(e["action"], e.get("device") or e.get("next_boot")) for e in sim.events()] == [
        ("bootdev", "network"),
        ("reset", "network"),
    ]


def test_table_and_hints(sims: Sims, tmp_path: Path) -> None:
    sims.start("127.44.4.10", power="off", wait=False)
    sims.start("127.44.4.11", password="another-password", wait=False)
    sims.wait_ready()
    config = write_config(
        tmp_path, "bmc: {user: admin, hosts: [{address: 127.44.4.11, name: b}]}\n"
    )
    code, out, err = kpc(config, "bmc", "power", "status", "b", "127.44.4.10", "--timeout", "3")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["HOST", "VIA", "RESULT", "ERROR"]
    assert "b (127.44.4.11)" in out and "wrong credentials: login refused" in out
    assert lines[2].split() == ["127.44.4.10", "ipmi", "off"]
    assert "error: 1 of 2 BMCs failed" in err
    assert "hint: wrong credentials: check bmc.user and the password reference" in err


def test_per_host_password_reference(sims: Sims, tmp_path: Path) -> None:
    sims.start("127.44.5.10", password="rack2-secret", wait=False)
    sims.start("127.44.5.11", wait=False)
    sims.wait_ready()
    config = write_config(
        tmp_path,
        "bmc:\n  user: admin\n  hosts:\n"
        "    - {address: 127.44.5.10, password: {env: RACK2_PW}}\n"
        "    - {address: 127.44.5.11}\n",
    )
    env = {**ENV, "RACK2_PW": "rack2-secret"}
    code, out, err = kpc(config, "bmc", "power", "status", "--json", env=env)
    assert code == 0, out + err
    assert {h: r["result"] for h, r in rows(out).items()} == {
        "127.44.5.10": "on",
        "127.44.5.11": "on",
    }
    code, _, err = kpc(config, "bmc", "power", "status", env=ENV)
    assert code == 2
    assert "127.44.5.10: the secret in environment variable RACK2_PW is not set" in err

    # the site's own reference is unset: KPC_BMC_PASSWORD is used, with a warning
    site_ref = write_config(
        tmp_path,
        "bmc: {user: admin, password: {env: SITE_BMC_PW}, hosts: [{address: 127.44.5.11}]}\n",
    )
    code, out, err = kpc(site_ref, "bmc", "power", "status", "--json")
    assert code == 0, err
    assert rows(out)["127.44.5.11"]["result"] == "on"
    assert "SITE_BMC_PW is not set; using KPC_BMC_PASSWORD" in err


def test_bootdev_persistent(sims: Sims, tmp_path: Path) -> None:
    sim = sims.start("127.44.6.10")
    config = write_config(tmp_path, "bmc: {user: admin}\n")
    code, out, err = kpc(config, "bmc", "bootdev", "disk", "127.44.6.10", "--persistent", "--yes")
    assert code == 0, err
    assert "boot device disk (every boot)" in out
    assert [(e["device"], e["persistent"]) for e in sim.events()] == [("hd", True)]


def test_dry_run_and_refused_confirmation_send_nothing(sims: Sims, tmp_path: Path) -> None:
    sim = sims.start("127.44.7.10")
    config = write_config(
        tmp_path, "bmc: {user: admin, hosts: [{address: 127.44.7.10, name: node-1}]}\n"
    )
    code, out, err = kpc(config, "pxe-all", "--dry-run", env={"KPC_BMC_PASSWORD": None})
    assert code == 0, err
    assert "dry run: nothing is sent" in out
    assert "node-1 (127.44.7.10)  ipmi  admin" in out and "set one-time PXE boot" in out

    result = runner.invoke(app, ["-c", str(config), "pxe-all"], env=ENV, input="n\n")
    assert result.exit_code == 3
    assert "erased" in result.stderr and "nothing was sent" in result.stderr
    assert sim.events() == []


def test_no_targets_and_no_password(tmp_path: Path) -> None:
    config = write_config(tmp_path, "bmc: {user: admin}\n")
    code, _, err = kpc(config, "pxe-all", "--yes")
    assert code == 2 and "no BMCs to act on" in err
    code, _, err = kpc(
        config, "bmc", "power", "status", "127.0.0.1", env={"KPC_BMC_PASSWORD": None}
    )
    assert code == 2
    assert "the secret in environment variable KPC_BMC_PASSWORD is not set" in err
    code, _, err = kpc(config, "bmc", "power", "status", "no-such-host")
    assert code == 2 and "no known BMC matches 'no-such-host'" in err
