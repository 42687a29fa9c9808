"""``kpc lab status`` and ``kpc lab wait``: what the lab has, and whether its servers are
ready in kpc's machine registry."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from appliance.drivers import netns
from appliance.lab.layout import LabPaths
from appliance.lab.plan import Server
from appliance.lab.state import LabState, load_state
from appliance.lab.supervisor import read_record
from appliance.lab.up import BMC_USER, LabError, bmc_power_state
from appliance.state.model import Machine, MachineState

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class ServerStatus:
    server: Server
    power: str  # on, off, or "?" when its BMC does not answer
    machine: Machine | None
    serial: str  # the last meaningful line of its serial console

    @property
    def state(self) -> str:
        if self.machine:
            return self.machine.state.value
        return "live host" if self.server.role == "live" else "unknown"


@dataclass(frozen=True)
class LabStatus:
    state: LabState
    supervisor: int | None  # its pid when running
    children: Mapping[str, int]
    gave_up: tuple[str, ...]
    missing: tuple[str, ...]  # namespaces/links that should exist but do not
    servers: tuple[ServerStatus, ...]


def serial_tail(path: Path, lines: int = 15) -> list[str]:
    """The last ``lines`` printable lines of a serial log (escape sequences removed)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    out = [_ANSI.sub("", line).rstrip() for line in text.split("\n")]
    return [line for line in out if line.strip()][-lines:]


# What the servers' consoles say that an operator must see first: a failed Ignition run (the
# node OS's initramfs forwards errors to the console; when Ignition's own line does not come,
# systemd's line for the failed Ignition stage does), a failed install; then kpc's own lines.
_PROBLEMS = (
    "Ignition failed:",
    "Failed to start ignition-",
    "kpc-install: FAILED",
    "flatcar-install: error",
)
_OURS = ("kpc-labos:", "kpc-install:", "kpc-checkin:", "flatcar-install:")


def console_summary(lines: list[str]) -> str:
    """The one console line that says most about a server (pure)."""
    for marks in (_PROBLEMS, _OURS):
        found = [line for line in lines if any(mark in line for mark in marks)]
        if found:
            line = found[-1]
            starts = [line.find(m) for m in marks if m in line]
            return line[min(starts) :].strip()
    return (lines or [""])[-1].strip()


def is_problem(line: str) -> bool:
    """Whether a console summary reports a failure (Ignition's or the installer's)."""
    return line.startswith(_PROBLEMS)


def last_serial_line(path: Path) -> str:
    return console_summary(serial_tail(path, 200))


def require_lab(directory: Path) -> LabState:
    state = load_state(directory.absolute())
    if state is None:
        raise LabError(
            f"there is no lab in {directory}",
            hint="make one with 'kpc lab up --nodes 3', or point --dir at the lab's directory",
        )
    return state


def _supervisor_pid(state: LabState) -> tuple[int | None, dict[str, int], tuple[str, ...]]:
    rec = read_record(LabPaths(state.directory)) or {}
    pid = rec.get("pid")
    start = rec.get("start_time")
    if isinstance(pid, int) and netns.process_start_time(pid) == start:
        children = rec.get("children")
        gave_up = rec.get("gave_up")
        return (
            pid,
            {str(k): int(v) for k, v in children.items()} if isinstance(children, dict) else {},
            tuple(str(g) for g in gave_up) if isinstance(gave_up, list) else (),
        )
    return None, {}, ()


def lab_status(state: LabState, machines: Mapping[str, Machine]) -> LabStatus:
    plan, paths = state.plan, LabPaths(state.directory)
    missing = [f"namespace {ns}" for ns in plan.namespaces if not netns.netns_exists(ns)]
    missing += [f"link {link}" for link in plan.host_links if not netns.link_exists(link)]
    password = paths.bmc_password if paths.bmc_password.is_file() else None
    servers = []
    for server in plan.servers:
        power = (
            bmc_power_state(str(server.bmc_address), BMC_USER, password, protocol=server.bmc)
            if password
            else None
        )
        servers.append(
            ServerStatus(
                server=server,
                power=power or "?",
                machine=machines.get(server.mac),
                serial=last_serial_line(paths.server(server).serial_log),
            )
        )
    pid, children, gave_up = _supervisor_pid(state)
    return LabStatus(state, pid, children, gave_up, tuple(missing), tuple(servers))


@dataclass(frozen=True)
class WaitProgress:
    elapsed: float
    states: Mapping[str, str]  # server name -> registry state


def wait_for_state(
    state: LabState,
    machines: Callable[[], Mapping[str, Machine]],
    *,
    want: MachineState,
    timeout: float,
    progress: Callable[[WaitProgress], None],
    interval: float = 2.0,
) -> float:
    """Wait until every lab server is in state ``want``; the seconds it took.

    On timeout, LabError names each server that is not there, with its state and the tail
    of its serial console.
    """
    start = time.monotonic()
    last: dict[str, str] = {}
    while True:
        found = machines()
        states = {
            s.name: (found[s.mac].state.value if s.mac in found else "unknown")
            for s in state.plan.nodes  # a live host is never in kpc's registry
        }
        elapsed = time.monotonic() - start
        if states != last:
            progress(WaitProgress(elapsed, states))
            last = states
        if all(v == want.value for v in states.values()):
            return elapsed
        if elapsed > timeout:
            break
        time.sleep(interval)
    paths = LabPaths(state.directory)
    late = [s for s in state.plan.nodes if last.get(s.name) != want.value]
    blocks = []
    for server in late:
        serial = paths.server(server).serial_log
        tail = serial_tail(serial, 15)
        body = "\n".join(f"    {line}" for line in tail) or "    (its serial log is empty)"
        # the line that says why (a failed install or Ignition stage) may have scrolled out
        # of the tail by the time the wait gives up
        said = console_summary(serial_tail(serial, 200)) or "-"
        blocks.append(
            f"  {server.name} ({server.mac}, {server.firmware}) is {last.get(server.name)}; "
            f"its console said: {said}\n  the end of its serial log {serial}:\n{body}"
        )
    raise LabError(
        f"{len(late)} of {len(state.plan.nodes)} lab servers are not {want.value} after "
        f"{timeout:.0f}s:\n" + "\n".join(blocks),
        hint="see the serial logs above; 'kpc lab status' shows every server",
    )
