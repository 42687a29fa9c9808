"""Interrupting a parallel run (Ctrl-C) stops the commands still running on other nodes."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.drivers.ssh import Credentials, SshError, SshFailure, connect, load_private_key
from appliance.nodes.access import SshSettings
from appliance.nodes.execute import ExecOutcome, exec_nodes
from appliance.nodes.targets import Target
from tests.conftest import require_root, require_tool, wait_for
from tests.nodes.sshd import SshdFarm

# Ends at once on .201. Elsewhere: prints one tick, then a quiet loop named by a marker
# (its $0, visible in /proc/PID/cmdline on this host) runs until something stops it. It
# writes nothing more, so no SIGPIPE ends it when kpc hangs up: kpc itself must stop it.
MARKER = f"kpc-cancel-{uuid.uuid4().hex}"
COMMAND = (
    'case "$SSH_CONNECTION" in *" 127.0.7.201 "*) exit 0;; esac; '
    f"echo tick; exec sh -c 'while :; do sleep 0.1; done' {MARKER}"
)


def remote_loops() -> list[int]:
    """PIDs of the commands started on the test's nodes, still running."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if MARKER.encode() in argv:
            pids.append(int(proc.name))
    return pids


def node_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kpc-node")]


def test_interrupt_stops_running_commands(
    farm: SshdFarm, client_keys: dict[str, Path], settings: SshSettings
) -> None:
    # as on a real node, an unprivileged login (OpenSSH signals only those sessions)
    fast = farm.start("127.0.7.201", [client_keys["good"]], login="nobody")
    slow = farm.start("127.0.7.202", [client_keys["good"]], login="nobody")
    settings = replace(settings, credentials=replace(settings.credentials, user="nobody"))
    targets = [Target("52:54:00:07:02:01", fast.address), Target("52:54:00:07:02:02", slow.address)]
    ticks = threading.Event()

    def on_line(target: Target, stream: str, line: str) -> None:
        if line == "tick":
            ticks.set()

    running: list[int] = []

    def on_result(outcome: ExecOutcome) -> None:
        assert outcome.target.address == fast.address
        assert ticks.wait(30), "the slow node's command never started"
        running.extend(wait_for(remote_loops, 30, "the slow node's command to run"))  # type: ignore[arg-type]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        exec_nodes(targets, settings, COMMAND, timeout=600, on_line=on_line, on_result=on_result)
    assert running, "the slow node's command never ran"
    # the command on the node stops (kpc does not merely stop waiting for it) ...
    wait_for(lambda: not remote_loops(), 30, "the command on the slow node to stop")
    # ... and the slow node's worker ends: not after the 600 s timeout
    wait_for(lambda: not node_threads(), 30, "the worker threads to end")


@pytest.mark.parametrize("lab_like", [False, True], ids=["openssh", "dropbear"])
def test_a_command_past_its_timeout_is_stopped_on_the_node(
    farm: SshdFarm, client_keys: dict[str, Path], lab_like: bool
) -> None:
    if lab_like:  # the virtual lab's nodes: dropbear, root
        require_root()
        require_tool("dropbear", "dropbearkey", "unshare", "busybox")
        server = farm.start_lab_like("127.0.7.203", [client_keys["good"]])
        user = "root"
    else:
        server = farm.start("127.0.7.204", [client_keys["good"]], login="nobody")
        user = "nobody"
    quiet = f"echo started; exec sh -c 'while :; do sleep 0.1; done' {MARKER}"
    running: list[int] = []

    def started(stream: str, line: str) -> None:
        if line == "started":
            running.extend(wait_for(remote_loops, 4, "the command to run"))  # type: ignore[arg-type]

    with connect(
        server.address,
        server.port,
        Credentials(user, (load_private_key(client_keys["good"]),)),
        known_host_key=None,
        timeout=10,
    ) as session:
        with pytest.raises(SshError) as caught:
            session.run(quiet, timeout=5, on_output=started)
        assert caught.value.kind is SshFailure.TIMEOUT
        assert running, "the command never ran"
        wait_for(lambda: not remote_loops(), 30, "the timed-out command to stop on the node")
