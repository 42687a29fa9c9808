"""``kpc lab wait`` without a lab: when a powered-off server ends the wait early, and what
an operator reads about each late server (its power, its BMC's and QEMU's logs)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.drivers import netns
from appliance.lab.layout import LabPaths
from appliance.lab.plan import Server, make_plan
from appliance.lab.state import LabState
from appliance.lab.status import OffWatch, WaitProgress, server_report, wait_for_state
from appliance.lab.up import LabError
from appliance.state.model import Machine, MachineState
from tests.conftest import wait_for


def test_a_server_never_seen_on_and_never_booted_is_not_given_up() -> None:
    # the start of a lab flow: every server is off until 'kpc pxe-all' powers it on
    watch = OffWatch(grace=60)
    for now in (0.0, 100.0, 1000.0):
        assert not watch.observe("server1", "off", "unknown", "ready", now)


def test_a_server_seen_on_then_off_past_the_grace_is_given_up() -> None:
    watch = OffWatch(grace=60)
    assert not watch.observe("server1", "on", "unknown", "ready", 0.0)
    assert not watch.observe("server1", "off", "unknown", "ready", 10.0)  # a reset, maybe
    assert not watch.observe("server1", "off", "unknown", "ready", 69.0)
    assert watch.observe("server1", "off", "unknown", "ready", 70.0)


def test_a_booted_server_off_past_the_grace_is_given_up_without_being_seen_on() -> None:
    # 'installed' in the registry: it booted, installed and rebooted, and stayed off
    watch = OffWatch(grace=60)
    assert not watch.observe("server2", "off", "installed", "ready", 0.0)
    assert watch.observe("server2", "off", "installed", "ready", 60.0)


def test_power_on_or_the_wanted_state_starts_the_grace_again() -> None:
    watch = OffWatch(grace=60)
    assert not watch.observe("server1", "off", "installed", "ready", 0.0)
    assert not watch.observe("server1", "on", "installed", "ready", 50.0)  # rebooted
    assert not watch.observe("server1", "off", "installed", "ready", 60.0)
    assert not watch.observe("server1", "off", "installed", "ready", 119.0)
    assert watch.observe("server1", "off", "installed", "ready", 120.0)
    # a server in the wanted state may be off (waiting for 'installed', it powered off)
    assert not watch.observe("server3", "off", "installed", "installed", 0.0)
    assert not watch.observe("server3", "off", "installed", "installed", 500.0)


def test_a_bmc_that_does_not_answer_proves_nothing() -> None:
    watch = OffWatch(grace=60)
    assert not watch.observe("server1", None, "installed", "ready", 0.0)
    assert not watch.observe("server1", None, "installed", "ready", 1000.0)
    # ...and does not reset the grace of a server already seen off
    assert not watch.observe("server1", "off", "installed", "ready", 1000.0)
    assert not watch.observe("server1", None, "installed", "ready", 1030.0)
    assert watch.observe("server1", "off", "installed", "ready", 1060.0)


def test_servers_are_watched_apart() -> None:
    watch = OffWatch(grace=0)
    assert not watch.observe("server1", "off", "unknown", "ready", 0.0)
    assert watch.observe("server2", "off", "installing", "ready", 0.0)


@pytest.fixture
def lab(tmp_path: Path) -> LabState:
    plan = make_plan(2, "mixed", name="kpcu", network=99)
    state = LabState(directory=tmp_path, plan=plan, phase="up", firmware="mixed")
    for server in plan.servers:
        LabPaths(tmp_path).server(server).directory.mkdir(parents=True)
    return state


def _wait(
    lab: LabState,
    registry: dict[str, MachineState],
    power: Callable[[Server], str | None],
    timeout: float,
    progress: Callable[[WaitProgress], None] = lambda p: None,
    supervised: bool = True,
) -> LabError:
    """wait_for_state without sleeping: BMCs asked every round, no grace; its error."""
    machines = {mac: Machine(mac=mac, state=st) for mac, st in registry.items()}
    with pytest.raises(LabError) as caught:
        wait_for_state(
            lab,
            lambda: machines,
            want=MachineState.READY,
            timeout=timeout,
            progress=progress,
            interval=0,
            power=power,
            power_interval=0,
            off_grace=0,
            supervised=lambda: supervised,
        )
    return caught.value


def test_wait_gives_up_early_on_a_server_powered_off_for_good(lab: LabState) -> None:
    one, two = lab.plan.nodes
    bmc_log = LabPaths(lab.directory).server(two).bmc_log
    bmc_log.write_text(
        "10:01 kpc.bmc INFO server2: reset (guest): a new QEMU process\n"
        "10:01 kpc.bmc WARNING server2: could not start again after a reset: boom\n"
    )
    readings: Iterator[str] = iter(["on", "off", "off"])  # server2's BMC, asked in turn
    asked: list[str] = []

    def power(server: Server) -> str | None:
        asked.append(server.name)
        return next(readings) if server is two else "on"

    seen: list[WaitProgress] = []
    registry = {one.mac: MachineState.READY, two.mac: MachineState.INSTALLED}
    error = _wait(lab, registry, power, 3600, seen.append)
    assert asked == ["server2", "server2"]  # a ready server's BMC is not asked
    message, hint = error.message, error.hint or ""
    assert "1 of 2 lab servers are powered off" in message
    assert (
        f"server2 ({two.mac}, uefi) is installed; its BMC {two.bmc_address} says it is off"
        in message
    )
    assert "could not start again after a reset: boom" in message
    assert "the end of its QEMU log" not in message  # an empty log is left out
    assert f"kpc bmc power on {two.bmc_address}" in hint and "kpc pxe-all" in hint
    assert seen[0].power == {"server2": "on"} and seen[-1].power == {"server2": "off"}


def test_wait_does_not_give_up_on_servers_that_were_never_on(lab: LabState) -> None:
    error = _wait(lab, {}, lambda server: "off", 0)
    assert "2 of 2 lab servers are not ready after 0s" in error.message


def test_the_report_of_a_late_server_has_its_power_and_logs(lab: LabState) -> None:
    server = lab.plan.nodes[0]
    sp = LabPaths(lab.directory).server(server)
    sp.serial_log.write_text("iPXE 1.21\nkpc-install: writing the image\n")
    sp.bmc_log.write_text("".join(f"bmc line {i}\n" for i in range(20)) + "x" * 500 + "\n")
    sp.qemu_log.write_text(
        "qemu-system-x86_64: terminating on signal 15\n"
        "qemu-system-x86_64: -fw_cfg name=etc/sercon-port,file=/x/sercon.bin: warning: "
        'externally provided fw_cfg item names should be prefixed with "opt/"\n'
    )
    report = server_report(lab, server, "installing", "on")
    assert f"is installing; its BMC {server.bmc_address} says it is on" in report
    assert "its console said: kpc-install: writing the image" in report
    assert "bmc line 19" in report and "bmc line 15" not in report  # the last few lines
    assert "x" * 199 + "…" in report and "x" * 200 not in report  # long lines cut
    assert "terminating on signal 15" in report and "fw_cfg" not in report  # noise left out
    silent = server_report(lab, lab.plan.nodes[1], "unknown", None)
    assert "does not answer" in silent and "(its serial log is empty)" in silent
    assert "BMC log" not in silent and "QEMU log" not in silent


def test_wait_gives_up_at_once_when_the_labs_supervisor_is_gone(lab: LabState) -> None:
    asked: list[Server] = []
    error = _wait(lab, {}, lambda server: asked.append(server) or "on", 3600, supervised=False)
    assert "the lab's supervisor is not running" in error.message
    assert "resumes it" in (error.hint or "") and asked == []


def test_a_zombie_process_counts_as_gone() -> None:
    # a lab supervisor killed under an init that does not reap it stays a zombie: 'kpc lab
    # up' must still see it gone (and resume the lab), not take it for a running one
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert netns.process_start_time(child.pid) is not None
        child.kill()  # not reaped yet: a zombie until wait()

        def zombie() -> bool:
            stat = Path(f"/proc/{child.pid}/stat").read_text()
            return stat.rsplit(")", 1)[-1].split()[0] == "Z"

        wait_for(zombie, 10, "the killed sleep to become a zombie")
        assert netns.process_start_time(child.pid) is None
    finally:
        child.kill()
        child.wait()
