#!/usr/bin/env python3
"""How long kpc takes to provision the virtual lab, by OS, node count and firmware.

For each N in --nodes, each firmware in --firmware and each OS in --os (the busybox
stand-in and the Flatcar-shaped node OS, measured in the same run so both see the same
machine and load): make a lab (kpc lab up), start kpc's services (kpc up), discover the
BMCs, then time ``kpc pxe-all --yes`` until every server is ``ready`` in the registry
(installed, rebooted from disk, checked in); then remove the lab (kpc lab down).

Measured for every row, besides the wall time:
- memory: the peak of the summed RSS of the lab's QEMU processes (what the servers'
  guests really touched, plus QEMU's own), the largest single QEMU, the peak RSS of
  everything the lab runs (QEMU, simulated BMCs, site router, kpc's service containers),
  and how far the host's MemAvailable fell below its value before ``kpc lab up`` (the
  whole host: other users' work moves it too);
- CPU: the CPU seconds the QEMU processes used (load-independent: what emulating the
  servers cost), and the host's load average (at the start, the peak, at the end);
- per server, when each boot stage began: every line of each serial log is stamped with
  the time the benchmark first saw it (polled every 0.5 s), and the stages are found by the
  lines that mark them (firmware's iPXE, the boot script, the kernel, Ignition done, the
  image written, the reboot, the disk boot, the check-in), with the CPU seconds the
  server's QEMU had used by then; the registry's own ``installed``/``ready`` events end the
  list.

Baseline, measured in the same run: the busybox OS (the lab's default) for the same N and
firmware; and N QEMUs booting the busybox OS's kernel directly (QEMU -kernel/-initrd, no
firmware, no network, no install) to its first console line: the cost of booting at all
under TCG on this machine.

Run as root, from the checkout, with kpc's images built and the node OS built
(kpc lab build-os; otherwise the first node-OS row builds it):

    .venv/bin/python benchmarks/bench_lab.py --nodes 1 3 6 --firmware bios uefi \\
        --node-memory 1024 --json lab.json --out /tmp/bench-lab

Rows run N-major (N=1 BIOS, N=1 UEFI, N=3 ...), so a run stopped early still holds both
firmwares for the smaller N; --json is rewritten after every row. With
$KPC_TEST_LAB_SLOT=S the lab uses the names of slot S's hand-made labs (kpcmS, network
20+S, ports 8180+S / 5180+S). Prints a table. Never run by the tests or CI.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KPC = [sys.executable, "-m", "appliance"]
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
# a server that printed one of these will not become ready: end its row at once
FAILURE = re.compile(
    r"Kernel panic|Out of memory: Killed|invoked oom-killer|kpc-labos: FAILED:"
    r"|kpc-install: FAILED:|Ignition failed:|Reached target emergency\.target"
)
ESCAPES = re.compile(r"\x1b\[[0-9;?=]*[A-Za-z]|\x1b[()][A-Z0-9]")

# (stage, the serial line that marks its start). Looked for in order, each after the
# previous stage's line; a stage whose line never shows is skipped (None).
STAGES = {
    "node": [
        ("iPXE", r"iPXE 1\.0"),
        ("boot script", r"boot\.ipxe : "),
        ("PXE kernel", r"Linux version"),
        ("initramfs /init", r"Run /init as init process"),
        ("PXE Ignition done", r"Reached target ignition-complete\.target"),
        ("live root up", r"Welcome to kpc lab node OS"),
        ("kpc-install starts", r"kpc-install: installing"),
        ("image downloaded", r"flatcar-install: downloaded"),
        ("signature verified", r"flatcar-install: signature verified"),
        ("image written", r"flatcar-install: success"),
        ("reboot", r"reboot: Restarting system"),
        ("GRUB", r"Welcome to GRUB"),
        ("disk kernel", r"Linux version"),
        ("disk Ignition done", r"Reached target ignition-complete\.target"),
        ("disk root up", r"Welcome to kpc lab node OS"),
        ("kpc-checkin starts", r"Starting kpc-checkin\.service"),
    ],
    "busybox": [
        ("iPXE", r"iPXE 1\.0"),
        ("boot script", r"boot\.ipxe : "),
        ("installer up", r"kpc-labos: network:"),
        ("configs fetched", r"kpc-labos: writing "),
        ("image written", r"kpc-labos: storing the installed config"),
        ("install complete", r"kpc-labos: install complete"),
        ("disk OS up", r"kpc-labos: network:"),
        ("sshd up", r"kpc-labos: SSH server up"),
        ("checked in", r"kpc-labos: checked in"),
    ],
}


@dataclass(frozen=True)
class Lab:
    """The names a benchmark lab uses (a hand-made lab's, by slot, or kpcbench's)."""

    name: str
    network: int
    prefix: str
    bootcfg_port: int
    registry_port: int

    @classmethod
    def for_slot(cls, slot: str | None) -> Lab:
        if slot and slot.isdigit():
            n = int(slot)
            return cls(f"kpcm{n}", 20 + n, f"kpcm{n}", 8180 + n, 5180 + n)
        return cls("kpcbench", 12, "kpcbench", 8089, 5089)


class RowFailed(Exception):
    """One row of the benchmark did not finish (the run goes on with the next)."""


def kpc(args: list[str], config: Path | None = None, check: bool = True) -> str:
    env = dict(os.environ)
    if config is not None:
        env["KPC_CONFIG"] = str(config)
    proc = subprocess.run([*KPC, *args], capture_output=True, text=True, env=env, cwd=REPO)
    if check and proc.returncode != 0:
        raise SystemExit(f"kpc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(RSS KiB, CPU seconds) of a process, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # after the command: state is field 3, utime 14, stime 15, rss 24 (1-based, man 5 proc)
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    return int(fields[21]) * PAGE_KIB, cpu


def mem_available_kib() -> int:
    match = re.search(r"^MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
    return int(match.group(1)) if match else 0


def lab_pids(lab: Lab) -> list[int]:
    """Processes of the lab (by namespace) and of its containers (by container name)."""
    pids: list[int] = []
    for ns in (f"{lab.name}-sw", f"{lab.name}-rtr", f"{lab.name}-bmc"):
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        pids += [int(p) for p in out.stdout.split()]
    for service in ("dnsmasq", "bootcfg", "registry"):
        out = subprocess.run(
            ["docker", "top", f"{lab.prefix}-{service}", "-eo", "pid"],
            capture_output=True,
            text=True,
        )
        pids += [int(p) for p in out.stdout.split()[1:] if p.isdigit()]
    return pids


def qemu_server(pid: int) -> str | None:
    """The lab server a QEMU process runs (its -name), None for any other process."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if not argv or not argv[0].decode(errors="replace").endswith("qemu-system-x86_64"):
        return None
    for flag, value in itertools.pairwise(argv):
        if flag == b"-name":
            return value.decode(errors="replace")
    return None


class SerialWatch:
    """Stamps every line of one serial log with the time (since ``t0``) it was first seen."""

    def __init__(self, path: Path, t0: float) -> None:
        self.path, self.t0 = path, t0
        self.offset = 0
        self.partial = ""
        self.lines: list[tuple[float, str]] = []

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        if not data:
            return
        self.offset += len(data)
        now = time.monotonic() - self.t0
        text = self.partial + ESCAPES.sub("", data.decode(errors="replace"))
        parts = re.split(r"\r\n|\n|\r", text)
        self.partial = parts.pop()
        self.lines += [(now, line) for line in parts if line.strip()]

    def finish(self) -> None:
        self.poll()
        if self.partial.strip():
            self.lines.append((time.monotonic() - self.t0, self.partial))
            self.partial = ""


@dataclass
class Sample:
    peak_qemu_kib: int = 0
    peak_single_qemu_kib: int = 0
    peak_lab_kib: int = 0
    min_available_kib: int = 1 << 62
    peak_load: float = 0.0
    # per server: [(t, cpu seconds, rss KiB)]; the CPU of every QEMU process the server has
    # had (each reset starts a new one), summed
    series: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    # per server: each of its QEMU processes' CPU seconds at its last sample
    cpu_by_pid: dict[str, dict[int, float]] = field(default_factory=dict)


class Sampler(threading.Thread):
    def __init__(self, lab: Lab, servers: Path, t0: float) -> None:
        super().__init__(daemon=True)
        self.lab, self.t0 = lab, t0
        self.watches = {p.name: SerialWatch(p / "serial.log", t0) for p in servers.iterdir()}
        self.got = Sample()
        self.stop = threading.Event()
        self.qemus: dict[int, str] = {}
        self.pids: list[int] = []
        self.failure: str | None = None  # a serial line saying a server cannot go on

    def once(self, refresh: bool = True) -> None:
        now = time.monotonic() - self.t0
        if refresh or not self.pids:  # the lab's processes change rarely: list them every 5 s
            self.pids = lab_pids(self.lab)
        lab_total = 0
        qemu_total = 0
        for pid in self.pids:
            stat = proc_stat(pid)
            if stat is None:
                continue
            rss, cpu = stat
            lab_total += rss
            if pid not in self.qemus:
                self.qemus[pid] = qemu_server(pid) or ""
            name = self.qemus[pid]
            if name:
                qemu_total += rss
                self.got.peak_single_qemu_kib = max(self.got.peak_single_qemu_kib, rss)
                per_pid = self.got.cpu_by_pid.setdefault(name, {})
                per_pid[pid] = cpu
                self.got.series.setdefault(name, []).append((now, sum(per_pid.values()), rss))
        g = self.got
        g.peak_qemu_kib = max(g.peak_qemu_kib, qemu_total)
        g.peak_lab_kib = max(g.peak_lab_kib, lab_total)
        g.min_available_kib = min(g.min_available_kib, mem_available_kib())
        g.peak_load = max(g.peak_load, os.getloadavg()[0])

    def poll_serial(self) -> None:
        for name, watch in self.watches.items():
            seen = len(watch.lines)
            watch.poll()
            for _, line in watch.lines[seen:]:
                if self.failure is None and FAILURE.search(line):
                    self.failure = f"{name}: {line.strip()}"

    def run(self) -> None:
        turn = 0
        while not self.stop.wait(0.5):
            turn += 1
            self.poll_serial()
            if turn % 2 == 0:
                self.once(refresh=turn % 10 == 0)

    def finish(self) -> None:
        self.stop.set()
        self.join()
        self.once()
        self.poll_serial()
        for watch in self.watches.values():
            watch.finish()


def cpu_at(series: list[tuple[float, float, int]], t: float) -> float | None:
    """The CPU seconds a server's QEMUs had used by time ``t`` (the last sample at or
    before it)."""
    best = None
    for when, cpu, _ in series:
        if when > t:
            break
        best = cpu
    return best


def find_stages(
    lines: list[tuple[float, str]], stages: list[tuple[str, str]]
) -> list[tuple[str, float | None]]:
    found: list[tuple[str, float | None]] = []
    pos = 0
    for stage, pattern in stages:
        rx = re.compile(pattern)
        for i in range(pos, len(lines)):
            if rx.search(lines[i][1]):
                found.append((stage, lines[i][0]))
                pos = i + 1
                break
        else:
            found.append((stage, None))
    return found


def registry_times(config: Path, t0_wall: float) -> dict[str, dict[str, float]]:
    """Per MAC, when the registry recorded it ``installed`` and ``ready`` (since pxe-all)."""
    from appliance.config import load_config
    from appliance.state.backend import open_store

    store = open_store(load_config(config))
    try:
        times: dict[str, dict[str, float]] = {}
        for machine in store.machines():
            for event in store.events(machine.mac):
                to = event.detail.get("to") if event.kind == "state" else None
                if to in ("installed", "ready"):
                    times.setdefault(machine.mac, {})[str(to)] = event.time - t0_wall
        return times
    finally:
        store.close()


def server_macs(servers: Path) -> dict[str, str]:
    macs = {}
    for folder in servers.iterdir():
        spec = json.loads((folder / "vm.json").read_text())
        macs[folder.name] = str(spec["mac"])
    return macs


def provision(
    lab: Lab,
    nodes: int,
    firmware: str,
    os_kind: str,
    memory: int | None,
    timeout: float,
    out: Path | None,
) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="kpcbench-"))
    directory = work / "lab"
    config = directory / "kpc.yaml"
    available_before = mem_available_kib()
    load_start = os.getloadavg()[0]
    try:
        kpc(
            [
                *("lab", "up", "--nodes", str(nodes), "--firmware", firmware, "--os", os_kind),
                *(("--memory", str(memory)) if memory else ()),
                *("--dir", str(directory), "--name", lab.name, "--network", str(lab.network)),
                *("--services-prefix", lab.prefix),
                *("--bootcfg-port", str(lab.bootcfg_port)),
                *("--registry-port", str(lab.registry_port)),
            ]
        )
        kpc(["up"], config)
        kpc(["bmc", "discover"], config)
        servers = directory / "servers"
        start = time.monotonic()
        start_wall = time.time()
        sampler = Sampler(lab, servers, start)
        sampler.start()
        kpc(["pxe-all", "--yes"], config)
        from appliance.config import load_config
        from appliance.state.backend import open_store

        error = None
        interrupted = False
        store = open_store(load_config(config))
        try:
            while sum(1 for m in store.machines() if m.state.value == "ready") < nodes:
                if sampler.failure is not None:
                    raise RowFailed(sampler.failure)
                if time.monotonic() - start > timeout:
                    raise RowFailed(f"not all servers ready after {timeout:.0f} s")
                time.sleep(1.0)
        except RowFailed as exc:
            error = str(exc)
        except KeyboardInterrupt:  # keep what the row measured so far, then stop the run
            error = f"interrupted after {time.monotonic() - start:.0f} s"
            interrupted = True
        finally:
            store.close()
        took = time.monotonic() - start
        sampler.finish()
        got = sampler.got
        macs = server_macs(servers)
        registry = registry_times(config, start_wall)
        per_server = {}
        for name, watch in sorted(sampler.watches.items()):
            series = got.series.get(name, [])
            stages = find_stages(watch.lines, STAGES[os_kind])
            events = registry.get(macs[name], {})
            stages += [(f"registry: {k}", events.get(k)) for k in ("installed", "ready")]
            per_server[name] = {
                "mac": macs[name],
                "cpu_s": series[-1][1] if series else None,
                "peak_rss_mib": max((s[2] for s in series), default=0) / 1024,
                "stages": [
                    {"stage": s, "t": t, "cpu_s": None if t is None else cpu_at(series, t)}
                    for s, t in stages
                ],
            }
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                stamped = out / f"{os_kind}-{firmware}-{nodes}-{name}.serial.txt"
                stamped.write_text("".join(f"{t:9.2f} {line}\n" for t, line in watch.lines))
        return {
            "error": error,
            "interrupted": interrupted,
            "seconds": took,
            "peak_qemu_mib": got.peak_qemu_kib / 1024,
            "peak_single_qemu_mib": got.peak_single_qemu_kib / 1024,
            "peak_lab_mib": got.peak_lab_kib / 1024,
            "host_available_drop_mib": (available_before - got.min_available_kib) / 1024,
            "qemu_cpu_s": sum(s["cpu_s"] or 0 for s in per_server.values()),
            "load_start": load_start,
            "load_peak": got.peak_load,
            "load_end": os.getloadavg()[0],
            "memory_mib": memory,
            "servers": per_server,
        }
    finally:
        kpc(["lab", "down", "--dir", str(directory)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def baseline(nodes: int, lab_os: Path, memory: int) -> float:
    """N QEMUs booting the lab OS kernel directly, to its first console line."""
    work = Path(tempfile.mkdtemp(prefix="kpcbench-base-"))
    procs = []
    start = time.monotonic()
    try:
        for i in range(nodes):
            serial = work / f"{i}.log"
            procs.append(
                subprocess.Popen(
                    [
                        *("qemu-system-x86_64", "-accel", "tcg", "-m", str(memory)),
                        *("-nodefaults", "-display", "none", "-serial", f"file:{serial}"),
                        *("-kernel", str(lab_os / "vmlinuz"), "-initrd", str(lab_os / "initrd.gz")),
                        *("-append", "console=ttyS0 quiet no_timer_check kpc.role=probe"),
                        "-no-reboot",
                    ]
                )
            )
        logs = [work / f"{i}.log" for i in range(nodes)]
        while not all(p.exists() and "kpc-labos:" in p.read_text(errors="replace") for p in logs):
            time.sleep(0.1)
        return time.monotonic() - start
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def stage_table(row: dict[str, object]) -> list[str]:
    """Per server: each stage's start, how long it lasted, and its QEMU CPU seconds."""
    lines = []
    servers = row["servers"]
    assert isinstance(servers, dict)
    for name, server in servers.items():
        lines.append(f"  {name} ({server['mac']}), QEMU CPU {server['cpu_s'] or 0:.0f} s:")
        stages = sorted((s for s in server["stages"] if s["t"] is not None), key=lambda s: s["t"])
        for this, after in zip(stages, [*stages[1:], None], strict=True):
            took = "" if after is None else f"{after['t'] - this['t']:7.1f} s"
            cpu = ""
            if after is not None and this["cpu_s"] is not None and after["cpu_s"] is not None:
                cpu = f"  CPU {after['cpu_s'] - this['cpu_s']:6.1f} s"
            lines.append(f"    {this['t']:7.1f}  {this['stage']:<22} {took:>9}{cpu}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 3, 6])
    ap.add_argument("--firmware", nargs="+", default=["bios", "uefi"])
    ap.add_argument(
        "--os",
        nargs="+",
        default=["busybox", "node"],
        help="what the servers install: busybox (the small stand-in) and/or node (the "
        "Flatcar-shaped node OS), each measured in the same run",
    )
    ap.add_argument("--node-memory", type=int, help="MiB per node-OS server (lab default)")
    ap.add_argument("--busybox-memory", type=int, help="MiB per busybox server (lab default)")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--json", type=Path, help="write the figures here (after every row)")
    ap.add_argument("--out", type=Path, help="keep each server's time-stamped serial log here")
    ap.add_argument(
        "--rows",
        nargs="+",
        metavar="N:FIRMWARE",
        help="run exactly these (node count, firmware) rows in this order, e.g. 1:bios 6:bios "
        "(default: every --nodes for every --firmware, N-major)",
    )
    ap.add_argument("--no-bare", action="store_true", help="skip the bare kernel boots")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the lab makes namespaces)")
    sys.path.insert(0, str(REPO))
    from appliance.lab.layout import DEFAULT_CACHE
    from appliance.lab.osbuild import build_lab_os

    lab = Lab.for_slot(os.environ.get("KPC_TEST_LAB_SLOT"))
    lab_os = build_lab_os(DEFAULT_CACHE).directory
    memory = {"node": args.node_memory, "busybox": args.busybox_memory}
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"lab {lab.name}, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    results: list[dict[str, object]] = []
    rows = [(n, fw) for n in args.nodes for fw in args.firmware]
    if args.rows:
        try:
            rows = [(int(r.split(":")[0]), r.split(":")[1]) for r in args.rows]
        except (IndexError, ValueError):
            ap.error("--rows: each row is N:FIRMWARE, e.g. 6:bios")
    for nodes, firmware in rows:
        base = None if args.no_bare else baseline(nodes, lab_os, 256)
        for os_kind in args.os:
            got = provision(lab, nodes, firmware, os_kind, memory[os_kind], args.timeout, args.out)
            row = {"nodes": nodes, "firmware": firmware, "os": os_kind, "bare_boot_s": base}
            row |= {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            results.append(row | got)
            seconds = float(got["seconds"])  # type: ignore[arg-type]
            print(
                f"{nodes:>2} {firmware:<4} {os_kind:<7} pxe-all -> all ready {seconds:7.1f} s"
                f"  QEMU CPU {got['qemu_cpu_s']:6.0f} s"
                f"  peak RSS QEMU {got['peak_qemu_mib']:6.0f} MiB"
                f" (largest {got['peak_single_qemu_mib']:5.0f}), lab {got['peak_lab_mib']:6.0f}"
                f"  host -{got['host_available_drop_mib']:6.0f} MiB"
                f"  load {got['load_start']:.1f}/{got['load_peak']:.1f}/{got['load_end']:.1f}"
                + ("" if base is None else f"  bare boots {base:4.1f} s"),
                flush=True,
            )
            if got["error"]:
                print(f"   FAILED: {got['error']}", flush=True)
            for line in stage_table(results[-1]):
                print(line, flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2) + "\n")
            if got["interrupted"]:
                break
        if results and results[-1]["interrupted"]:
            break
    print()
    print(
        "| nodes | firmware | OS | pxe-all → all ready | QEMU CPU | peak RSS, QEMU (largest) "
        "| load start/peak/end |"
    )
    print("|---:|---|---|---:|---:|---:|---|")
    for r in results:
        print(
            f"| {r['nodes']} | {r['firmware']} | {r['os']} | {r['seconds']:.0f} s "
            f"| {r['qemu_cpu_s']:.0f} s | {r['peak_qemu_mib']:,.0f} MiB "
            f"({r['peak_single_qemu_mib']:,.0f}) "
            f"| {r['load_start']:.1f}/{r['load_peak']:.1f}/{r['load_end']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
