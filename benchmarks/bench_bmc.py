#!/usr/bin/env python3
"""BMC discovery and pxe-all against simulated BMCs on loopback, beside baselines.

Discovery: ``kpc bmc discover 127.45.0.0/16 --rate 0`` with a few hundred live simulators
spread over the /16 (three farm processes), beside, in the same run,
  - a minimal sweep: one socket, both probes to every address, then wait for answers for
    the same time kpc waits (no pacing, no retries, no parsing beyond "who answered");
  - ``nmap -sU -p 623`` over one /24 of it.

pxe-all: one-time PXE boot + reset for 250 simulated BMCs (one farm process), beside
  - freeipmi: ``ipmi-raw`` (Set System Boot Options, boot flags = PXE, one-time) and then
    ``ipmipower --reset --on-if-off``, both with fan-out 64;
  - a naive single-threaded pyghmi loop (``Command(...)``, ``set_bootdev``, ``set_power``);
  - the original tool's sequential ipmitool loop (bootdev, power status, reset; no sleeps).

Every password goes through the environment or a mode-600 file, never argv.
Run as root (UDP port 623):

    .venv/bin/python benchmarks/bench_bmc.py [--live 300] [--hosts 250] [--rounds 3]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliance.bmc import protocol as p  # noqa: E402

PASSWORD = "bench-Pw-4711"
KPC = [sys.executable, "-m", "appliance"]
SWEEP_NET = ipaddress.IPv4Network("127.45.0.0/16")
PXE_FIRST = ipaddress.IPv4Address("127.46.0.1")
PXE_NET = ipaddress.IPv4Network("127.46.0.0/24")


def start_sim(first: str, count: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "appliance.bmc.sim", "--listen", first, "--count",
            str(count), "--power", "on"]  # fmt: skip
    env = {**os.environ, "KPC_SIM_PASSWORD": PASSWORD}
    out = log.open("wb")
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while "serving" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"simulator did not start: {log.read_text()}")
        time.sleep(0.1)
    return proc


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str, str]:
    started = time.perf_counter()
    result = subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, check=False, timeout=900
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({result.returncode}): {result.stderr[-2000:]}")
    return elapsed, result.stdout, result.stderr


def minimal_sweep(network: ipaddress.IPv4Network, wait: float) -> tuple[float, int]:
    """The baseline: send both probes to every address, then collect answers for ``wait``."""
    started = time.perf_counter()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setblocking(False)
    ping, caps = p.presence_ping(0), p.get_channel_auth_caps(0)
    answered: set[str] = set()

    def drain() -> None:
        while True:
            try:
                _data, addr = sock.recvfrom(2048)
            except BlockingIOError:
                return
            answered.add(addr[0])

    for n, address in enumerate(network.hosts()):
        destination = (str(address), p.RMCP_PORT)
        sock.sendto(ping, destination)
        sock.sendto(caps, destination)
        if n % 1024 == 0:
            drain()
    end = time.monotonic() + wait
    while (left := end - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            drain()
    sock.close()
    return time.perf_counter() - started, len(answered)


def naive_pyghmi(hosts: list[str]) -> None:
    """Baseline (run in its own process): pyghmi's Command, one host after the other."""
    from pyghmi.ipmi import command

    for host in hosts:
        session = command.Command(host, "admin", os.environ["BENCH_PASSWORD"])
        session.set_bootdev("network")
        session.set_power("boot")
        session.ipmi_session.logout()


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s" + (
        f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""
    )


def kpc_discover(config: Path, *extra: str) -> tuple[float, float, int]:
    """Wall time of the whole command, the sweep's own time, BMCs found."""
    argv = [*KPC, "-c", str(config), "bmc", "discover", str(SWEEP_NET), "--json", *extra]
    wall, out, err = timed(argv)
    sweep = re.search(r"in ([\d.]+)s", err)
    if sweep is None:
        raise SystemExit(f"no summary from kpc bmc discover: {err[-1000:]}")
    return wall, float(sweep.group(1)), len(json.loads(out))


def bench_discovery(tmp: Path, live: int, rounds: int, nmap: bool) -> list[str]:
    per_farm = -(-live // 3)
    firsts = ["127.45.1.1", "127.45.100.1", "127.45.200.1"]
    sims = [start_sim(f, per_farm, tmp / f"sweep-sim{i}.log") for i, f in enumerate(firsts)]
    total = per_farm * len(firsts)
    config = tmp / "sweep.yaml"
    config.write_text(
        "provisioning: {interface: kpcd0, address: 198.18.45.1, subnet: 198.18.45.0/24}\n"
        f"bootcfg: {{state_db: {tmp / 'sweep.db'}}}\n"
    )
    runs: dict[str, list[tuple[float, float, int]]] = {"default": [], "no-retry": [], "base": []}
    try:
        for _ in range(rounds):
            runs["default"].append(kpc_discover(config, "--rate", "0"))
            runs["no-retry"].append(kpc_discover(config, "--rate", "0", "--retries", "0"))
            seconds, found = minimal_sweep(SWEEP_NET, 1.0)
            runs["base"].append((seconds, seconds, found))

        def row(label: str, key: str, column: int) -> str:
            found = [r[2] for r in runs[key]]
            return (
                f"| {label} | {median([r[column] for r in runs[key]])} | "
                f"{min(found)}-{max(found)} / {total} |"
            )

        lines = [
            f"| {SWEEP_NET.num_addresses - 2} addresses, {total} live | time (median of "
            f"{rounds}, range) | found / live |",
            "|---|---|---|",
            row("kpc bmc discover --rate 0: the sweep (1 retry, 1 s wait)", "default", 1),
            row("kpc bmc discover --rate 0: whole command", "default", 0),
            row("kpc bmc discover --rate 0 --retries 0: the sweep", "no-retry", 1),
            row("baseline: minimal sweep (no pacing, no retry, 1 s wait)", "base", 0),
        ]
        if nmap:
            net24 = "127.45.1.0/24"
            wall, out, _ = timed(["nmap", "-sU", "-p", "623", "-n", net24])
            open_ports = len(re.findall(r"623/udp\s+open", out))
            lines.append(
                f"| baseline: nmap -sU -p 623 -n, one /24 ({net24}) | {wall:.1f} s | "
                f"{open_ports} open / {min(per_farm, 254)} |"
            )
        return lines
    finally:
        stop(sims)


def bench_pxe(tmp: Path, hosts: int, rounds: int, ipmitool: bool) -> list[str]:
    last = PXE_FIRST + hosts - 1
    sims = [start_sim(str(PXE_FIRST), hosts, tmp / "pxe-sim.log")]
    addresses = [str(PXE_FIRST + i) for i in range(hosts)]
    hostrange = (
        f"{'.'.join(str(PXE_FIRST).split('.')[:3])}.[{PXE_FIRST.packed[3]}-{last.packed[3]}]"
    )
    config = tmp / "pxe.yaml"
    config.write_text(
        "provisioning: {interface: kpcd0, address: 198.18.46.1, subnet: 198.18.46.0/24}\n"
        f"bootcfg: {{state_db: {tmp / 'pxe.db'}}}\n"
        f"bmc: {{user: admin, networks: [{PXE_NET}]}}\n"
    )
    freeipmi_conf = tmp / "freeipmi.conf"
    freeipmi_conf.touch(mode=0o600)
    freeipmi_conf.write_text(f"username admin\npassword {PASSWORD}\n")
    env = {**os.environ, "KPC_BMC_PASSWORD": PASSWORD}
    freeipmi = ["--config-file", str(freeipmi_conf), "-h", hostrange, "-D", "LAN_2_0", "-F", "64"]
    results: dict[str, list[float]] = {
        "kpc": [],
        "kpc-engine": [],
        "startup": [],
        "freeipmi": [],
        "pyghmi": [],
    }
    try:
        timed([*KPC, "-c", str(config), "bmc", "discover", "--rate", "0"], env)
        for _ in range(rounds):
            wall, out, err = timed(
                [*KPC, "-c", str(config), "pxe-all", "--yes", "--fanout", "64", "--json"], env
            )
            done = json.loads(out)
            if len(done) != hosts or not all(r["ok"] for r in done):
                raise SystemExit(f"kpc pxe-all did not do every host: {err[-2000:]}")
            results["kpc"].append(wall)
            engine = re.search(r"in ([\d.]+)s", err)
            if engine is None:
                raise SystemExit(f"no summary from kpc pxe-all: {err[-1000:]}")
            results["kpc-engine"].append(float(engine.group(1)))
            results["startup"].append(timed([*KPC, "--version"])[0])

            raw, out1, _ = timed(
                ["ipmi-raw", *freeipmi, "00", "00", "08", "05", "80", "04", "00", "00", "00"]
            )
            pw, out2, _ = timed(["ipmipower", *freeipmi, "--reset", "--on-if-off"])
            if out1.count("rcvd: 08 00") != hosts or out2.count(": ok") != hosts:
                raise SystemExit(f"freeipmi did not do every host:\n{out1[-500:]}\n{out2[-500:]}")
            results["freeipmi"].append(raw + pw)

            wall, _, _ = timed(
                [sys.executable, __file__, "--naive-pyghmi", *addresses],
                {**os.environ, "BENCH_PASSWORD": PASSWORD},
            )
            results["pyghmi"].append(wall)
        freeipmi_median = statistics.median(results["freeipmi"])
        lines = [
            f"| what ({hosts} BMCs) | time (median of {rounds}) | vs freeipmi |",
            "|---|---|---|",
        ]
        for key, label in (
            ("kpc", "kpc pxe-all --fanout 64 (whole command)"),
            ("kpc-engine", "… of which the parallel IPMI engine"),
            ("startup", "(reference: kpc CLI start-up, kpc --version)"),
            ("freeipmi", "baseline: freeipmi ipmi-raw + ipmipower, fan-out 64"),
            ("pyghmi", "baseline: naive single-threaded pyghmi loop"),
        ):
            ratio = statistics.median(results[key]) / freeipmi_median
            lines.append(f"| {label} | {median(results[key])} | {ratio:.1f}x |")
        if ipmitool:
            wall = ipmitool_loop(addresses)
            lines.append(
                f"| baseline: sequential ipmitool loop (1 round, no sleeps) | {wall:.1f} s | "
                f"{wall / freeipmi_median:.0f}x |"
            )
        return lines
    finally:
        stop(sims)


def ipmitool_loop(hosts: list[str]) -> float:
    """The original tool's loop, without its ``sleep 5``: bootdev, status, reset/on."""
    env = {**os.environ, "IPMITOOL_PASSWORD": PASSWORD}
    started = time.perf_counter()
    for host in hosts:
        base = ["ipmitool", "-I", "lanplus", "-H", host, "-U", "admin", "-E"]
        run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
        run([*base, "chassis", "bootdev", "pxe"], env=env, capture_output=True, check=True)
        status = run([*base, "power", "status"], env=env, capture_output=True, text=True)
        action = "reset" if "on" in status.stdout else "on"
        run([*base, "power", action], env=env, capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--live", type=int, default=300, help="live simulators in the /16")
    ap.add_argument("--hosts", type=int, default=250, help="BMCs for pxe-all")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-nmap", action="store_true")
    ap.add_argument("--no-ipmitool", action="store_true", help="skip the slow ipmitool loop")
    ap.add_argument("--only", choices=("discovery", "pxe"))
    ap.add_argument("--naive-pyghmi", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive_pyghmi:
        naive_pyghmi(args.naive_pyghmi)
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root: the simulators listen on UDP port 623")
    with tempfile.TemporaryDirectory(prefix="kpcD-bench-") as tmp:
        load = os.getloadavg()[0]
        print(f"# {time.strftime('%Y-%m-%d %H:%M')}, load average {load:.1f}\n")
        if args.only in (None, "discovery"):
            for line in bench_discovery(Path(tmp), args.live, args.rounds, not args.no_nmap):
                print(line, flush=True)
            print()
        if args.only in (None, "pxe"):
            for line in bench_pxe(Path(tmp), args.hosts, args.rounds, not args.no_ipmitool):
                print(line, flush=True)


if __name__ == "__main__":
    main()
