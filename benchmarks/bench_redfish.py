#!/usr/bin/env python3
"""pxe-all over 250 simulated Redfish BMCs, beside baselines measured in the same run.

One simulator process serves 250 Redfish BMCs (``python -m appliance.bmc.sim --protocol
redfish``: HTTPS, one certificate each) on 127.47.0.1-250, port 8443, all powered on.
Each round, one-time PXE boot + reset of all 250:
  - ``kpc pxe-all --protocol redfish --fanout 64``: whole command, and its engine's own time
    (kpc logs in with a SessionService session per host, reads the service root, the
    systems collection and the system, PATCHes the boot override, resets, logs out);
  - baseline: curl in parallel (``xargs -P 64``), two requests per host (PATCH the boot
    override, POST the reset), basic auth, certificates unchecked (``-k``);
  - client choice: OpenStack's sushy in a thread pool of 64 (basic auth, same steps as
    kpc: system, boot override, reset), beside kpc's aiohttp engine.
The password goes through a mode-600 curl config file and the environment, never argv.

    .venv/bin/python benchmarks/bench_redfish.py [--hosts 250] [--rounds 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "bench-Rf-4711"
KPC = [sys.executable, "-m", "appliance"]
FIRST = "127.47.0."
PORT = 8443
FANOUT = 64


def timed(argv: list[str], env: dict[str, str] | None = None, stdin: str | None = None):
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, input=stdin, cwd=REPO, capture_output=True,
                            text=True, timeout=900)  # fmt: skip
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv[:5]} failed ({result.returncode}): {result.stderr[-2000:]}")
    return elapsed, result.stdout, result.stderr


def curl_round(hosts: list[str], config: Path) -> float:
    boot = '{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}'
    json_header = '-H "Content-Type: application/json"'
    script = (
        f'h="$1"; b="https://$h:{PORT}/redfish/v1/Systems/1"; '
        f"curl -sk --fail -K {config} -X PATCH {json_header} --data '{boot}' \"$b\" && "
        f"curl -sk --fail -K {config} -X POST {json_header} "
        f'--data \'{{"ResetType":"ForceRestart"}}\' "$b/Actions/ComputerSystem.Reset"'
    )
    wall, _, _ = timed(["xargs", "-P", str(FANOUT), "-n", "1", "sh", "-c", script, "x"],
                       stdin="\n".join(hosts) + "\n")  # fmt: skip
    return wall


def sushy_round(hosts: list[str]) -> float:
    import sushy
    from sushy import auth

    warnings.filterwarnings("ignore")

    def one(host: str) -> None:
        root = sushy.Sushy(f"https://{host}:{PORT}/redfish/v1/", verify=False,
                           auth=auth.BasicAuth(username="admin", password=PASSWORD))  # fmt: skip
        system = root.get_system("/redfish/v1/Systems/1")
        system.set_system_boot_source(sushy.BOOT_SOURCE_TARGET_PXE,
                                      enabled=sushy.BOOT_SOURCE_ENABLED_ONCE)  # fmt: skip
        system.reset_system(sushy.RESET_FORCE_RESTART)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(FANOUT) as pool:
        list(pool.map(one, hosts))
    return time.perf_counter() - started


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=250)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    hosts = [f"{FIRST}{n}" for n in range(1, args.hosts + 1)]
    tmp = Path(tempfile.mkdtemp(prefix="kpc-bench-redfish-"))
    log = tmp / "sim.log"
    sim = subprocess.Popen(
        [sys.executable, "-m", "appliance.bmc.sim", "--listen", hosts[0], "--count",
         str(len(hosts)), "--protocol", "redfish", "--redfish-port", str(PORT), "--power", "on"],
        cwd=REPO, env={**os.environ, "KPC_SIM_PASSWORD": PASSWORD},
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "serving" not in log.read_text():
            if sim.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"simulator did not start: {log.read_text()}")
            time.sleep(0.2)
        config = tmp / "kpc.yaml"
        config.write_text(
            "provisioning: {interface: kpcd0, address: 198.18.48.1, subnet: 198.18.48.0/24}\n"
            f"bootcfg: {{state_db: {tmp / 'machines.db'}}}\n"
            "bmc: {user: admin, protocol: redfish}\n"
        )
        curlrc = tmp / "curlrc"
        curlrc.touch(mode=0o600)
        curlrc.write_text(f'user = "admin:{PASSWORD}"\n')
        env = {**os.environ, "KPC_BMC_PASSWORD": PASSWORD}
        targets = [f"{h}:{PORT}" for h in hosts]
        # first contact pins every certificate (not timed)
        timed([*KPC, "-c", str(config), "bmc", "power", "status", *targets, "--fanout",
               str(FANOUT), "--json"], env)  # fmt: skip
        runs: dict[str, list[float]] = {"kpc": [], "engine": [], "curl": [], "sushy": [],
                                        "startup": []}  # fmt: skip
        for _ in range(args.rounds):
            wall, out, err = timed([*KPC, "-c", str(config), "pxe-all", *targets, "--yes",
                                    "--fanout", str(FANOUT), "--json"], env)  # fmt: skip
            rows = json.loads(out)
            if len(rows) != len(hosts) or not all(r["ok"] for r in rows):
                raise SystemExit(f"kpc pxe-all did not do every host: {err[-2000:]}")
            runs["kpc"].append(wall)
            inner = re.search(r"in ([\d.]+)s", err)
            runs["engine"].append(float(inner.group(1)) if inner else wall)
            runs["startup"].append(timed([*KPC, "--version"])[0])
            runs["curl"].append(curl_round(hosts, curlrc))
            runs["sushy"].append(sushy_round(hosts))
        base = statistics.median(runs["curl"])
        lines = [
            f"| what ({len(hosts)} Redfish BMCs, fan-out {FANOUT}) | median of {args.rounds} "
            "(range) | vs parallel curl |",
            "|---|---|---|",
        ]
        for key, label in (
            ("kpc", "kpc pxe-all --protocol redfish (whole command)"),
            ("engine", "… of which kpc's Redfish engine (aiohttp, sessions, pinned TLS)"),
            ("startup", "(reference: kpc CLI start-up, kpc --version)"),
            ("curl", "baseline: curl, xargs -P 64, PATCH + POST per host, basic auth, -k"),
            ("sushy", "client choice: sushy, 64 threads, basic auth"),
        ):
            ratio = statistics.median(runs[key]) / base
            lines.append(f"| {label} | {med(runs[key])} | {ratio:.2f}x |")
        print("\n".join(lines))
        return 0
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(20)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait()


if __name__ == "__main__":
    sys.exit(main())
