"""Run one command on many nodes in parallel: per node its exit status and output."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.drivers.ssh import SshError
from appliance.nodes.access import AccessError, SshSettings, failure_of, open_session
from appliance.nodes.report import Failure, HostKeyStatus
from appliance.nodes.runner import run_parallel
from appliance.nodes.targets import Target

# Called from worker threads, possibly at once: the callee serialises its own output.
LineCallback = Callable[[Target, str, str], None]  # (node, "stdout"|"stderr", line)


@dataclass(frozen=True)
class ExecOutcome:
    target: Target
    exit_status: int | None = None  # None when the command could not run to its end
    stdout: str = ""
    stderr: str = ""
    failure: Failure | None = None
    host_key: str | None = None
    host_key_status: HostKeyStatus = HostKeyStatus.UNKNOWN
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None and self.exit_status == 0

    @property
    def reason(self) -> str:
        if self.failure is not None:
            return f"{self.failure.kind}: {self.failure.message}"
        if self.exit_status != 0:
            return f"exit status {self.exit_status}"
        return ""


def join_command(words: Sequence[str]) -> str:
    """The remote command line. As with ssh(1), the words are joined with spaces and the
    node's shell interprets them, so quoting written for a local shell carries over."""
    return " ".join(words)


def exec_node(
    target: Target,
    settings: SshSettings,
    command: str,
    timeout: float,
    on_line: LineCallback | None,
    cancel: threading.Event | None = None,
) -> ExecOutcome:
    start = time.monotonic()
    try:
        session, key_status = open_session(target, settings, cancel)
    except AccessError as exc:
        return ExecOutcome(
            target,
            failure=exc.failure,
            host_key=exc.host_key.line if exc.host_key else None,
            host_key_status=exc.status,
            elapsed=time.monotonic() - start,
        )

    def line(stream: str, text: str) -> None:
        if on_line is not None:
            on_line(target, stream, text)

    with session:
        try:
            result = session.run(command, timeout=timeout, on_output=line)
        except SshError as exc:
            return ExecOutcome(
                target,
                failure=failure_of(exc),
                host_key=session.host_key.line,
                host_key_status=key_status,
                elapsed=time.monotonic() - start,
            )
    return ExecOutcome(
        target,
        exit_status=result.exit_status,
        stdout=result.stdout,
        stderr=result.stderr,
        host_key=session.host_key.line,
        host_key_status=key_status,
        elapsed=time.monotonic() - start,
    )


def exec_nodes(
    targets: Sequence[Target],
    settings: SshSettings,
    command: str,
    *,
    timeout: float | None = None,
    on_line: LineCallback | None = None,
    on_result: Callable[[ExecOutcome], None] | None = None,
) -> list[ExecOutcome]:
    """Run ``command`` on every target (at most ``settings.fanout`` at once)."""
    limit = timeout if timeout is not None else settings.command_timeout

    def done(_target: Target, outcome: ExecOutcome) -> None:
        if on_result is not None:
            on_result(outcome)

    cancel = threading.Event()
    try:
        return run_parallel(
            targets,
            lambda t: exec_node(t, settings, command, limit, on_line, cancel),
            settings.fanout,
            done,
        )
    except BaseException:
        cancel.set()  # interrupted: running commands stop waiting, threads end promptly
        raise


def key_sightings(
    outcomes: Sequence[ExecOutcome],
) -> list[tuple[Target, str | None, HostKeyStatus]]:
    return [(o.target, o.host_key, o.host_key_status) for o in outcomes]
