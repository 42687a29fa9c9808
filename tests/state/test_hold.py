"""Locks across processes and deploy hosts (``MachineStore.hold``), on both backends: one
holder at a time, the holder named when busy, and a holder killed with -9 releases them."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.drivers.etcd import EtcdClient
from appliance.errors import StateError
from appliance.state.etcd import EtcdStore
from appliance.state.sqlite import SqliteStore
from appliance.state.store import MachineStore
from tests.conftest import REPO, wait_for
from tests.state.etcd_cluster import EtcdCluster

HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
{open}
with store.hold(["bmc/198.18.1.21"], "host-b pid 1", ttl=2):
    print("held", flush=True)
    sys.stdin.read()  # until killed
"""


@pytest.fixture(params=["sqlite", "etcd"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[MachineStore, str]]:
    if request.param == "sqlite":
        db = tmp_path / "m.db"
        store: MachineStore = SqliteStore(db)
        opener = (
            "from pathlib import Path\n"
            "from appliance.state.sqlite import SqliteStore\n"
            f"store = SqliteStore(Path({str(db)!r}))"
        )
    else:
        cluster: EtcdCluster = request.getfixturevalue("etcd_single")
        prefix = f"t{uuid.uuid4().hex[:12]}/"
        store = EtcdStore(EtcdClient(cluster.endpoints), prefix)
        opener = (
            "from appliance.drivers.etcd import EtcdClient\n"
            "from appliance.state.etcd import EtcdStore\n"
            f"store = EtcdStore(EtcdClient({cluster.endpoints!r}), {prefix!r})"
        )
    yield store, opener
    store.close()


def test_a_killed_holder_releases_and_a_busy_lock_names_its_holder(
    setup: tuple[MachineStore, str],
) -> None:
    store, opener = setup
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(repo=str(REPO), open=opener)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        busy = pytest.raises(StateError, match=r"bmc/198.18.1.21 \(held by host-b pid 1\)")
        with busy, store.hold(["bmc/198.18.1.21"], "host-a", wait=0.3):
            pass
        with store.hold(["bmc/198.18.1.22"], "host-a", wait=0.3):
            pass  # another BMC is free meanwhile
        proc.kill()  # kill -9: no clean release
        proc.wait(10)

        def taken() -> bool:
            with store.hold(["bmc/198.18.1.21"], "host-a", wait=0.1):
                return True

        wait_for(taken, 30, "the dead holder's lock to be released")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
