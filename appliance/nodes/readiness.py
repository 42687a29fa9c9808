"""Check nodes over SSH, in parallel: connect, read the clock, run the probe, evaluate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from appliance.drivers.ssh import SshError
from appliance.nodes.access import AccessError, SshSettings, failure_of, open_session
from appliance.nodes.checks import (
    CLOCK_READY,
    PROBE_COMMAND,
    PROBE_SCRIPT,
    Policy,
    clock_sample,
    evaluate,
)
from appliance.nodes.report import CheckReport, Failure, HostKeyStatus, NodeReport
from appliance.nodes.runner import run_parallel
from appliance.nodes.targets import Target

PROBE_FAILED = "probe failed"


def check_node(
    target: Target,
    settings: SshSettings,
    policy: Policy,
    cancel: threading.Event | None = None,
) -> NodeReport:
    """Every check of one node. Never raises for a node's failure: it is in the report."""
    start = time.monotonic()
    try:
        session, key_status = open_session(target, settings, cancel)
    except AccessError as exc:
        return NodeReport(
            target,
            failure=exc.failure,
            host_key=exc.host_key.line if exc.host_key else None,
            host_key_fingerprint=exc.host_key.fingerprint if exc.host_key else None,
            host_key_status=exc.status,
            elapsed=time.monotonic() - start,
        )
    key = session.host_key
    with session:
        try:
            reply = session.timed_reply(
                PROBE_COMMAND,
                ready=CLOCK_READY,
                timeout=settings.command_timeout,
                then=PROBE_SCRIPT.encode(),
            )
        except SshError as exc:
            return NodeReport(
                target,
                failure=failure_of(exc),
                host_key=key.line,
                host_key_fingerprint=key.fingerprint,
                host_key_status=key_status,
                elapsed=time.monotonic() - start,
            )
    if reply.sent is None:
        said = reply.output.strip().splitlines()[-1:] or ["no output"]
        return NodeReport(
            target,
            failure=Failure(
                PROBE_FAILED,
                f"{target.name}: the login shell did not run kpc's probe (exit status "
                f"{reply.exit_status}: {said[0][:200]})",
                f"the checks need a POSIX login shell for {settings.user}",
            ),
            host_key=key.line,
            host_key_fingerprint=key.fingerprint,
            host_key_status=key_status,
            elapsed=time.monotonic() - start,
        )
    sample = clock_sample(reply.output, reply.sent, reply.received)
    return NodeReport(
        target,
        host_key=key.line,
        host_key_fingerprint=key.fingerprint,
        host_key_status=key_status,
        checks=tuple(evaluate(reply.output, sample, policy)),
        elapsed=time.monotonic() - start,
    )


def check_nodes(
    targets: Sequence[Target],
    settings: SshSettings,
    policy: Policy,
    on_result: Callable[[NodeReport], None] | None = None,
) -> CheckReport:
    """Check every target, at most ``settings.fanout`` at once; reports in target order."""

    def done(_target: Target, report: NodeReport) -> None:
        if on_result is not None:
            on_result(report)

    cancel = threading.Event()
    try:
        reports = run_parallel(
            targets, lambda t: check_node(t, settings, policy, cancel), settings.fanout, done
        )
    except BaseException:
        cancel.set()  # interrupted: running probes stop waiting, threads end promptly
        raise
    return CheckReport(tuple(reports))


def key_sightings(report: CheckReport) -> list[tuple[Target, str | None, HostKeyStatus]]:
    return [(n.target, n.host_key, n.host_key_status) for n in report.nodes]
