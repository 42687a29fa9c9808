"""Readiness checks of a node: the commands kpc runs over SSH and pure parsers of their output.

One probe script (POSIX sh: it must work with bash on Flatcar and busybox ash in the lab)
prints each check's output between markers with its exit code, so one SSH channel answers
every check. The clock is read on a channel of its own, timed from the deploy host.
Nothing here does I/O; ``evaluate`` turns raw output into check results under a ``Policy``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MARK = "@@kpc-probe"
EXIT_NOT_FOUND = 127  # POSIX shells: command not found
EXIT_TIMED_OUT = 124  # coreutils timeout(1)
DOCKER_WAIT = 45  # seconds the probe lets `docker version` wait for the daemon (a socket-
# activated dockerd on a node that just booted, restarting its containers, took over 20 s)
GIB = 1024**3


class Check(StrEnum):
    OS = "os"
    DOCKER = "docker"
    PYTHON = "python"
    CLOCK = "clock"
    DISK = "disk"


class Status(StrEnum):
    OK = "ok"
    FAIL = "fail"  # failed and required: the node is not fit
    WARN = "warn"  # failed, but the policy does not require this check


@dataclass(frozen=True)
class Policy:
    """What a fit node must satisfy. ``required`` names the checks whose failure makes a
    node unfit; others are still run and shown (as warnings)."""

    required: frozenset[Check] = frozenset(Check)
    min_free_bytes: int = 20 * GIB
    max_clock_offset: float = 1.0  # seconds, beyond the measurement's own uncertainty
    min_python: tuple[int, int] = (3, 8)


@dataclass(frozen=True)
class CheckResult:
    check: Check
    status: Status
    summary: str  # short, for a table cell
    detail: str = ""  # why it failed, for the operator
    data: Mapping[str, Any] = field(default_factory=dict)  # for --json

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": str(self.status), "summary": self.summary}
        if self.detail:
            out["detail"] = self.detail
        out.update(self.data)
        return out


# `docker version` can hang on a wedged daemon: bound it when timeout(1) exists.
PROBE_SCRIPT = f"""\
s() {{ printf '\\n{MARK} begin %s\\n' "$1"; }}
e() {{ printf '\\n{MARK} end %s\\n' "$1"; }}
if command -v timeout >/dev/null 2>&1; then T="timeout {DOCKER_WAIT}"; else T=""; fi
s os; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>&1; e $?
s python; {{ python3 --version || python --version; }} 2>&1; e $?
s docker-client; docker --version 2>&1; e $?
s docker-server; $T docker version --format '{{{{.Server.Version}}}}' 2>&1; e $?
s disk; d=/var/lib/docker; [ -d "$d" ] || d=/; df -Pk "$d" 2>&1; e $?
"""

CLOCK_READY = "kpc-clock-ready"
# One channel per node: the login shell prints CLOCK_READY and waits for a line; kpc sends a
# newline and times the node's `date` answer from the deploy host (so the shell's start-up is
# not counted); then `sh -s` runs PROBE_SCRIPT, which follows the newline on stdin.
PROBE_COMMAND = f"echo {CLOCK_READY}; read _; date +%s.%N; exec sh -s"


@dataclass(frozen=True)
class Section:
    output: str
    exit_code: int


def parse_sections(text: str) -> dict[str, Section]:
    """Split probe output into named sections. Text outside markers (login banners, shell
    start-up noise) is ignored; a section without an end marker is left out."""
    sections: dict[str, Section] = {}
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if not line.startswith(MARK + " "):
            if name is not None:
                lines.append(line)
            continue
        words = line.split()
        if len(words) == 3 and words[1] == "begin":
            name, lines = words[2], []
        elif len(words) == 3 and words[1] == "end" and name is not None:
            try:
                code = int(words[2])
            except ValueError:
                code = -1
            sections[name] = Section("\n".join(lines).strip(), code)
            name = None
    return sections


def parse_os_release(text: str) -> dict[str, str]:
    """os-release(5) assignments, with shell quoting removed."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = re.sub(r"\\(.)", r"\1", value)
    return values


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _missing(check: Check, policy: Policy, what: str) -> CheckResult:
    return _failed(check, policy, "unknown", f"the probe did not report {what}")


def _failed(
    check: Check, policy: Policy, summary: str, detail: str, data: Mapping[str, Any] | None = None
) -> CheckResult:
    status = Status.FAIL if check in policy.required else Status.WARN
    return CheckResult(check, status, summary, detail, data or {})


def check_os(section: Section | None, policy: Policy) -> CheckResult:
    if section is None:
        return _missing(Check.OS, policy, "the OS")
    info = parse_os_release(section.output) if section.exit_code == 0 else {}
    name = info.get("NAME") or info.get("ID")
    if not name:
        return _failed(
            Check.OS, policy, "unknown", "no /etc/os-release or /usr/lib/os-release on the node"
        )
    version = info.get("VERSION_ID") or info.get("VERSION") or info.get("BUILD_ID") or ""
    data = {"name": name, "id": info.get("ID", ""), "version": version}
    short = f"{info.get('ID') or name} {version}".strip()
    return CheckResult(Check.OS, Status.OK, short, data=data)


PYTHON_RE = re.compile(r"Python (\d+)\.(\d+)(?:\.(\d+))?\S*")


def check_python(section: Section | None, policy: Policy) -> CheckResult:
    if section is None:
        return _missing(Check.PYTHON, policy, "Python")
    match = PYTHON_RE.search(section.output)
    if section.exit_code == EXIT_NOT_FOUND or match is None:
        return _failed(
            Check.PYTHON,
            policy,
            "absent",
            "no python3 (or python) on the node's PATH; kolla-ansible needs Python on every node",
        )
    version = match.group(0).removeprefix("Python ")
    major, minor = int(match.group(1)), int(match.group(2))
    if (major, minor) < policy.min_python:
        need = ".".join(str(p) for p in policy.min_python)
        return _failed(
            Check.PYTHON,
            policy,
            version,
            f"Python {version} is too old (need {need} or newer)",
            {"version": version},
        )
    return CheckResult(Check.PYTHON, Status.OK, version, data={"version": version})


DOCKER_CLIENT_RE = re.compile(r"[Dd]ocker version ([0-9][^\s,]*)")


def check_docker(client: Section | None, server: Section | None, policy: Policy) -> CheckResult:
    if client is None or server is None:
        return _missing(Check.DOCKER, policy, "Docker")
    if client.exit_code == EXIT_NOT_FOUND:
        return _failed(
            Check.DOCKER,
            policy,
            "absent",
            "docker is not installed (not on the login user's PATH)",
            {"installed": False, "running": False},
        )
    match = DOCKER_CLIENT_RE.search(client.output)
    client_version = match.group(1) if match else ""
    answer = _first_line(server.output)
    if server.exit_code == 0 and answer and re.fullmatch(r"[0-9][\w.+~-]*", answer):
        data = {"installed": True, "running": True, "client": client_version, "server": answer}
        return CheckResult(Check.DOCKER, Status.OK, answer, data=data)
    data = {"installed": True, "running": False, "client": client_version}
    if server.exit_code in (EXIT_TIMED_OUT, 143):
        why = f"the Docker daemon did not answer within {DOCKER_WAIT}s"
    elif "permission denied" in server.output.lower():
        why = f"the login user may not use the Docker daemon: {answer}"
    else:
        why = f"the Docker daemon is not running: {answer or f'exit code {server.exit_code}'}"
    return _failed(Check.DOCKER, policy, "stopped", why, data)


def check_disk(section: Section | None, policy: Policy) -> CheckResult:
    """``df -Pk`` of Docker's data directory (where Kolla's images go; ``/`` when there is
    none yet): POSIX format, sizes in 1024-byte blocks."""
    if section is None:
        return _missing(Check.DISK, policy, "free space")
    rows = [line.split() for line in section.output.splitlines() if line.strip()]
    data_rows = [r for r in rows[1:] if len(r) >= 6 and r[3].isdigit() and r[1].isdigit()]
    if section.exit_code != 0 or not data_rows:
        return _failed(
            Check.DISK,
            policy,
            "unknown",
            f"cannot read free space on /: {_first_line(section.output) or 'no df output'}",
        )
    row = data_rows[-1]
    total, free = int(row[1]) * 1024, int(row[3]) * 1024
    where = row[5]  # the mount point that holds it
    data = {"free_bytes": free, "total_bytes": total}
    summary = format_bytes(free)
    if free < policy.min_free_bytes:
        need = format_bytes(policy.min_free_bytes)
        return _failed(
            Check.DISK,
            policy,
            summary,
            f"only {format_bytes(free)} free on {where}, need {need}",
            data,
        )
    return CheckResult(Check.DISK, Status.OK, summary, data=data)


@dataclass(frozen=True)
class ClockSample:
    """``date +%s.%N`` on the node, between two readings of the deploy host's clock (None
    when the node never got that far)."""

    output: str
    exit_code: int
    sent: float | None
    received: float | None


def parse_remote_time(text: str) -> tuple[float, float] | None:
    """(seconds, resolution) from ``date +%s.%N``. Dates without %N (busybox) print the
    directive literally: whole seconds then, with a resolution of one second."""
    line = _first_line(text)
    match = re.fullmatch(r"(\d+)(?:\.(\S*))?", line)
    if match is None:
        return None
    seconds = int(match.group(1))
    frac = match.group(2) or ""
    if frac.isdigit():
        return seconds + int(frac) / 10 ** len(frac), 10.0 ** -len(frac)
    return seconds + 0.5, 1.0  # the true time lies anywhere in that second


def check_clock(sample: ClockSample | None, policy: Policy) -> CheckResult:
    if sample is None:
        return _missing(Check.CLOCK, policy, "its clock")
    parsed = parse_remote_time(sample.output) if sample.exit_code == 0 else None
    if parsed is None or sample.sent is None or sample.received is None:
        return _failed(
            Check.CLOCK,
            policy,
            "unknown",
            f"cannot read the node's clock: {_first_line(sample.output) or 'no output'}",
        )
    remote, resolution = parsed
    offset = remote - (sample.sent + sample.received) / 2
    uncertainty = (sample.received - sample.sent) / 2 + resolution / 2
    data = {"offset_s": round(offset, 6), "uncertainty_s": round(uncertainty, 6)}
    summary = f"{offset:+.3f}s"
    if abs(offset) - uncertainty > policy.max_clock_offset:
        return _failed(
            Check.CLOCK,
            policy,
            summary,
            f"the node's clock is {offset:+.3f}s off the deploy host's "
            f"(allowed {policy.max_clock_offset:g}s); run NTP/chrony on both",
            data,
        )
    return CheckResult(Check.CLOCK, Status.OK, summary, data=data)


def clock_sample(output: str, sent: float | None, received: float | None) -> ClockSample:
    """The clock answer: the first line printed after CLOCK_READY (None times: never
    ready)."""
    return ClockSample(_first_line(output), 0 if sent is not None else -1, sent, received)


def evaluate(probe_output: str, clock: ClockSample | None, policy: Policy) -> list[CheckResult]:
    """Every check's result, in table order."""
    sections = parse_sections(probe_output)
    return [
        check_os(sections.get("os"), policy),
        check_docker(sections.get("docker-client"), sections.get("docker-server"), policy),
        check_python(sections.get("python"), policy),
        check_clock(clock, policy),
        check_disk(sections.get("disk"), policy),
    ]


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"
