"""Many nodes at once: 50 real sshd on 127.0.7.1-50, each checked and reported; the fan-out
bound holds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from appliance.cli.main import app
from appliance.nodes.runner import run_parallel
from appliance.state.model import Machine
from appliance.state.sqlite import SqliteStore
from tests.nodes.conftest import mac_for
from tests.nodes.sshd import SshdFarm
from tests.nodes.test_cli import NO_AGENT, write_config

NODES = 50


def test_fifty_nodes_in_parallel(
    farm: SshdFarm,
    client_keys: dict[str, Path],
    store: SqliteStore,
    ready: Callable[..., Machine],
    tmp_path: Path,
) -> None:
    servers = [
        farm.start(f"127.0.7.{i}", [client_keys["good"]], wait=False) for i in range(1, NODES + 1)
    ]
    for server in servers:
        farm.wait_ready(server)
    for i, server in enumerate(servers, start=1):
        ready(store, mac_for(i), server.address, f"n{i:02d}")
    config = write_config(tmp_path, client_keys["good"], store, timeout=10)

    start = time.monotonic()
    result = CliRunner().invoke(
        app,
        [
            "-c",
            str(config),
            "nodes",
            "check",
            "--json",
            "--min-free-gib",
            "0.01",
            "--optional",
            "docker",
        ],
        env=NO_AGENT,
    )
    took = time.monotonic() - start
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert len(data["nodes"]) == NODES
    by_mac = {n["mac"]: n for n in data["nodes"]}
    for i, server in enumerate(servers, start=1):
        node = by_mac[mac_for(i)]
        assert node["fit"] is True, node
        assert node["address"] == server.address
        assert node["checks"]["os"]["status"] == "ok"
        # each node's own key, recorded against its own MAC: nothing crossed between threads
        machine = store.get(mac_for(i))
        assert machine is not None and machine.ssh_host_key == server.host_key_line
    print(f"\n{NODES} nodes checked in {took:.1f}s")


def test_fanout_bounds_concurrency() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def work(item: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            if running == 4:
                release.set()
        release.wait(5)
        with lock:
            running -= 1
        return item * 2

    finished: list[int] = []
    results = run_parallel(list(range(20)), work, 4, lambda item, _r: finished.append(item))
    assert results == [i * 2 for i in range(20)]  # in item order, whatever the finishing order
    assert peak == 4
    assert sorted(finished) == list(range(20))
