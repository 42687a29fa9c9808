"""A one-member etcd for the contract tests, shared by the session; each test has a prefix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from appliance.drivers.etcd import EtcdClient
from appliance.state.etcd import EtcdStore
from tests.state.etcd_cluster import EtcdCluster


@pytest.fixture(scope="session")
def etcd_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd1"), index=0, size=1)
    cluster.start()
    try:
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def etcd_store(etcd_single: EtcdCluster) -> Iterator[EtcdStore]:
    store = EtcdStore(EtcdClient(etcd_single.endpoints), f"t{uuid.uuid4().hex[:12]}/")
    yield store
    store.close()


@pytest.fixture
def etcd_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}/"
