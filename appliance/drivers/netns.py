"""Network namespaces, links and nftables through ``ip``, ``bridge`` and ``nft``; and
long-running child processes, optionally inside a namespace (``ip netns exec``).

Plain wrappers: each function runs one program through ``drivers/process`` (failures become
CommandFailed naming the command and its output) or one ``subprocess.Popen``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.drivers import process
from appliance.errors import ToolMissing

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
_PR_SET_PDEATHSIG = 1


def _ip(args: Sequence[str], netns: str | None = None, *, check: bool = True) -> str:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    return process.run(argv, check=check).stdout


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def netns_add(name: str) -> None:
    process.run(["ip", "netns", "add", name])
    _ip(["link", "set", "lo", "up"], name)


def netns_attach(name: str, pid: int) -> None:
    """Name the network namespace of process ``pid`` (a container's, say) ``name``."""
    process.run(["ip", "netns", "attach", name, str(pid)])
    _ip(["link", "set", "lo", "up"], name)


def netns_delete(name: str) -> None:
    process.run(["ip", "netns", "delete", name])


def netns_pids(name: str) -> list[int]:
    """Processes whose network namespace is ``name``."""
    out = process.run(["ip", "netns", "pids", name], check=False).stdout
    return [int(word) for word in out.split() if word.isdigit()]


def link_exists(name: str, netns: str | None = None) -> bool:
    result = process.run(
        ["ip", *(["-n", netns] if netns else []), "link", "show", "dev", name], check=False
    )
    return result.returncode == 0


def ipv4_addresses(netns: str | None = None) -> list[tuple[str, str]]:
    """(link, address/prefix) for every IPv4 address (of a namespace, default this one)."""
    out = _ip(["-j", "-4", "address", "show"], netns).strip()
    found: list[tuple[str, str]] = []
    for link in json.loads(out) if out else []:
        for info in link.get("addr_info", []):
            found.append((str(link.get("ifname")), f"{info['local']}/{info['prefixlen']}"))
    return found


def link_delete(name: str, netns: str | None = None) -> None:
    _ip(["link", "delete", "dev", name], netns)


def bridge_add(name: str, netns: str | None = None) -> None:
    """A bridge that forwards at once (no STP, no forwarding delay) and is up."""
    _ip(
        ["link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0"],
        netns,
    )
    _ip(["link", "set", name, "up"], netns)


def veth_add(name: str, peer: str, netns: str | None, peer_netns: str | None) -> None:
    """A veth pair: ``name`` in ``netns`` and ``peer`` in ``peer_netns`` (None: this one)."""
    args = ["link", "add", name, "type", "veth", "peer", "name", peer]
    if peer_netns:
        args += ["netns", peer_netns]
    _ip(args, netns)


def tap_add(name: str, netns: str | None = None) -> None:
    """A persistent tap device (QEMU attaches to it with ifname=, script=no)."""
    _ip(["tuntap", "add", "dev", name, "mode", "tap"], netns)


def link_set(
    name: str, netns: str | None = None, *, master: str | None = None, up: bool = True
) -> None:
    args = ["link", "set", "dev", name]
    if master:
        args += ["master", master]
    if up:
        args.append("up")
    _ip(args, netns)


def address_add(name: str, cidr: str, netns: str | None = None, *, nodad: bool = False) -> None:
    _ip(["address", "add", cidr, "dev", name, *(["nodad"] if nodad else [])], netns)


def sysctl_set(key: str, value: str, netns: str | None = None) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    if netns is None:
        Path(path).write_text(value, encoding="ascii")
    else:
        process.run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", f"{key}={value}"])


def nft_apply(ruleset: str) -> None:
    """Load an nftables ruleset (``nft -f -``) atomically."""
    process.run(
        ["nft", "-f", "-"], stdin=ruleset, hint="is nftables installed (apt-get install nftables)?"
    )


def nft_table_exists(family: str, name: str) -> bool:
    return process.run(["nft", "list", "table", family, name], check=False).returncode == 0


def nft_delete_table(family: str, name: str) -> None:
    process.run(["nft", "delete", "table", family, name])


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (from /proc), None if gone.

    With the pid it identifies one process for sure: a recycled pid has another start time.
    A zombie is gone too (it has exited; an init that does not reap it keeps its entry: a
    killed lab supervisor was taken for a running one).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19]) if len(fields) > 19 else None


def process_argv(pid: int) -> str:
    """``pid``'s command line, its arguments joined by spaces ("" if gone)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return ""
    return " ".join(arg.decode(errors="replace") for arg in argv)


def pids_naming(path: Path) -> list[int]:
    """Processes (other than this one) with ``path``, or a path under it, in their argv."""
    found: list[int] = []
    exact = str(path).encode()
    needle = exact + b"/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg == exact or needle in arg for arg in argv):
            found.append(int(entry.name))
    return found


def signal_process(pid: int, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig``; False when the process is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def reap_if_child(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (so it leaves no zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Child:
    """A program started by ``spawn``: ours to wait for."""

    argv: list[str]
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; always waits, so no zombie is left."""
        self.signal(signal.SIGTERM)
        code = self.wait(timeout)
        if code is None:
            self.signal(signal.SIGKILL)
            code = self.popen.wait()
        return code


def spawn(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    log_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    new_session: bool = False,
    die_with_parent: bool = True,
) -> Child:
    """Start ``argv`` (inside ``netns`` when given) in the background.

    Output goes to ``log_file`` (appended) or nowhere. With ``die_with_parent`` the child
    gets SIGTERM when the thread that started it ends, so only use it from a thread that
    lives as long as the child should (the main thread of a service process).
    """
    args = [str(a) for a in argv]
    if netns is not None:
        args = ["ip", "netns", "exec", netns, *args]
    if die_with_parent and threading.current_thread() is not threading.main_thread():
        die_with_parent = False
    out: Any = subprocess.DEVNULL
    handle = None
    if log_file is not None:
        handle = log_file.open("ab")
        out = handle
    log.debug("spawn: %s", " ".join(args))
    try:
        popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=new_session,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    except FileNotFoundError:
        raise ToolMissing(args[0]) from None
    finally:
        if handle is not None:
            handle.close()
    return Child(args, popen)
