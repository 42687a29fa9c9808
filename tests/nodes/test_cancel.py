"""Interrupting a parallel run (Ctrl-C) stops the commands still running on other nodes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from appliance.nodes.access import SshSettings
from appliance.nodes.execute import ExecOutcome, exec_nodes
from appliance.nodes.targets import Target
from tests.conftest import wait_for
from tests.nodes.sshd import SshdFarm

# Ends at once on .201; elsewhere runs until kpc hangs up (then SIGPIPE ends it).
COMMAND = (
    'case "$SSH_CONNECTION" in *" 127.0.7.201 "*) exit 0;; esac; '
    "while :; do echo tick; sleep 0.1; done"
)


def node_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kpc-node")]


def test_interrupt_stops_running_commands(
    farm: SshdFarm, client_keys: dict[str, Path], settings: SshSettings
) -> None:
    fast = farm.start("127.0.7.201", [client_keys["good"]])
    slow = farm.start("127.0.7.202", [client_keys["good"]])
    targets = [Target("52:54:00:07:02:01", fast.address), Target("52:54:00:07:02:02", slow.address)]
    ticks = threading.Event()

    def on_line(target: Target, stream: str, line: str) -> None:
        if line == "tick":
            ticks.set()

    def on_result(outcome: ExecOutcome) -> None:
        assert outcome.target.address == fast.address
        ticks.wait(10)  # the slow node's command is running
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        exec_nodes(targets, settings, COMMAND, timeout=60, on_line=on_line, on_result=on_result)
    # the slow node's worker gives up within a poll interval, not after the 60 s timeout
    wait_for(lambda: not node_threads(), 5, "the worker threads to end")
    assert time.monotonic() - start < 10
