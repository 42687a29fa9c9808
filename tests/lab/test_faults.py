"""The lab's faults and bad input, with real namespaces, QEMU and simulated BMCs:
idempotent 'lab up', clear refusals, a server that never checks in or is powered off while
'lab wait' waits, 'lab up' resuming a lab whose supervisor was killed (disks kept), and
'lab down' leaving nothing behind, also after 'kpc lab up' was killed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_root, wait_for
from tests.lab.conftest import (
    BMC_NET,
    NAME,
    SITE_NET,
    ipmi,
    kpc,
    leftovers,
    reap_children,
    up_args,
)

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.slow]


def test_lab_up_is_idempotent_resumes_refuses_clashes_and_names_a_late_server(
    lab_dir: Path, subreaper: None
) -> None:
    first = kpc(up_args(lab_dir, 1, "bios"))
    assert first.code == 0, first.output
    config = lab_dir / "kpc.yaml"
    assert f"export KPC_CONFIG={config}" in first.output

    again = kpc(up_args(lab_dir, 1, "bios"))
    assert again.code == 0 and "already up (nothing changed)" in again.output

    # the site's NTP server (chrony on the router, offered by its DHCP) answers an NTP
    # client that sets nothing (chronyd -Q), with this host's own clock
    def ntp_answers() -> bool:
        query = [
            *("chronyd", "-Q", "-t", "10"),
            f"server {SITE_NET}1 iburst maxsamples 1",
        ]
        asked = subprocess.run(query, capture_output=True, text=True)
        return asked.returncode == 0 and "System clock wrong by" in asked.stderr + asked.stdout

    wait_for(ntp_answers, 60, "the lab site's NTP server to answer")

    other = kpc(up_args(lab_dir, 2, "bios"))
    assert other.code != 0 and "a different lab is already up" in other.output

    clash = kpc(up_args(lab_dir.with_name("second"), 1, "bios"))
    assert clash.code != 0 and f"network namespace {NAME}-sw" in clash.output
    assert not lab_dir.with_name("second").exists()

    status = kpc(["lab", "status", "--dir", str(lab_dir)])
    assert status.code == 0, status.output
    assert "server1" in status.output and " off " in status.output
    assert "ntp, router and 1 of 1 BMCs running" in status.output
    narrow = kpc(["lab", "status", "--dir", str(lab_dir)], env={"COLUMNS": "80"})
    table = [line for line in narrow.output.splitlines() if line.startswith(("SERVER ", "server"))]
    table = [line for line in table if " console: " not in line]
    assert len(table) == 2, narrow.output  # the header and server1, one line each
    assert "…" not in narrow.output and max(map(len, table)) <= 80, narrow.output
    assert "server1 console: " in narrow.output  # the console line is never cut
    whole = kpc(["lab", "status", "--dir", str(lab_dir), "--json"])
    server = json.loads(whole.output[whole.output.index("{") :])["servers"][0]
    assert (server["name"], server["power"], server["mac"]) == (
        "server1",
        "off",
        "52:54:00:c6:12:01",
    )

    # kpc's services are not running: the server PXE boots into nothing and never checks in
    assert "Up/On" in ipmi(lab_dir, BMC_NET + "11", "power", "on")
    serial = lab_dir / "servers" / "server1" / "serial.log"
    wait_for(lambda: "iPXE" in serial.read_text(errors="replace"), 60, "iPXE on server1")
    late = kpc(["lab", "wait", "--dir", str(lab_dir), "--timeout", "5"])
    assert late.code == 1
    assert "server1 (52:54:00:c6:12:01, bios) is unknown" in late.output
    assert "the end of its serial log" in late.output and "iPXE" in late.output
    assert "; its console said: " in late.output
    assert f"its BMC {BMC_NET}11 says it is on" in late.output
    assert "the end of its BMC log" in late.output and "server1: power on" in late.output

    # server1 is powered off while 'kpc lab wait' waits: it gives up at the next BMC check
    # (every 10s; --off-grace 0 here), not at its timeout, and says why
    said = lab_dir.parent / "wait.err"
    with said.open("w") as err:
        waiting = subprocess.Popen(
            [
                *(sys.executable, "-m", "appliance", "lab", "wait", "--dir", str(lab_dir)),
                *("--timeout", "600", "--off-grace", "0"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        wait_for(lambda: "1 on (server1)" in said.read_text(), 60, "the wait to see server1 on")
        assert "Down/Off" in ipmi(lab_dir, BMC_NET + "11", "power", "off")
        wait_for(lambda: waiting.poll() is not None, 60, "kpc lab wait to give up")
    finally:
        waiting.kill()
        waiting.wait()
    gave_up = said.read_text()
    assert waiting.returncode == 1, gave_up
    assert "1 of 1 lab servers are powered off" in gave_up
    assert f"its BMC {BMC_NET}11 says it is off" in gave_up
    assert "server1: power off" in gave_up  # its BMC's log
    assert f"kpc bmc power on {BMC_NET}11" in gave_up

    # the supervisor dies (its router and BMCs with it): 'lab up' starts it again, keeps the
    # server's disk as it was, and leaves the server off
    disk = lab_dir / "servers" / "server1" / "disk.qcow2"
    before, content = disk.stat(), hashlib.sha256(disk.read_bytes()).hexdigest()
    kill_supervisor(lab_dir)
    stuck = kpc(["lab", "wait", "--dir", str(lab_dir), "--timeout", "600"])
    assert stuck.code == 1 and "the lab's supervisor is not running" in stuck.output
    resumed = kpc(up_args(lab_dir, 1, "bios"))
    assert resumed.code == 0, resumed.output
    assert "its supervisor is gone (killed?): starting it again" in resumed.output
    assert "1 simulated BMCs answer" in resumed.output
    assert "resumed: its supervisor" in resumed.output
    assert f"kpc bmc power on {BMC_NET}11" in resumed.output
    after = disk.stat()
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == content
    assert "Chassis Power is off" in ipmi(lab_dir, BMC_NET + "11", "power", "status")
    status = kpc(["lab", "status", "--dir", str(lab_dir)])
    assert status.code == 0 and "ntp, router and 1 of 1 BMCs running" in status.output

    # its BMC link is gone too: 'lab up' refuses, saying what is gone and what 'lab down' costs
    subprocess.run(["ip", "link", "del", f"{NAME}ab1"], check=True)
    kill_supervisor(lab_dir)
    broken = kpc(up_args(lab_dir, 1, "bios"))
    assert broken.code != 0 and "is up but broken: gone from this host: link " in broken.output
    assert f"{NAME}ab1" in broken.output and f"{NAME}ab0" not in broken.output
    assert "its supervisor (site router and BMCs) is not running" in broken.output
    assert "removes the lab and with it every server's disk" in broken.output
    assert disk.stat().st_ino == before.st_ino  # the refusal touched nothing

    down = kpc(["lab", "down", "--dir", str(lab_dir)])
    assert down.code == 0, down.output
    reap_children()
    assert leftovers(lab_dir) == []


def kill_supervisor(lab_dir: Path) -> None:
    """SIGKILL the lab's supervisor (a child of this test: 'kpc lab up' ran in-process)."""
    supervisor = json.loads((lab_dir / "supervisor.json").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)
    os.waitpid(supervisor, 0)


def test_lab_down_cleans_up_after_a_killed_lab_up(lab_dir: Path, subreaper: None) -> None:
    argv = [sys.executable, "-m", "appliance", *up_args(lab_dir, 2, "mixed")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def supervisor_recorded() -> bool:
        try:
            state = json.loads((lab_dir / "lab.json").read_text())
        except (OSError, ValueError):
            return False
        return any(r["kind"] == "process" for r in state["resources"])

    try:
        wait_for(supervisor_recorded, 120, "kpc lab up to start the lab's supervisor", alive=proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert leftovers(lab_dir), "the killed kpc lab up should have left a half-made lab"

    down = kpc(["lab", "down", "--dir", str(lab_dir)])
    assert down.code == 0, down.output
    reap_children()
    assert leftovers(lab_dir) == []
    again = kpc(["lab", "down", "--dir", str(lab_dir)])
    assert again.code == 0 and "nothing to do" in again.output


def test_lab_needs_a_usable_directory(tmp_path: Path) -> None:
    (tmp_path / "someone-elses-file").write_text("keep me")
    result = kpc(up_args(tmp_path, 1, "bios"))
    assert result.code == 2 and "is not empty and holds no lab" in result.output
    assert (tmp_path / "someone-elses-file").read_text() == "keep me"
    missing = kpc(["lab", "status", "--dir", str(tmp_path / "nothing")])
    assert missing.code == 1 and "there is no lab in" in missing.output


def test_missing_qemu_says_what_to_install(tmp_path: Path) -> None:
    require_root()
    empty = tmp_path / "bin"
    empty.mkdir()
    result = kpc(up_args(tmp_path / "lab", 1, "bios"), env={"PATH": str(empty)})
    assert result.code == 1
    assert "qemu-system-x86_64 is not installed" in result.output
    assert "apt-get install qemu-system-x86" in result.output
    assert not (tmp_path / "lab").exists()
