"""Following the registry live (``wait_changes``, ``kpc nodes watch``) on both backends: a
change made through another connection (another deploy host) arrives while waiting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.drivers.etcd import EtcdClient
from appliance.state.etcd import EtcdStore
from appliance.state.sqlite import SqliteStore
from appliance.state.store import MachineStore
from tests.conftest import REPO, wait_for
from tests.state.etcd_cluster import EtcdCluster

MAC = "52:54:00:12:34:56"


@pytest.fixture(params=["sqlite", "etcd"])
def pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[MachineStore, MachineStore]]:
    """Two connections to one registry: the watcher's and a writer's."""
    if request.param == "sqlite":
        stores: list[MachineStore] = [SqliteStore(tmp_path / "m.db") for _ in range(2)]
    else:
        cluster: EtcdCluster = request.getfixturevalue("etcd_single")
        prefix = f"t{uuid.uuid4().hex[:12]}/"
        stores = [EtcdStore(EtcdClient(cluster.endpoints), prefix) for _ in range(2)]
    yield stores[0], stores[1]
    for s in stores:
        s.close()


def test_a_waiting_watcher_gets_a_change_from_another_connection(
    pair: tuple[MachineStore, MachineStore],
) -> None:
    watcher, writer = pair
    cursor = watcher.event_cursor()
    assert watcher.wait_changes(cursor, 0.3) == []  # nothing happened: empty at the deadline
    got: list[object] = []
    waiting = threading.Thread(target=lambda: got.extend(watcher.wait_changes(cursor, 30)))
    waiting.start()
    writer.record_request(MAC, address="198.18.0.5", endpoint="ipxe", now=1.0)
    waiting.join(40)
    assert [(e.mac, e.kind) for e in got] == [(MAC, "request")]  # type: ignore[attr-defined]


def test_kpc_nodes_watch_streams_changes(tmp_path: Path, etcd_single: EtcdCluster) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}/"
    config = tmp_path / "kpc.yaml"
    config.write_text(
        "provisioning: {interface: eth0, address: 198.18.0.1, subnet: 198.18.0.0/24}\n"
        f"bootcfg: {{data_dir: {tmp_path / 'data'}}}\n"
        f"paths: {{source_dir: {REPO}}}\n"
        f"state: {{backend: etcd, etcd: {{endpoints: [{etcd_single.endpoints[0]}], "
        f"prefix: {prefix}}}}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "nodes", "watch", "--json", "--count", "3"],
        env={**os.environ, "KPC_CONFIG": str(config)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    other_host = EtcdStore(EtcdClient(etcd_single.endpoints), prefix)
    try:
        assert proc.stderr is not None
        wait_for(lambda: "watching" in proc.stderr.readline(), 30, "the watch to start", alive=proc)
        other_host.record_request(MAC, address="198.18.0.5", endpoint="ipxe", now=1.0)
        other_host.install_complete(MAC, 2.0)
        out, err = proc.communicate(timeout=60)
    finally:
        other_host.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["mac"], e["kind"]) for e in lines] == [
        (MAC, "request"),
        (MAC, "state"),
        (MAC, "boot"),
    ]
    assert lines[1]["detail"] == {"from": "discovered", "to": "installed"}
