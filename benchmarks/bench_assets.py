#!/usr/bin/env python3
"""Asset throughput: bootcfg (``kpc bootcfg serve``) beside nginx, same file, same run.

A 512 MiB file is served on loopback by both servers; 1, 8 and 32 concurrent curl clients
each download it whole. Reports aggregate throughput, server CPU seconds per GiB served, and
bootcfg as a percentage of nginx. nginx (Debian nginx-light) runs with ``sendfile on``, one
process (``master_process off``), access log off; bootcfg runs with its access log off.

Usage: .venv/bin/python benchmarks/bench_assets.py [--size-mib 512] [--clients 1,8,32]
Everything runs on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import free_port, stop, wait_http

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def run_clients(url: str, clients: int, size: int) -> float:
    """Seconds for ``clients`` concurrent whole-file downloads (each checked for size)."""
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0 or int(out) != size:
            raise SystemExit(f"download from {url} failed: exit {proc.returncode}, {out} bytes")
    return time.monotonic() - start


def measure(
    servers: list[tuple[str, int, str]], clients: int, size: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """Per server: (best aggregate GB/s, its server CPU seconds per GiB). Rounds alternate
    between the servers so a change in background load hits both alike."""
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):
        for name, pid, url in servers:
            cpu0 = cpu_seconds(pid)
            seconds = run_clients(url, clients, size)
            cpu = cpu_seconds(pid) - cpu0
            rate = clients * size / seconds / 1e9
            if rate > best.get(name, (0.0, 0.0))[0]:
                best[name] = (rate, cpu / (clients * size / 2**30))
    for name, (rate, cpu) in best.items():
        print(f"  {name:8} {clients:3} clients: {rate:6.2f} GB/s, {cpu:.3f} CPU-s/GiB", flush=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for tool in ("nginx", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install nginx-light curl)")
    size = args.size_mib * 2**20
    work = Path(tempfile.mkdtemp(prefix="kpc-bench-assets-"))
    os.chmod(work, 0o755)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        data = work / "data"
        asset = data / "assets" / "flatcar" / "bench" / "image.bin"
        asset.parent.mkdir(parents=True)
        with open(asset, "wb") as out:
            for _ in range(args.size_mib):
                out.write(os.urandom(2**20))
        for sub in ("groups", "profiles", "ignition", "generic"):
            (data / sub).mkdir()
        config = work / "kpc.yaml"
        config.write_text(
            "provisioning: {interface: lo, address: 127.0.0.1, subnet: 127.0.0.0/8}\n"
            f"bootcfg: {{data_dir: {data}}}\nos: {{version: 1.0.0}}\n"
        )
        kpc_port, nginx_port = free_port(), free_port()
        (work / "nginx.conf").write_text(NGINX_CONF.format(dir=work, port=nginx_port, root=data))
        nginx = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf")])
        procs.append(nginx)
        kpc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance",
                "bootcfg",
                "serve",
                "--listen",
                "127.0.0.1",
                "--port",
                str(kpc_port),
                "--no-access-log",
            ],
            env={**os.environ, "KPC_CONFIG": str(config)},
            cwd=REPO,
            stderr=subprocess.DEVNULL,
        )
        procs.append(kpc)
        path = "/assets/flatcar/bench/image.bin"
        kpc_url, nginx_url = (
            f"http://127.0.0.1:{kpc_port}{path}",
            f"http://127.0.0.1:{nginx_port}{path}",
        )
        wait_http(f"http://127.0.0.1:{kpc_port}/healthz")
        wait_http(nginx_url)
        run_clients(kpc_url, 1, size)  # warm the page cache
        print(
            f"{args.size_mib} MiB file, best of {args.rounds} rounds, {time.strftime('%Y-%m-%d')}"
        )
        rows = []
        servers = [("nginx", nginx.pid, nginx_url), ("bootcfg", kpc.pid, kpc_url)]
        for clients in (int(c) for c in args.clients.split(",")):
            best = measure(servers, clients, size, args.rounds)
            rows.append((clients, *best["nginx"], *best["bootcfg"]))
        print(
            "\n| clients | nginx GB/s | nginx CPU-s/GiB | bootcfg GB/s | bootcfg CPU-s/GiB "
            "| bootcfg/nginx |"
        )
        print("|---|---|---|---|---|---|")
        for clients, n_rate, n_cpu, k_rate, k_cpu in rows:
            print(
                f"| {clients} | {n_rate:.2f} | {n_cpu:.3f} | {k_rate:.2f} | {k_cpu:.3f} | "
                f"{100 * k_rate / n_rate:.0f} % |"
            )
    finally:
        stop(procs, lambda proc: signal.SIGTERM if proc is not procs[0] else signal.SIGQUIT)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
