"""``kpc lab down``: remove every process, namespace, link, nftables table and file of a
lab, from its state file, also when ``kpc lab up`` was killed or crashed half-way.

What cannot be trusted is checked before it is touched: a recorded pid is signalled only
while its start time matches the record (so a recycled pid is left alone); processes are
otherwise found inside the lab's own namespaces; files are removed only under the names the
lab uses, and the directory only when nothing else is left in it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.drivers import netns
from appliance.lab import network
from appliance.lab.layout import LabPaths
from appliance.lab.plan import LabPlan
from appliance.lab.state import LabState, load_state, save_state, state_path
from appliance.lab.supervisor import read_record

Progress = Callable[[str], None]
SUPERVISOR_STOP_TIMEOUT = 40.0


@dataclass
class DownResult:
    found: bool
    stopped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def stop_pid(pid: int, start_time: int | None, what: str, result: DownResult) -> None:
    """SIGTERM ``pid`` while it is the process started at ``start_time`` (SIGKILL after
    SUPERVISOR_STOP_TIMEOUT), reap it if it is ours; noted in ``result``."""
    now = netns.process_start_time(pid)
    if now is None or (start_time is not None and now != start_time):
        netns.reap_if_child(pid)
        return
    netns.signal_process(pid, signal.SIGTERM)
    deadline = time.monotonic() + SUPERVISOR_STOP_TIMEOUT
    while netns.process_start_time(pid) == now and time.monotonic() < deadline:
        netns.reap_if_child(pid)
        time.sleep(0.1)
    if netns.process_start_time(pid) == now:
        result.problems.append(f"{what} (pid {pid}) did not stop in time; killed it")
        netns.signal_process(pid, signal.SIGKILL)
    netns.reap_if_child(pid)
    result.stopped.append(f"{what} (pid {pid})")


def _stop_supervisor(state: LabState, result: DownResult) -> None:
    candidates: dict[int, int | None] = {}
    for proc in state.processes():
        if proc.pid is not None:
            candidates[proc.pid] = proc.start_time
    rec = read_record(LabPaths(state.directory))
    if rec and isinstance(rec.get("pid"), int):
        start = rec.get("start_time")
        candidates.setdefault(int(str(rec["pid"])), int(str(start)) if start is not None else None)
    for pid, start in candidates.items():
        stop_pid(pid, start, "lab supervisor", result)


def _stop_stragglers(directory: Path, result: DownResult) -> None:
    """Processes outside the namespaces that still name the lab's directory in their
    arguments: a supervisor that was never recorded, an ipmitool of a killed 'lab up'."""
    for pid in netns.pids_naming(directory):
        stop_pid(pid, netns.process_start_time(pid), "lab process", result)


def _remove_files(paths: LabPaths, result: DownResult) -> None:
    for path in paths.owned():
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            result.problems.append(f"cannot remove {path}: {exc.strerror}")
    for leftover in paths.directory.glob(".lab.json.tmp"):
        leftover.unlink(missing_ok=True)
    state_path(paths.directory).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else lives there: not ours to remove
        paths.directory.rmdir()


def remove_plan(plan: LabPlan, result: DownResult, progress: Progress) -> None:
    """Processes inside the plan's namespaces, then its network."""
    pids = network.stop_namespace_processes(plan)
    if pids:
        result.stopped.append(f"{len(pids)} processes in the lab's namespaces")
    progress(
        f"removing namespaces {', '.join(plan.namespaces)} and links {', '.join(plan.host_links)}"
    )
    result.problems += network.delete_network(plan)


def lab_down(
    directory: Path,
    progress: Progress,
    *,
    stop_services: Callable[[Path], list[str]] | None = None,
) -> DownResult:
    """Remove the lab recorded in ``directory``. ``stop_services`` removes the service
    containers that ``kpc up`` started with the lab's config (it returns problems)."""
    directory = directory.absolute()
    state = load_state(directory)
    if state is None:
        return DownResult(found=False)
    result = DownResult(found=True)
    state.phase = "stopping"
    save_state(state)
    paths = LabPaths(directory)
    for host in range(1, state.plan.deploy_hosts + 1):
        config = paths.host_config(host)
        if stop_services is not None and config.is_file():
            progress(f"stopping the lab's service containers ({config.name})")
            result.problems += stop_services(config)
    progress("stopping the lab's supervisor (BMCs power their servers off), router and servers")
    _stop_supervisor(state, result)
    remove_plan(state.plan, result, progress)
    _stop_stragglers(directory, result)
    progress(f"removing the lab's files in {directory}")
    _remove_files(paths, result)
    return result
