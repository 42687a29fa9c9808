#!/usr/bin/env python3
"""The web view with 1,000 machines: state change -> browser latency, page load, server CPU.

Everything real, on 127.0.0.1: ``kpc bootcfg serve`` and ``kpc web`` as their own processes
on one registry of 1,000 machines, Debian's Chromium driven by Playwright. A check-in storm
(wrk POSTing ``/checkin`` for 900 machines in rotation, as fast as bootcfg answers) runs
while the benchmark changes the state of 100 other machines one at a time and notes when
each change is committed and when the browser's page shows it (the ``kpc:row`` DOM event
the page fires after updating the row).

Baselines in the same run:
- latency: a bare reader polling the registry's ``changes_since`` at the web server's own
  interval (0.1 s) in another process: the floor of following the registry by polling;
- page load: the login page (the framework's floor) and ``kpc nodes list --json`` on the
  same registry (what an operator re-runs today);
- server CPU: the web server with no browser connected (its polling and message building).

Usage: .venv/bin/python benchmarks/bench_web.py [--probes 100] [--window 20] [--browsers 0,1,4,8]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from appliance.state.model import MachineState
from appliance.state.sqlite import SqliteStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bootcfg import KEY
from benchlib import free_port, wait_http

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
MACHINES = 1000
STORM = 900  # machines 0..899 check in; the probes are the rest
PASSWORD = "bench-web-password-0123"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
CHECKIN_LUA = """
counter = 0
request = function()
  counter = counter + 1
  local i = counter % {storm}
  local mac = string.format("52:54:00:00:%02x:%02x", math.floor(i / 256), i % 256)
  local body = string.format('{{"hostname":"n%d","address":"198.18.%d.%d"}}',
                             i, math.floor(i / 256), i % 256)
  return wrk.format("POST", "/checkin?mac=" .. mac, {{["Content-Type"]="application/json"}}, body)
end
"""


def mac(i: int) -> str:
    return f"52:54:00:00:{i // 256:02x}:{i % 256:02x}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def poller(db: str, probes: list[str], out: Any, stop: Any) -> None:
    """The baseline: another process following the registry at the server's interval."""
    store = SqliteStore(Path(db))
    cursor = store.event_cursor()
    wanted = set(probes)
    while not stop.is_set():
        for event in store.changes_since(cursor, 5000):
            cursor = event.id
            if event.kind == "state" and event.mac in wanted:
                out.put((event.mac, event.detail["to"], time.time()))
        time.sleep(0.1)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--window", type=float, default=20.0, help="seconds per CPU sample")
    parser.add_argument("--browsers", default="0,1,4,8")
    args = parser.parse_args()
    if shutil.which("wrk") is None or not Path("/usr/bin/chromium").exists():
        raise SystemExit("needs wrk and chromium (scripts/apt-packages.txt)")
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="kpc-bench-web-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        data = work / "data"
        secret = work / "web-password"
        secret.write_text(PASSWORD)
        secret.chmod(0o600)
        config = work / "kpc.yaml"
        web_port, boot_port = free_port(), free_port()
        config.write_text(
            "provisioning: {interface: lo, address: 127.0.0.1, subnet: 127.0.0.0/8}\n"
            f"bootcfg: {{data_dir: {data}, port: {boot_port}}}\nos: {{version: 3815.2.0}}\n"
            f"paths: {{source_dir: {REPO}, log_dir: {work}/logs, state_dir: {work}/state}}\n"
            f"web: {{port: {web_port}, password: {{file: {secret}}}}}\n"
        )
        (work / "key.pub").write_text(KEY + "\n")
        env = {**os.environ, "KPC_CONFIG": str(config), "HOME": str(work)}
        kpc = [sys.executable, "-m", "appliance"]
        subprocess.run(
            [*kpc, "bootcfg", "init", "--ssh-key", str(work / "key.pub")],
            env=env, cwd=REPO, check=True, capture_output=True,
        )  # fmt: skip
        db = data / "machines.db"
        store = SqliteStore(db)
        now = time.time()
        for i in range(MACHINES):
            store.record_request(mac(i), address="198.18.0.1", endpoint="ipxe", now=now)
            store.check_in(mac(i), {"hostname": f"n{i}"}, "198.18.0.1", now)
        probes = [mac(i) for i in range(STORM, MACHINES)][: args.probes]

        started = time.monotonic()
        out = subprocess.run([*kpc, "nodes", "list", "--json"], env=env, cwd=REPO,
                             capture_output=True, check=True)  # fmt: skip
        nodes_list = time.monotonic() - started
        assert out.stdout.count(b'"mac"') == MACHINES

        boot = subprocess.Popen(
            [*kpc, "bootcfg", "serve", "--listen", "127.0.0.1", "--no-access-log"],
            env=env, cwd=REPO, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(boot)
        web = subprocess.Popen(
            [*kpc, "web", "--listen", "127.0.0.1", "--no-access-log"],
            env=env, cwd=REPO, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(web)
        url = f"http://127.0.0.1:{web_port}"
        wait_http(f"http://127.0.0.1:{boot_port}/healthz")
        wait_http(f"{url}/healthz")
        script = work / "checkin.lua"
        script.write_text(CHECKIN_LUA.format(storm=STORM))

        def storm(seconds: float) -> subprocess.Popen[bytes]:
            argv = ["wrk", "-t1", "-c8", f"-d{int(seconds)}s", "-s", str(script),
                    f"http://127.0.0.1:{boot_port}"]  # fmt: skip
            return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)

            def logged_in() -> Any:
                context = browser.new_context(viewport={"width": 1366, "height": 900})
                page = context.new_page()
                page.goto(f"{url}/login")
                page.fill("#user", "bench")
                page.fill("#password", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_selector("#rack[data-live=yes]", state="attached", timeout=60000)
                return page

            # --- page load ------------------------------------------------------------------
            page = logged_in()
            loads, lives, logins = [], [], []
            for _ in range(5):
                t = time.monotonic()
                page.goto(f"{url}/login")
                logins.append(time.monotonic() - t)
                t = time.monotonic()
                page.goto(f"{url}/")
                loads.append(time.monotonic() - t)
                page.wait_for_selector("#rack[data-live=yes]", state="attached")
                lives.append(time.monotonic() - t)
            size = len(page.content())

            # --- latency, quiet and under a check-in storm ----------------------------------
            page.evaluate(
                "probes => { window.seen = []; window.arrived = [];"
                " const want = new Set(probes);"
                " document.addEventListener('kpc:row', e => { if (want.has(e.detail.mac))"
                " window.seen.push([e.detail.mac, e.detail.state, Date.now() / 1000]); });"
                " const feed = new EventSource('/events?since=' +"
                " document.getElementById('rack').dataset.cursor);"
                " feed.onmessage = m => { const t = Date.now() / 1000;"
                " for (const r of JSON.parse(m.data).rows) if (want.has(r.mac))"
                " window.arrived.push([r.mac, r.state, t]); }; }",
                probes,
            )
            spawn = multiprocessing.get_context("spawn")  # no fork of a threaded process
            queue: Any = spawn.Queue()
            stop = spawn.Event()
            reader = spawn.Process(target=poller, args=(str(db), probes, queue, stop), daemon=True)
            reader.start()
            time.sleep(1.0)
            results: dict[str, dict[str, list[float]]] = {}
            rate = ""
            for phase, states in (
                ("quiet", (MachineState.MAINTENANCE, MachineState.INSTALLING)),
                ("storm", (MachineState.RESCUE, MachineState.INSTALLED)),
            ):
                load = storm(len(probes) * 0.25 + 10) if phase == "storm" else None
                time.sleep(2.0)
                committed: dict[tuple[str, str], float] = {}
                for n, probe in enumerate(probes):
                    state = states[n % 2]
                    store.set_state(probe, state, time.time())
                    committed[(probe, state.value)] = time.time()
                    page.wait_for_timeout(250)  # the browser runs while the probes are paced
                page.wait_for_function(
                    "n => window.seen.length >= n",
                    arg=len(probes) * (2 if phase == "storm" else 1),
                    timeout=60000,
                )
                if load is not None:
                    out = load.communicate()[0].decode()
                    rate = next((x for x in out.splitlines() if "Requests/sec" in x), "")
                time.sleep(0.5)
                floor: dict[tuple[str, str], float] = {}
                while not queue.empty():
                    m, st, t = queue.get()
                    floor.setdefault((m, st), t)
                seen = {(m, st): t for m, st, t in page.evaluate("window.seen")}
                arrived = {(m, st): t for m, st, t in page.evaluate("window.arrived")}
                results[phase] = {
                    name: [(got[k] - committed[k]) * 1000 for k in committed if k in got]
                    for name, got in (("seen", seen), ("arrived", arrived), ("floor", floor))
                }
            stop.set()
            reader.join(10)

            # --- server CPU per connected browser ------------------------------------------
            page.close()
            cpu: list[tuple[int, float]] = []
            pages: list[Any] = []
            for count in [int(c) for c in args.browsers.split(",")]:
                while len(pages) < count:
                    pages.append(logged_in())
                load = storm(args.window + 2)
                time.sleep(1.0)
                before = cpu_seconds(web.pid)
                time.sleep(args.window)
                cpu.append((count, (cpu_seconds(web.pid) - before) / args.window))
                load.communicate()
            browser.close()

        print(f"{MACHINES} machines, {len(probes)} probes, {time.strftime('%Y-%m-%d %H:%M')}")
        print(f"check-in storm: wrk -t1 -c8 POST /checkin for {STORM} machines; {rate.strip()}")
        print("\n| state change -> | quiet p50 | quiet p99 | storm p50 | storm p99 | storm max |")
        print("|---|---|---|---|---|---|")
        rows = (
            ("seen", "the browser's page updated (kpc web)"),
            ("arrived", "its SSE message arrived in the browser"),
            ("floor", "baseline: a registry poller (0.1 s) saw it"),
        )
        for key, name in rows:
            q, st = results["quiet"][key], results["storm"][key]
            print(f"| {name} | {pct(q, 50):.0f} ms | {pct(q, 99):.0f} ms | "
                  f"{pct(st, 50):.0f} ms | {pct(st, 99):.0f} ms | {max(st):.0f} ms |")  # fmt: skip
        print("\n| page | median of 5 |")
        print("|---|---|")
        print(f"| rack, {MACHINES} machines ({size // 1024} KiB HTML): load event | "
              f"{statistics.median(loads) * 1000:.0f} ms |")  # fmt: skip
        print(f"| rack: load + live feed connected | {statistics.median(lives) * 1000:.0f} ms |")
        print(f"| baseline: login page | {statistics.median(logins) * 1000:.0f} ms |")
        print(f"| baseline: `kpc nodes list --json` (one run) | {nodes_list * 1000:.0f} ms |")
        print("\n| browsers connected | web server CPU (during the storm) |")
        print("|---|---|")
        for count, share in cpu:
            print(f"| {count}{' (baseline)' if count == 0 else ''} | {share * 100:.1f} % |")
        store.close()
    finally:
        stop(procs, grace=10.0)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
