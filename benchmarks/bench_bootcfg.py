#!/usr/bin/env python3
"""bootcfg request rates with 1,000 machines in the registry (``kpc bootcfg serve``).

The data dir is seeded by ``kpc bootcfg init`` (kpc's own install/targetnode templates) and
the registry holds 1,000 machines. wrk cycles through the 1,000 MACs, so every request is
matched, recorded in SQLite (one write transaction) and rendered: ``/ipxe`` (install
script), ``/ignition`` (the install config) and ``/ignition?os=installed`` (the targetnode
config). Baselines in the same run: bootcfg's ``/boot.ipxe`` (a constant answer: the
framework's floor) and nginx serving a static file of the install config's size.

Usage: .venv/bin/python benchmarks/bench_bootcfg.py [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import free_port, stop, wait_http

from appliance.state.sqlite import SqliteStore

REPO = Path(__file__).resolve().parent.parent
MACHINES = 1000
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl bench"

LUA = """
counter = 0
request = function()
  counter = counter + 1
  local i = counter % {machines}
  local mac = string.format("52:54:00:00:%02x:%02x", math.floor(i / 256), i % 256)
  return wrk.format("GET", string.format("{path}", mac))
end
"""

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""


def wrk(url: str, script: Path | None, seconds: int, connections: int) -> tuple[float, str, int]:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, p99.group(1) if p99 else "?", int(errors.group(1)) if errors else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install wrk nginx-light)")
    work = Path(tempfile.mkdtemp(prefix="kpc-bench-bootcfg-"))
    os.chmod(work, 0o755)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        data = work / "data"
        config = work / "kpc.yaml"
        config.write_text(
            "provisioning: {interface: lo, address: 127.0.0.1, subnet: 127.0.0.0/8}\n"
            f"bootcfg: {{data_dir: {data}}}\nos: {{version: 3815.2.0}}\n"
            f"paths: {{source_dir: {REPO}}}\n"
        )
        (work / "key.pub").write_text(KEY + "\n")
        env = {**os.environ, "KPC_CONFIG": str(config), "HOME": str(work)}
        kpc = [sys.executable, "-m", "appliance"]
        subprocess.run(
            [*kpc, "bootcfg", "init", "--ssh-key", str(work / "key.pub")],
            env=env,
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        with SqliteStore(data / "machines.db") as store:
            for i in range(MACHINES):
                mac = f"52:54:00:00:{i // 256:02x}:{i % 256:02x}"
                store.record_request(mac, address="127.0.0.1", endpoint="ipxe", now=time.time())
        port, nginx_port = free_port(), free_port()
        server = subprocess.Popen(
            [
                *kpc,
                "bootcfg",
                "serve",
                "--listen",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
            ],
            env=env,
            cwd=REPO,
            stderr=subprocess.DEVNULL,
        )
        procs.append(server)
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        install = wait_http(f"{base}/ignition?mac=52:54:00:00:00:00")
        static = work / "www"
        static.mkdir()
        (static / "install.json").write_bytes(install)
        (work / "nginx.conf").write_text(NGINX_CONF.format(dir=work, port=nginx_port, root=static))
        nginx = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf")])
        procs.append(nginx)
        wait_http(f"http://127.0.0.1:{nginx_port}/install.json")

        cases = [
            ("baseline: bootcfg /boot.ipxe (constant)", f"{base}/boot.ipxe", None),
            ("/ipxe?mac=M (install script)", base, "/ipxe?mac=%s"),
            ("/ignition?mac=M (install config)", base, "/ignition?mac=%s"),
            ("/ignition?mac=M&os=installed (targetnode)", base, "/ignition?mac=%s&os=installed"),
            (
                f"baseline: nginx static {len(install)} B file",
                f"http://127.0.0.1:{nginx_port}/install.json",
                None,
            ),
        ]
        print(
            f"{MACHINES} machines, wrk -t2 -c{args.connections} -d{args.seconds}s, "
            f"{time.strftime('%Y-%m-%d')}"
        )
        print("\n| request | req/s | p99 latency | non-2xx |")
        print("|---|---|---|---|")
        for name, url, path in cases:
            script = None
            if path is not None:
                script = work / "rotate.lua"
                script.write_text(LUA.format(machines=MACHINES, path=path))
            rate, p99, errors = wrk(url, script, args.seconds, args.connections)
            print(f"| {name} | {rate:,.0f} | {p99} | {errors} |", flush=True)
        with SqliteStore(data / "machines.db") as store:
            print(f"\nregistry after the run: {len(store.machines())} machines")
    finally:
        stop(procs, lambda proc: signal.SIGQUIT if proc.args[0] == "nginx" else signal.SIGTERM)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
