"""How a simulated BMC hears why its QEMU ended, against a monitor socket that speaks QMP
(greeting, capabilities, an event, then closing as QEMU does when it ends).

The order that matters: QEMU sends SHUTDOWN and ends at once. A BMC that stopped reading
when it saw the process gone took a reset for an off, and the server never came back (a
UEFI lab server after its install reboot, in CI).

And what the BMC does when QEMU ends under it: a guest that powered itself off takes its
monitor along, so the BMC stops waiting for that monitor at once (an eject in CI timed out
the client while the BMC retried for 10 s)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.bmc.qemu_backend import QemuBackend
from appliance.drivers import netns
from appliance.drivers.qmp import Qmp, QmpError
from appliance.lab.vmspec import VmSpec, events_socket, media_file


def _spec(tmp_path: Path) -> VmSpec:
    return VmSpec(
        name="ev",
        firmware="bios",
        memory_mib=64,
        mac="52:54:00:c6:12:e1",
        netns=None,
        tap="none",
        disk=tmp_path / "disk.qcow2",
        serial_log=tmp_path / "serial.log",
        qmp_socket=tmp_path / "qmp.sock",
        qemu_log=tmp_path / "qemu.log",
    )


def _monitor(path: Path, events: list[dict[str, object]]) -> threading.Thread:
    """A one-client QMP monitor that sends ``events`` after the handshake, then closes."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
                conn.recv(4096)  # qmp_capabilities
                reply = [{"return": {}}, *events]
                conn.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in reply))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def ended() -> Iterator[netns.Child]:
    """A process that has already ended, as QEMU has by the time the BMC reads."""
    child = netns.spawn(["true"], die_with_parent=False)
    child.wait(10)
    assert not child.running()
    yield child


def test_a_reset_sent_just_before_qemu_ended_is_still_a_reset(
    tmp_path: Path, ended: netns.Child
) -> None:
    spec = _spec(tmp_path)
    shutdown = {"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-reset"}}
    server = _monitor(events_socket(spec), [shutdown])
    assert QemuBackend(spec)._shutdown_reason(ended) == "guest-reset"
    server.join(5)


def test_a_monitor_closed_without_shutdown_is_no_reset(tmp_path: Path, ended: netns.Child) -> None:
    spec = _spec(tmp_path)
    other = {"event": "RESUME", "data": {}}
    server = _monitor(events_socket(spec), [other])
    assert QemuBackend(spec)._shutdown_reason(ended) is None
    server.join(5)


def test_power_state_answers_while_a_start_holds_the_lock(tmp_path: Path) -> None:
    """A power on or a reset holds the lock while it waits seconds for a new QEMU's monitor;
    a power query waiting behind it timed out a lab wait in CI."""
    backend = QemuBackend(_spec(tmp_path))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with backend._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(5)
    answers: list[str] = []
    asker = threading.Thread(target=lambda: answers.append(backend.power_state()), daemon=True)
    asker.start()
    asker.join(5)
    release.set()
    holder.join(5)
    assert answers == ["off"]


def test_a_machine_between_two_processes_of_a_reset_is_on(
    tmp_path: Path, ended: netns.Child, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path)
    backend = QemuBackend(spec)
    shutdown = {"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-reset"}}
    server = _monitor(events_socket(spec), [shutdown])
    during: list[str] = []
    monkeypatch.setattr(
        backend, "_start_after_reset", lambda child, reason: during.append(backend.power_state())
    )
    backend._follow(ended)
    server.join(5)
    assert during == ["on"]
    assert backend.power_state() == "off"  # no new process was started here


def test_a_monitor_connect_stops_retrying_once_qemu_has_ended(tmp_path: Path) -> None:
    asked: list[bool] = []

    def alive() -> bool:
        asked.append(False)
        return False

    with pytest.raises(QmpError):
        Qmp.connect(tmp_path / "gone.sock", timeout=1.0, retry_for=600.0, alive=alive)
    assert asked == [False]  # one attempt, then it gave up: no waiting out retry_for


def test_eject_while_the_guest_powers_itself_off_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the race CI met: the server was running when eject looked, and its guest powered off
    # (QEMU ended, its monitor gone) before the BMC reached the monitor
    spec = _spec(tmp_path)
    backend = QemuBackend(spec)
    media = media_file(spec)
    media.write_bytes(b"iso")
    backend._media = media
    answers = iter([True])  # running at the first look, then off for good
    monkeypatch.setattr(backend, "_running", lambda: next(answers, False))
    backend.eject_media()
    assert backend._media is None and not media.exists()
