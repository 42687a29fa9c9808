#!/usr/bin/env python3
"""BMC discovery on a real L2 segment, beside tuned nmap in the same run.

A /22 (198.19.248.0/22) behind a veth between two namespaces made here: ``kpcb-d`` (the
deploy host's side, .1) and ``kpcb-b`` holding 50 simulated IPMI BMCs
(``python -m appliance.bmc.sim --count 50``, 198.19.249.100-149); the other ~970 addresses
never answer ARP. Each round, inside ``kpcb-d``:
  - ``kpc bmc discover 198.19.248.0/22 --json`` (ARP sweep first, then IPMI + Redfish probes
    of the live hosts);
  - ``nmap -n -sU -p623 --open -T4 --min-rate 2000 --max-retries 1`` (nmap resolves the
    segment by ARP first too);
and once, for reference, kpc without ARP (``--no-arp``: every address probed over UDP at
the default pacing, as kpc did before). Everything is removed at the end.

kpc's modules are byte-compiled first (``compileall``), as an installed kpc has them (pip
writes them; the executable bundles them): with ``PYTHONDONTWRITEBYTECODE`` set, as in the
team's shells, every run would otherwise compile ~30 modules from source (~0.1 s). Run as root:

    .venv/bin/python benchmarks/bench_discovery_l2.py [--rounds 5] [--no-arp-round]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEPLOY, BMCS = "kpcb-d", "kpcb-b"
NETWORK = "198.19.248.0/22"
LIVE = [f"198.19.249.{n}" for n in range(100, 150)]


def ip(*args: str, stdin: str | None = None) -> None:
    subprocess.run(["ip", *args], input=stdin, text=True, check=True, capture_output=True)


def remove() -> None:
    for ns in (DEPLOY, BMCS):
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


def build() -> None:
    remove()
    for ns in (DEPLOY, BMCS):
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
    ip("link", "add", "kpcb-d0", "netns", DEPLOY, "type", "veth", "peer", "kpcb-b0", "netns", BMCS)
    ip("-n", DEPLOY, "addr", "add", "198.19.248.1/22", "dev", "kpcb-d0")
    ip("-n", BMCS, "-batch", "-", stdin="".join(f"addr add {a}/22 dev kpcb-b0\n" for a in LIVE))
    ip("-n", DEPLOY, "link", "set", "kpcb-d0", "up")
    ip("-n", BMCS, "link", "set", "kpcb-b0", "up")


def timed(argv: list[str]) -> tuple[float, str, str]:
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv[:6]} failed: {result.stderr[-2000:]}")
    return elapsed, result.stdout, result.stderr


def in_deploy(*argv: str) -> list[str]:
    return ["ip", "netns", "exec", DEPLOY, *argv]


def kpc(config: Path, *extra: str) -> tuple[float, float, int, str]:
    wall, out, err = timed(
        in_deploy(
            sys.executable,
            "-m",
            "appliance",
            "-c",
            str(config),
            "bmc",
            "discover",
            NETWORK,
            "--json",
            *extra,
        )
    )
    inner = re.search(r"in ([\d.]+)s", err)
    lost = re.search(r"could not be sent: (.*)", err)
    return (
        wall,
        float(inner.group(1)) if inner else wall,
        len(json.loads(out)),
        (lost.group(1) if lost else "none"),
    )


def nmap() -> tuple[float, int]:
    wall, out, _ = timed(
        in_deploy(
            "nmap",
            "-n",
            "-sU",
            "-p623",
            "--open",
            "-T4",
            "--min-rate",
            "2000",
            "--max-retries",
            "1",
            NETWORK,
        )
    )
    return wall, len(re.findall(r"623/udp\s+open", out))


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-arp-round", action="store_true", help="also time kpc --no-arp once")
    args = ap.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", "appliance"], cwd=REPO, check=True)
    build()
    tmp = Path(tempfile.mkdtemp(prefix="kpc-bench-l2-"))
    log = (tmp / "sim.log").open("wb")
    sim = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            BMCS,
            sys.executable,
            "-m",
            "appliance.bmc.sim",
            "--listen",
            LIVE[0],
            "--count",
            str(len(LIVE)),
        ],
        cwd=REPO,
        env={**os.environ, "KPC_SIM_PASSWORD": "bench-Pw-4711"},
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 60
        while "serving" not in (tmp / "sim.log").read_text():
            if sim.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"simulator did not start: {(tmp / 'sim.log').read_text()}")
            time.sleep(0.1)
        config = tmp / "kpc.yaml"
        config.write_text(
            "provisioning: {interface: kpcd0, address: 198.18.47.1, subnet: 198.18.47.0/24}\n"
            f"bootcfg: {{state_db: {tmp / 'machines.db'}}}\n"
        )
        kpc_runs, nmap_runs, startup = [], [], []
        for _ in range(args.rounds):
            kpc_runs.append(kpc(config))
            nmap_runs.append(nmap())
            startup.append(timed([sys.executable, "-m", "appliance", "--version"])[0])
        rows = [
            f"| {NETWORK}: 1,021 addresses, {len(LIVE)} BMCs | median of {args.rounds} (range) "
            "| found | probes lost |",
            "|---|---|---|---|",
            f"| kpc bmc discover (ARP first): whole command | {med([r[0] for r in kpc_runs])} "
            f"| {min(r[2] for r in kpc_runs)}-{max(r[2] for r in kpc_runs)} | "
            f"{', '.join(sorted({r[3] for r in kpc_runs}))} |",
            f"| … of which the discovery itself | {med([r[1] for r in kpc_runs])} | | |",
            f"| (reference: kpc CLI start-up, kpc --version) | {med(startup)} | | |",
            "| baseline: nmap -n -sU -p623 --open -T4 --min-rate 2000 --max-retries 1 | "
            f"{med([r[0] for r in nmap_runs])} | "
            f"{min(r[1] for r in nmap_runs)}-{max(r[1] for r in nmap_runs)} | |",
        ]
        ratio = statistics.median([r[0] for r in kpc_runs]) / statistics.median(
            [r[0] for r in nmap_runs]
        )
        rows.append(f"| kpc / nmap (whole command) | {ratio:.2f}x | | |")
        if args.no_arp_round:
            wall, inner, found, lost = kpc(config, "--no-arp")
            rows.append(
                f"| reference: kpc bmc discover --no-arp (UDP to every address, 500/s), 1 run "
                f"| {wall:.2f} s ({inner:.2f} s inside) | {found} | {lost} |"
            )
        print("\n".join(rows))
        return 0
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait()
        remove()


if __name__ == "__main__":
    sys.exit(main())
