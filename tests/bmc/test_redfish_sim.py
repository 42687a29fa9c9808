"""kpc's simulated Redfish BMC, driven by clients kpc did not write (OpenStack's sushy,
curl), and kpc's client against it for every fault, each reported per host while the
others succeed. Simulators listen on loopback, HTTPS port 8443."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import sushy
from sushy import auth as sushy_auth
from typer.testing import CliRunner

from appliance.cli.main import app
from tests.bmc.conftest import PASSWORD, USER, Sim, Sims, write_config
from tests.conftest import require_tool, wait_for

runner = CliRunner()
PORT = "8443"


def start(sims: Sims, address: str, *extra: str, count: int = 1, **flags: object) -> Sim:
    fingerprints = str(sims.tmp / f"{address}.fp")
    protocol = ("--protocol", "redfish", "--redfish-port", PORT, "--fingerprints", fingerprints)
    return sims.start(address, count, *protocol, *extra, **flags)


def test_sushy_drives_the_simulator(sims: Sims) -> None:
    sim = start(sims, "127.44.31.1", power="off")
    # sushy's client and its session auth refer to each other, so only the cyclic garbage
    # collector would end the session, at some later moment, in whatever code runs then, with
    # 10 retries against a simulator long gone: that stalled a later test's event loop for 17 s.
    # The session is closed here, while the simulator still answers.
    auth = sushy_auth.SessionAuth(username=USER, password=PASSWORD)
    with auth:
        _drive_with_sushy(sim, auth)


def _drive_with_sushy(sim: Sim, auth: sushy_auth.SessionAuth) -> None:
    root = sushy.Sushy(f"https://127.44.31.1:{PORT}/redfish/v1/", verify=False, auth=auth)
    system = root.get_system("/redfish/v1/Systems/1")
    assert system.power_state == sushy.POWER_STATE_OFF
    assert sushy.RESET_FORCE_RESTART in system.get_allowed_reset_system_values()
    system.set_system_boot_source(
        sushy.BOOT_SOURCE_TARGET_PXE, enabled=sushy.BOOT_SOURCE_ENABLED_ONCE,
        mode=sushy.BOOT_SOURCE_MODE_UEFI,
    )  # fmt: skip
    system.reset_system(sushy.RESET_ON)
    system.refresh()
    assert system.power_state == sushy.POWER_STATE_ON
    assert system.boot.enabled == sushy.BOOT_SOURCE_ENABLED_DISABLED  # consumed by that boot
    assert [n.mac_address for n in system.ethernet_interfaces.get_members()] == [
        "52:54:00:2c:1f:01"
    ]
    media = system.virtual_media.get_member(f"{system.virtual_media.path}/Cd")
    media.insert_media("http://198.18.0.2:8080/assets/rescue.iso")
    media.refresh()
    assert media.inserted and media.image.endswith("rescue.iso")
    media.eject_media()
    events = [e["action"] for e in sim.events()]
    assert events[:3] == ["session", "bootdev", "power_on"]
    assert sim.events()[2]["next_boot"] == "network"
    assert "media_insert" in events and "media_eject" in events


def test_curl_logs_in_with_a_session_and_out(sims: Sims, tmp_path: Path) -> None:
    require_tool("curl")
    start(sims, "127.44.31.2")
    base = f"https://127.44.31.2:{PORT}"
    body = tmp_path / "login.json"
    body.write_text(json.dumps({"UserName": USER, "Password": PASSWORD}))
    headers = tmp_path / "headers"
    subprocess.run(
        ["curl", "-sk", "--fail", "-D", str(headers), "-H", "Content-Type: application/json",
         "--data", f"@{body}", f"{base}/redfish/v1/SessionService/Sessions"],
        check=True, capture_output=True,
    )  # fmt: skip
    fields = dict(
        line.split(": ", 1) for line in headers.read_text().splitlines()[1:] if ": " in line
    )
    token = {k.lower(): v for k, v in fields.items()}["x-auth-token"]
    location = {k.lower(): v for k, v in fields.items()}["location"]
    system = subprocess.run(
        ["curl", "-sk", "--fail", "-H", f"X-Auth-Token: {token}", f"{base}/redfish/v1/Systems/1"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert json.loads(system)["PowerState"] == "On"
    unauthorised = subprocess.run(
        ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/redfish/v1/Systems/1"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert unauthorised == "401"
    deleted = subprocess.run(
        ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", "-H",
         f"X-Auth-Token: {token}", f"{base}{location}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert deleted == "204"


def test_every_fault_is_reported_per_host_while_the_others_succeed(
    sims: Sims, tmp_path: Path
) -> None:
    good = start(sims, "127.44.32.1", count=2, wait=False)
    start(sims, "127.44.32.10", password="other-password", wait=False)
    start(sims, "127.44.32.11", reset_types="On,ForceOff", wait=False)
    start(sims, "127.44.32.12", max_sessions=0, wait=False)
    start(sims, "127.44.32.13", delay=3, wait=False)  # 3 s per answer: 7 answers > 10 s
    hung = start(sims, "127.44.32.14", "--hang-on-reset", wait=False)
    start(sims, "127.44.32.15", "--no-sessions", wait=False)
    sims.wait_ready()
    config = write_config(tmp_path, f"bmc: {{user: {USER}, protocol: redfish}}\n")
    hosts = ["127.44.32.1", "127.44.32.2", *(f"127.44.32.{n}" for n in range(10, 16))]
    result = runner.invoke(
        app,
        ["-c", str(config), "pxe-all", *(f"{h}:{PORT}" for h in hosts), "--yes", "--json",
         "--timeout", "10"],
        env={"KPC_BMC_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    rows = {r["host"]: r for r in json.loads(result.stdout)}
    assert rows["127.44.32.1"]["result"] == rows["127.44.32.2"]["result"] == "PXE boot: reset"
    assert rows["127.44.32.15"]["result"] == "PXE boot: reset"  # basic auth, no sessions
    failures = {h: (r["failure"], r["error"]) for h, r in rows.items() if not r["ok"]}
    assert failures["127.44.32.10"][0] == "wrong credentials"
    assert failures["127.44.32.11"] == (
        "not supported",
        "cannot reset: the BMC offers ResetType On, ForceOff, none of ForceRestart, "
        "GracefulRestart, PowerCycle",
    )
    assert failures["127.44.32.12"][0] == "BMC busy"
    assert "maximum number of user sessions" in failures["127.44.32.12"][1]
    assert failures["127.44.32.13"][0] == "timed out"
    assert "slow BMC" in failures["127.44.32.13"][1]
    assert failures["127.44.32.14"][0] == "partial success"
    assert rows["127.44.32.14"]["done"] == ["set boot override Pxe (next boot)"]
    assert "reset" in failures["127.44.32.14"][1]
    assert len(failures) == 5
    assert PASSWORD not in result.output
    # every session kpc opened was closed again
    wait_for(
        lambda: [e["sessions"] for e in good.events() if e["action"] == "session"][-1] == 0,
        5, "sessions closed",
    )  # fmt: skip
    assert [e["action"] for e in hung.events()].count("reset_ignored") == 1
    hint = result.stderr
    assert "not supported:" in hint and "BMC busy:" in hint and "partial success:" in hint


@pytest.mark.parametrize("flags", [(), ("--no-sessions",)])
def test_virtual_media_insert_boot_and_eject(
    sims: Sims, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    sim = start(sims, "127.44.33.1", *flags, power="off")
    config = write_config(tmp_path, f"bmc: {{user: {USER}, protocol: redfish}}\n")
    env = {"KPC_BMC_PASSWORD": PASSWORD}
    url = "http://198.18.0.2:8080/assets/flatcar.iso"
    target = f"127.44.33.1:{PORT}"
    result = runner.invoke(
        app, ["-c", str(config), "bmc", "media", "insert", url, target, "--boot", "--yes",
              "--json"], env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["result"] == "media inserted; Cd boot: powered on"
    actions = [(e["action"], e.get("next_boot")) for e in sim.events() if e["action"] != "session"]
    assert actions == [("media_insert", None), ("bootdev", None), ("power_on", "cd")]
    result = runner.invoke(
        app, ["-c", str(config), "bmc", "media", "eject", target, "--yes", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["result"] == "ejected"
