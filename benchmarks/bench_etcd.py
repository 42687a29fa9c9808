"""The registry backends under bootcfg, in one run: SQLite (the baseline), etcd x1, etcd x3.

For each backend a real ``kpc bootcfg serve`` on loopback takes concurrent clients:

- ``/ipxe`` of installed machines (the reboot path: one transaction, the last-seen update);
- ``POST /checkin`` (facts stored, state ready).

Reported: requests per second and p50/p99 latency. Then failover on etcd x3 with two
bootcfg instances: the time from ``kill -9`` of the bootcfg a node was using until the other
serves it (the node moves on when its connection is refused), and the time from ``kill -9``
of the etcd leader until a write is acknowledged again.

    python benchmarks/bench_etcd.py [--clients 8] [--requests 40] [--machines 32]

etcd members use loopback ports 23750-23762 / 23850-23862 (the tests use 237[0-2]x).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliance.config import parse_config  # noqa: E402
from appliance.drivers.etcd import EtcdClient  # noqa: E402
from appliance.state.backend import open_store  # noqa: E402
from tests.state.etcd_cluster import EtcdCluster  # noqa: E402

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mac(k: int) -> str:
    return f"52:54:00:16:{k >> 8 & 255:02x}:{k & 255:02x}"


def _site(root: Path, name: str, state: str) -> Path:
    config = root / f"{name}.yaml"
    config.write_text(
        "provisioning: {interface: eth0, address: 198.18.0.1, subnet: 198.18.0.0/24}\n"
        f"bootcfg: {{data_dir: {root / name}, port: 8080, node_auth: open}}\n"
        "os: {version: 3815.2.0}\n"
        f"paths: {{source_dir: {REPO}}}\n" + state
    )
    (root / "op.pub").write_text(KEY + "\n")
    env = {**os.environ, "KPC_CONFIG": str(config)}
    subprocess.run(
        [sys.executable, "-m", "appliance", "bootcfg", "init", "--ssh-key", str(root / "op.pub")],
        env=env,
        check=True,
        capture_output=True,
    )
    return config


def _serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "bootcfg", "serve", "--listen", "127.0.0.1",
         "--port", str(port), "--no-access-log"],
        env={**os.environ, "KPC_CONFIG": str(config)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bootcfg on {port} did not start")


def _request(url: str, body: bytes | None = None) -> int:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as reply:
            reply.read()
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _load(
    clients: int, requests: int, make: Callable[[int, int], tuple[str, bytes | None]]
) -> dict[str, float]:
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def worker(c: int) -> None:
        mine = []
        for r in range(requests):
            url, body = make(c, r)
            start = time.perf_counter()
            status = _request(url, body)
            mine.append(time.perf_counter() - start)
            if status != 200:
                with lock:
                    failures[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "failed": failures[0],
    }


def _prepare(config: Path, machines: int) -> None:
    store = open_store(parse_config(config.read_text()))
    try:
        for k in range(machines):
            store.record_request(_mac(k), address="198.18.0.50", endpoint="ipxe", now=1.0)
            store.install_complete(_mac(k), 2.0)
    finally:
        store.close()


def _measure(config: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    _prepare(config, args.machines)
    port = _free_port()
    proc = _serve(config, port)
    base = f"http://127.0.0.1:{port}"
    try:

        def ipxe(c: int, r: int) -> tuple[str, bytes | None]:
            return f"{base}/ipxe?mac={_mac((c * 7 + r) % args.machines)}", None

        def checkin(c: int, r: int) -> tuple[str, bytes | None]:
            facts = {"hostname": f"n{c}", "address": "198.18.0.60", "seq": r}
            return f"{base}/checkin?mac={_mac((c * 7 + r) % args.machines)}", json.dumps(
                facts
            ).encode()

        _load(2, 5, ipxe)  # warm-up
        return {
            "ipxe": _load(args.clients, args.requests, ipxe),
            "checkin": _load(args.clients, args.requests, checkin),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _etcd_state(cluster: EtcdCluster, prefix: str) -> str:
    return (
        f"state: {{backend: etcd, etcd: {{endpoints: [{', '.join(cluster.endpoints)}], "
        f"prefix: {prefix}}}}}\n"
    )


def _failover(root: Path, cluster: EtcdCluster) -> dict[str, float]:
    state = _etcd_state(cluster, "failover/")
    configs = [_site(root, f"fo{i}", state) for i in range(2)]
    _prepare(configs[0], 4)
    ports = [_free_port(), _free_port()]
    procs = [_serve(c, p) for c, p in zip(configs, ports, strict=True)]
    try:
        urls = [f"http://127.0.0.1:{p}/ipxe?mac={_mac(1)}" for p in ports]
        assert _request(urls[0]) == 200
        procs[0].send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        procs[0].wait()
        served = None
        while served is None:  # the node: first its host, then on to the next
            for url in urls:
                if _request(url) == 200:
                    served = time.perf_counter()
                    break
        host_failover = served - killed

        client = EtcdClient(cluster.endpoints)
        leader_id = None
        for _url, status in client.member_status():
            if isinstance(status, dict):
                leader_id = status.get("leader")
        index = next(
            i
            for i, (url, status) in enumerate(client.member_status())
            if isinstance(status, dict) and status["header"]["member_id"] == leader_id
        )
        cluster.kill(index)
        killed = time.perf_counter()
        checkin = f"http://127.0.0.1:{ports[1]}/checkin?mac={_mac(1)}"
        while _request(checkin, b'{"hostname": "x"}') != 200:
            time.sleep(0.01)
        leader_failover = time.perf_counter() - killed
        cluster.start(index)
        cluster.wait_healthy()
        return {"bootcfg_killed_s": host_failover, "etcd_leader_killed_s": leader_failover}
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--machines", type=int, default=32)
    args = parser.parse_args()
    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, {platform.processor() or 'x86_64'}",
        "clients": args.clients,
        "requests_per_client": args.requests,
    }
    with tempfile.TemporaryDirectory(prefix="kpc-bench-etcd-") as tmp:
        root = Path(tmp)
        results["sqlite"] = _measure(_site(root, "sqlite", ""), args)
        one = EtcdCluster(root / "etcd1", index=5, size=1)
        three = EtcdCluster(root / "etcd3", index=6, size=3)
        for cluster in (one, three):
            (cluster.root).mkdir()
            cluster.start()
        try:
            one.wait_healthy()
            three.wait_healthy()
            results["etcd x1"] = _measure(_site(root, "e1", _etcd_state(one, "bench/")), args)
            results["etcd x3"] = _measure(_site(root, "e3", _etcd_state(three, "bench/")), args)
            results["failover"] = _failover(root, three)
        finally:
            one.stop()
            three.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
