#!/usr/bin/env python3
"""How long kpc takes to provision the virtual lab, by node count and firmware.

For each N in --nodes and each firmware in --firmware: make a lab (kpc lab up), start kpc's
services (kpc up), discover the BMCs, then time ``kpc pxe-all --yes`` until every server is
``ready`` in the registry (installed, rebooted from disk, checked in), sampling the peak
memory (RSS) of every lab process (QEMU servers, simulated BMCs, site router) and of
kpc's service containers' processes; then remove the lab (kpc lab down).

Baseline, measured in the same run: N lab servers booting the same lab OS kernel directly
(QEMU -kernel/-initrd, no firmware PXE, no install, no network), timed to the lab OS's
first console line: the cost of booting at all under TCG on this machine.

Run as root, from the checkout, with kpc's images built (it builds the services' images
once if needed):

    .venv/bin/python benchmarks/bench_lab.py --nodes 1 3 6 --firmware bios uefi

Prints a table (and --json FILE writes the figures). Never run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KPC = [sys.executable, "-m", "appliance"]
NAME, NETWORK, PREFIX = "kpcbench", 12, "kpcbench"


def kpc(args: list[str], config: Path | None = None, check: bool = True) -> str:
    env = dict(os.environ)
    if config is not None:
        env["KPC_CONFIG"] = str(config)
    proc = subprocess.run([*KPC, *args], capture_output=True, text=True, env=env, cwd=REPO)
    if check and proc.returncode != 0:
        raise SystemExit(f"kpc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+)", status, re.M)
        total += int(match.group(1)) if match else 0
    return total


def lab_pids(directory: Path) -> list[int]:
    """Processes of the lab (by namespace) and of its containers (by container name)."""
    pids: list[int] = []
    for ns in (f"{NAME}-sw", f"{NAME}-rtr", f"{NAME}-bmc"):
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        pids += [int(p) for p in out.stdout.split()]
    for service in ("dnsmasq", "bootcfg", "registry"):
        out = subprocess.run(
            ["docker", "top", f"{PREFIX}-{service}", "-eo", "pid"], capture_output=True, text=True
        )
        pids += [int(p) for p in out.stdout.split()[1:] if p.isdigit()]
    return pids


class PeakSampler(threading.Thread):
    def __init__(self, directory: Path) -> None:
        super().__init__(daemon=True)
        self.directory = directory
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.peak = max(self.peak, rss_kib(lab_pids(self.directory)))


def ready_count(config: Path) -> int:
    rows = json.loads(kpc(["nodes", "list", "--json"], config))
    return sum(1 for row in rows if row["state"] == "ready")


def provision(nodes: int, firmware: str, os_kind: str, timeout: float) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="kpcbench-"))
    directory = work / "lab"
    config = directory / "kpc.yaml"
    try:
        kpc(
            [
                *("lab", "up", "--nodes", str(nodes), "--firmware", firmware, "--os", os_kind),
                *("--dir", str(directory), "--name", NAME, "--network", str(NETWORK)),
                *("--services-prefix", PREFIX, "--bootcfg-port", "8089", "--registry-port", "5089"),
            ]
        )
        kpc(["up"], config)
        kpc(["bmc", "discover"], config)
        sampler = PeakSampler(directory)
        sampler.start()
        start = time.monotonic()
        kpc(["pxe-all", "--yes"], config)
        while ready_count(config) < nodes:
            if time.monotonic() - start > timeout:
                raise SystemExit(f"{nodes} {firmware} servers not ready after {timeout}s")
            time.sleep(1.0)
        took = time.monotonic() - start
        sampler.stop.set()
        sampler.join()
        return {"seconds": took, "peak_mib": sampler.peak / 1024}
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
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the lab makes namespaces)")
    sys.path.insert(0, str(REPO))
    from appliance.lab.layout import DEFAULT_CACHE
    from appliance.lab.osbuild import build_lab_os

    lab_os = build_lab_os(DEFAULT_CACHE).directory
    results = []
    for firmware in args.firmware:
        for nodes in args.nodes:
            base = baseline(nodes, lab_os, 256)
            for os_kind in args.os:
                got = provision(nodes, firmware, os_kind, args.timeout)
                row = {"nodes": nodes, "firmware": firmware, "os": os_kind, "baseline_s": base}
                results.append({**row, **got})
                print(
                    f"{nodes:>3} {firmware:<5} {os_kind:<7} pxe-all -> all ready "
                    f"{got['seconds']:7.1f}s "
                    f"({got['seconds'] / nodes:5.1f}s/node)  peak RSS {got['peak_mib']:7.0f} MiB  "
                    f"baseline {base:5.1f}s",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(
        "| nodes | firmware | OS | pxe-all → all ready | per node | peak RSS "
        "| baseline: bare boots |"
    )
    print(
        "|------:|----------|----|--------------------:|---------:|---------:|---------------------:|"
    )
    for r in results:
        per_node = r["seconds"] / r["nodes"]
        print(
            f"| {r['nodes']} | {r['firmware']} | {r['os']} | {r['seconds']:.1f} s "
            f"| {per_node:.1f} s | "
            f"{r['peak_mib']:.0f} MiB | {r['baseline_s']:.1f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
