"""Judging a service container's health, and waiting until services are ready.

``judge`` is pure: a container's inspected state in, a problem (or None) out. ``wait_ready``
polls: a service is ready when its container runs and its health command passes (``kpc up``
runs the command itself, so it need not wait for Docker's first health interval).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from appliance.drivers.docker import ContainerInfo, ContainerSpec, Docker
from appliance.errors import DockerError

LOG_LINES = 15
POLL_SECONDS = 0.5


class ServiceFailed(DockerError):
    """A service did not come up; the message names it and shows its last log lines."""

    def __init__(self, service: str, reason: str, log_tail: list[str]) -> None:
        message = f"service {service} is not healthy: {reason}"
        if log_tail:
            message += "\nits last log lines:\n" + "\n".join(f"  | {line}" for line in log_tail)
        super().__init__(message, hint=f"see more with 'kpc logs {service}' and 'kpc status'")
        self.service = service
        self.reason = reason
        self.log_tail = log_tail


def judge(info: ContainerInfo | None) -> str | None:
    """What is wrong with a service's container, or None if nothing (yet)."""
    if info is None:
        return "its container does not exist (run 'kpc up')"
    if info.restarting or (info.restart_count > 0 and not _healthy(info)):
        code = f"exit code {info.exit_code}, " if info.exit_code else ""
        count = info.restart_count
        return f"it keeps crashing ({code}{count} restart{'' if count == 1 else 's'})"
    if not info.running:
        return f"it is {info.status} (exit code {info.exit_code})"
    if info.health == "unhealthy":
        detail = (info.health_output or "").strip().splitlines()
        return "its health check fails" + (f": {detail[-1]}" if detail else "")
    return None


def _healthy(info: ContainerInfo) -> bool:
    return info.running and info.health in (None, "healthy")


@dataclass
class _Clock:
    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def wait_ready(
    docker: Docker,
    specs: Mapping[str, ContainerSpec],
    timeout: float,
    *,
    on_ready: Callable[[str, float], None] = lambda _s, _t: None,
    clock: _Clock | None = None,
) -> None:
    """Return when every service is ready; ServiceFailed on a crash or after ``timeout`` s."""
    clock = clock or _Clock()
    began = clock.now()
    pending = dict(specs)
    while pending:
        for service, spec in list(pending.items()):
            info = docker.container(spec.name)
            problem = judge(info)
            if problem is not None and (info is None or info.health != "unhealthy"):
                raise ServiceFailed(service, problem, _tail(docker, spec.name, info))
            health = spec.health
            ready = health is None or docker.exec_ok(spec.name, health.command, health.timeout)
            if ready:
                del pending[service]
                on_ready(service, clock.now() - began)
        if not pending:
            return
        if clock.now() - began > timeout:
            service, spec = next(iter(pending.items()))
            info = docker.container(spec.name)
            reason = judge(info) or "its health check has not passed yet"
            raise ServiceFailed(
                service,
                f"{reason}, after {timeout:.0f} s (services.health_timeout)",
                _tail(docker, spec.name, info),
            )
        clock.sleep(POLL_SECONDS)


def log_tail(docker: Docker, name: str, lines: int = LOG_LINES) -> list[str]:
    """The container's last non-blank log lines."""
    return [line for line in docker.logs(name, tail=lines * 2) if line.strip()][-lines:]


def _tail(docker: Docker, name: str, info: ContainerInfo | None) -> list[str]:
    return [] if info is None else log_tail(docker, name)
