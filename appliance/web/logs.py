"""Log files the web view shows: kolla runs and, in the lab, a server's serial console.

Kolla runs are kpc's own logs (``paths.log_dir/kolla/<time>-<step>.log``, written by
``kpc kolla``); their failed tasks are found by ``kolla.output.failures``, the same reader
the CLI uses. Only the end of a file is read for a tail; control characters are removed so
a console's escape sequences cannot reach the page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ConfigError
from appliance.kolla.output import TASK_RE, Failure, failures
from appliance.lab.vmspec import load_spec

RUN_RE = re.compile(r"^(?P<time>\d{8}T\d{6})-(?P<step>[a-z0-9-]+)\.log$")
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")
TAIL_BYTES = 64 * 1024
MAX_SCAN = 64 * 1024 * 1024  # failures are searched in at most this much of a run's log


@dataclass(frozen=True)
class Run:
    name: str  # the log's file name: its id in URLs
    step: str
    started: str  # YYYY-MM-DD HH:MM:SS
    path: Path


@dataclass(frozen=True)
class RunView:
    run: Run
    status: str  # "failed", "finished", "running or interrupted" (", with failed tasks")
    task: str  # the last task Ansible started
    failures: tuple[Failure, ...]
    tail: tuple[str, ...]
    size: int


def kolla_runs(log_dir: Path) -> list[Run]:
    """kpc's kolla runs, newest first."""
    directory = log_dir / "kolla"
    found = []
    try:
        names = [p.name for p in directory.iterdir()]
    except OSError:
        return []
    for name in names:
        m = RUN_RE.match(name)
        if m:
            t = m["time"]
            started = f"{t[0:4]}-{t[4:6]}-{t[6:8]} {t[9:11]}:{t[11:13]}:{t[13:15]}"
            found.append(Run(name, m["step"], started, directory / name))
    return sorted(found, key=lambda r: r.name, reverse=True)


def find_run(log_dir: Path, name: str) -> Run | None:
    return next((r for r in kolla_runs(log_dir) if r.name == name), None)


def clean(text: str) -> str:
    return ANSI_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def tail(path: Path, lines: int = 200, limit: int = TAIL_BYTES) -> tuple[list[str], int]:
    """The last ``lines`` lines of a file (from its last ``limit`` bytes) and its size."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - limit))
            data = handle.read(limit)
    except OSError:
        return [], 0
    text = clean(data.decode("utf-8", "replace"))
    found = text.split("\n")
    if size > limit:
        found = found[1:]  # the first line is cut
    if found and found[-1] == "":
        found.pop()
    return found[-lines:], size


def view_run(run: Run, lines: int = 200) -> RunView:
    last, size = tail(run.path, lines)
    try:
        with run.path.open("r", encoding="utf-8", errors="replace") as handle:
            text = handle.read(MAX_SCAN)
    except OSError:
        text = ""
    all_lines = text.splitlines()
    task = ""
    recap = False
    for line in all_lines:
        m = TASK_RE.match(line)
        if m:
            task = m["task"]
        elif line.startswith("PLAY RECAP"):
            recap = True
    found = tuple(failures(all_lines))
    if recap:
        status = "failed" if found else "finished"
    else:
        status = "running or interrupted" + (", with failed tasks" if found else "")
    return RunView(run, status, task, found, tuple(last), size)


def console_log(servers_dir: Path | None, mac: str) -> Path | None:
    """The serial log of the lab server with this MAC (None outside the lab)."""
    if servers_dir is None:
        return None
    try:
        specs = sorted(servers_dir.glob("*/vm.json"))
    except OSError:
        return None
    for path in specs:
        try:
            spec = load_spec(path)
        except ConfigError:
            continue
        if spec.mac.lower() == mac:
            return spec.serial_log
    return None
