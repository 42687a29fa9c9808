"""The lab's long-running processes, kept by one supervisor process per lab.

``kpc lab up`` starts the supervisor (``kpc lab supervise``) and returns; the supervisor
starts the site router (dnsmasq and chrony in the router namespace) and one simulated BMC per server
(in the BMC namespace), waits on them, restarts one that dies, and on SIGTERM stops the
BMCs (which power their VMs off) and then the router. Every process stays a child of
the one that started it, so nothing is left unreaped; its children get SIGTERM if it dies
(but dnsmasq, which changes its user, does not: ``kpc lab up`` stops it when it resumes
the lab).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from appliance.drivers import netns
from appliance.drivers.netns import Child
from appliance.errors import ConfigError
from appliance.inputfile import MAX_STATE_BYTES, read_text
from appliance.lab import render
from appliance.lab.layout import LabPaths
from appliance.lab.state import load_state

log = logging.getLogger("kpc.lab.supervisor")

MAX_RESTARTS = 3
POLL_INTERVAL = 0.5
BMC_USER = "admin"
STOP_TIMEOUT = 20.0


@dataclass
class Managed:
    role: str
    argv: list[str]
    netns: str | None
    log_file: Path
    child: Child | None = None
    restarts: int = 0
    next_start: float = 0.0
    gave_up: bool = field(default=False)


def managed_processes(directory: Path, python: str) -> list[Managed]:
    state = load_state(directory)
    if state is None:
        raise ConfigError(f"no lab in {directory} (no lab.json)")
    plan, paths = state.plan, LabPaths(directory)
    out = [
        Managed(
            "router",
            render.router_argv(plan, paths.router_leases, paths.router_log),
            plan.router_ns,
            paths.logs / "router.out",
        ),
        Managed(
            "ntp", render.ntp_argv(plan, paths.ntp_pid), plan.router_ns, paths.logs / "ntp.log"
        ),
    ]
    for server in plan.servers:
        sp = paths.server(server)
        argv = render.sim_argv(python, server, BMC_USER, paths.bmc_password, sp.spec)
        out.append(Managed(f"bmc:{server.name}", argv, plan.bmc_ns, sp.bmc_log))
    for i, (host, _, _) in enumerate(plan.etcd_members):
        name = render.etcd_name(plan, i)
        argv = render.etcd_argv(plan, i, paths.etcd / name)
        # the first deploy host is this host itself; the second lives in its namespace
        where = None if host == 1 else plan.host2_ns
        out.append(Managed(f"etcd:{name}", argv, where, paths.logs / f"{name}.log"))
    return out


def _write_record(paths: LabPaths, managed: list[Managed]) -> None:
    data = {
        "pid": os.getpid(),
        "start_time": netns.process_start_time(os.getpid()),
        "children": {
            m.role: m.child.pid for m in managed if m.child is not None and m.child.running()
        },
        "gave_up": [m.role for m in managed if m.gave_up],
    }
    tmp = paths.supervisor.with_name(".supervisor.json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(paths.supervisor)


def read_record(paths: LabPaths) -> dict[str, object] | None:
    try:
        data = json.loads(
            read_text(paths.supervisor, what="supervisor record", limit=MAX_STATE_BYTES)
        )
    except (OSError, ValueError, ConfigError):
        return None
    return data if isinstance(data, dict) else None


def _lab_gone(directory: Path) -> bool:
    try:
        state = load_state(directory)
    except ConfigError:
        return False
    return state is None or state.phase == "stopping"


def _start(m: Managed) -> None:
    log.info("starting %s: %s", m.role, " ".join(m.argv))
    m.child = netns.spawn(m.argv, netns=m.netns, log_file=m.log_file)


def supervise(directory: Path, stop: threading.Event) -> None:
    """Run the lab's processes until ``stop`` is set, then stop them all."""
    paths = LabPaths(directory)
    managed = managed_processes(directory, sys.executable)
    paths.logs.mkdir(parents=True, exist_ok=True)
    for m in managed:
        _start(m)
    _write_record(paths, managed)
    try:
        while not stop.wait(POLL_INTERVAL):
            if _lab_gone(directory):
                log.info("the lab is being removed (or its state file is gone): stopping")
                break
            changed = False
            now = time.monotonic()
            for m in managed:
                if m.gave_up or m.child is None:
                    continue
                code = m.child.poll()
                if code is None:
                    continue
                if m.next_start == 0.0:
                    log.error("%s exited with code %s (log: %s)", m.role, code, m.log_file)
                    if m.restarts >= MAX_RESTARTS:
                        log.error("%s failed %d times; not restarting it", m.role, m.restarts)
                        m.gave_up = True
                        changed = True
                        continue
                    m.next_start = now + min(2.0**m.restarts, 10.0)
                if now >= m.next_start:
                    m.restarts += 1
                    m.next_start = 0.0
                    _start(m)
                    changed = True
            if changed:
                _write_record(paths, managed)
    finally:
        _stop_all(managed)
        paths.supervisor.unlink(missing_ok=True)


def _stop_all(managed: list[Managed]) -> None:
    """BMCs first (each powers its VM off), then the router and etcd; SIGKILL what does not
    stop."""
    for group in (
        [m for m in managed if m.role.startswith("bmc:")],
        [m for m in managed if not m.role.startswith("bmc:")],
    ):
        for m in group:
            if m.child is not None:
                m.child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for m in group:
            if m.child is None:
                continue
            if m.child.wait(max(0.1, deadline - time.monotonic())) is None:
                log.warning("%s did not stop; killing it", m.role)
                m.child.stop(1.0)
            log.info("%s stopped", m.role)
