"""``kpc lab status`` and ``kpc lab wait``: what the lab has, and whether its servers are
ready in kpc's machine registry."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from appliance.drivers import netns
from appliance.lab import network
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
# node OS's emergency hook prints Ignition's error lines, "Ignition failed: ..." last, after
# systemd's line for the failed Ignition stage), a failed install; then kpc's own lines.
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


def bmc_power(state: LabState) -> Callable[[Server], str | None]:
    """A lab server's power as its BMC reports it (on/off; None: no answer, no password)."""
    password = LabPaths(state.directory).bmc_password

    def power(server: Server) -> str | None:
        if not password.is_file():
            return None
        return bmc_power_state(str(server.bmc_address), BMC_USER, password, protocol=server.bmc)

    return power


def lab_status(state: LabState, machines: Mapping[str, Machine]) -> LabStatus:
    plan, paths = state.plan, LabPaths(state.directory)
    missing = network.missing(plan)
    power = bmc_power(state)
    servers = []
    for server in plan.servers:
        servers.append(
            ServerStatus(
                server=server,
                power=power(server) or "?",
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
    power: Mapping[str, str] = field(default_factory=dict)  # name -> on/off/"?"


POWER_CHECK_INTERVAL = 10.0  # seconds between BMC power queries while waiting
OFF_GRACE = 60.0  # a reset or a reboot is off for seconds; this long off is for good
LOG_LINES = 5  # lines of a BMC's or QEMU's log in an error
LOG_LINE_CHARS = 200


@dataclass
class OffWatch:
    """Which lab servers are powered off for good while ``kpc lab wait`` waits (pure:
    power readings in, verdicts out).

    A powered-off lab server never checks in by itself, so waiting for it cannot help. But
    at the start of a lab flow every server is off until ``kpc pxe-all`` powers it on, and a
    reset or reboot is off for a moment: a server counts only once it was seen on in this
    wait, or its registry state shows it has booted, and only after ``grace`` seconds off.
    A BMC that does not answer proves nothing either way.
    """

    grace: float = OFF_GRACE
    seen_on: set[str] = field(default_factory=set)
    off_since: dict[str, float] = field(default_factory=dict)

    def observe(self, name: str, power: str | None, state: str, want: str, now: float) -> bool:
        """Record one reading of server ``name``; whether it is off for good."""
        if power == "on":
            self.seen_on.add(name)
            self.off_since.pop(name, None)
            return False
        if power != "off":
            return False
        if state == want or (state == "unknown" and name not in self.seen_on):
            self.off_since.pop(name, None)
            return False
        since = self.off_since.setdefault(name, now)
        return now - since >= self.grace


# what every lab server's QEMU log says, and means nothing (the lab's own fw_cfg item)
_NOISE = ("externally provided fw_cfg item names",)


def _short_tail(path: Path, lines: int = LOG_LINES) -> list[str]:
    tail = [line for line in serial_tail(path, 50) if not any(n in line for n in _NOISE)]
    return [
        line if len(line) <= LOG_LINE_CHARS else line[: LOG_LINE_CHARS - 1] + "…"
        for line in tail[-lines:]
    ]


def server_report(
    state: LabState, server: Server, registry_state: str, power: str | None, *, serial: int = 15
) -> str:
    """What an operator needs about one late lab server: its registry state and power as its
    BMC reports it, the console line that says why, the end of its serial log (``serial``
    lines, none with 0) and of its BMC's and QEMU's logs (those only when not empty)."""
    sp = LabPaths(state.directory).server(server)
    console = serial_tail(sp.serial_log, 200)
    # the line that says why (a failed install or Ignition stage) may have scrolled out of
    # the tail by the time the wait gives up
    said = console_summary(console) or "-"
    bmc = (
        f"its BMC {server.bmc_address} says it is {power}"
        if power
        else (f"its BMC {server.bmc_address} does not answer")
    )
    out = [
        f"  {server.name} ({server.mac}, {server.firmware}) is {registry_state}; {bmc}; "
        f"its console said: {said}"
    ]
    if serial:
        body = [f"    {line}" for line in console[-serial:]] or ["    (its serial log is empty)"]
        out += [f"  the end of its serial log {sp.serial_log}:", *body]
    for what, path in (("BMC", sp.bmc_log), ("QEMU", sp.qemu_log)):
        tail = _short_tail(path)
        if tail:
            out += [f"  the end of its {what} log {path}:", *(f"    {line}" for line in tail)]
    return "\n".join(out)


def wait_for_state(
    state: LabState,
    machines: Callable[[], Mapping[str, Machine]],
    *,
    want: MachineState,
    timeout: float,
    progress: Callable[[WaitProgress], None],
    interval: float = 2.0,
    power: Callable[[Server], str | None] | None = None,
    power_interval: float = POWER_CHECK_INTERVAL,
    off_grace: float = OFF_GRACE,
    supervised: Callable[[], bool] | None = None,
) -> float:
    """Wait until every lab server is in state ``want``; the seconds it took.

    Every ``power_interval`` seconds it asks the BMC of each server not there yet for its
    power (``power``: the lab's BMCs by default). It gives up early, with LabError, when a
    server has been off for ``off_grace`` seconds (``OffWatch``) or the lab's supervisor is
    not running (``supervised``: its record by default); on timeout, LabError names each
    server that is not there (``server_report``).
    """
    ask = power or bmc_power(state)
    alive = supervised or (lambda: _supervisor_pid(state)[0] is not None)
    watch = OffWatch(off_grace)
    start = time.monotonic()
    next_check = start
    last: dict[str, str] = {}
    powers: dict[str, str] = {}
    shown: tuple[dict[str, str], dict[str, str]] = ({}, {})
    while True:
        found = machines()
        states = {
            s.name: (found[s.mac].state.value if s.mac in found else "unknown")
            for s in state.plan.nodes  # a live host is never in kpc's registry
        }
        now = time.monotonic()
        elapsed = now - start
        last = states
        done = all(v == want.value for v in states.values())
        off: list[Server] = []
        if not done and now >= next_check:
            next_check = now + power_interval
            if not alive():
                raise LabError(
                    f"the lab's supervisor is not running: its simulated BMCs (which power "
                    f"the servers off as they stop) and its site router are gone, so no "
                    f"server in {state.directory} boots or checks in",
                    hint="'kpc lab up' with the lab's arguments resumes it (every disk kept, "
                    "every server off); then power the servers on (kpc bmc power on) and run "
                    "kpc lab wait again",
                )
            powers = {}
            for server in state.plan.nodes:
                if states[server.name] == want.value:
                    continue
                reading = ask(server)
                powers[server.name] = reading or "?"
                if watch.observe(server.name, reading, states[server.name], want.value, now):
                    off.append(server)
        if (states, powers) != shown:
            progress(WaitProgress(elapsed, states, powers))
            shown = (states, powers)
        if done:
            return elapsed
        if off:
            bmcs = " ".join(str(s.bmc_address) for s in off)
            raise LabError(
                f"{len(off)} of {len(state.plan.nodes)} lab servers are powered off "
                f"(for {off_grace:.0f}s or more) and not {want.value}: a powered-off lab "
                "server never checks in by itself, so waiting longer cannot help:\n"
                + "\n".join(server_report(state, s, states[s.name], "off", serial=0) for s in off),
                hint=f"its BMC's log above says what it did last; with the lab's KPC_CONFIG, "
                f"power it on ('kpc bmc power on {bmcs}') or install it again ('kpc pxe-all "
                f"{bmcs} --yes'), then run kpc lab wait again",
            )
        if elapsed > timeout:
            break
        time.sleep(interval)
    late = [s for s in state.plan.nodes if last.get(s.name) != want.value]
    blocks = [server_report(state, s, last.get(s.name, "unknown"), ask(s)) for s in late]
    raise LabError(
        f"{len(late)} of {len(state.plan.nodes)} lab servers are not {want.value} after "
        f"{timeout:.0f}s:\n" + "\n".join(blocks),
        hint="see the logs above; 'kpc lab status' shows every server",
    )
