"""Fixtures for the node-access tests: keys, sshd servers, a registry."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.drivers.ssh import Credentials, load_private_key
from appliance.nodes.access import SshSettings
from appliance.state.model import Machine
from appliance.state.sqlite import SqliteStore
from tests.conftest import require_tool
from tests.nodes.sshd import PORT, SshdFarm, keygen


@pytest.fixture(scope="session")
def client_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``good`` is authorised on every test server; ``wrong`` on none."""
    require_tool("ssh-keygen")
    root = tmp_path_factory.mktemp("kpcF-keys")
    return {"good": keygen(root / "good"), "wrong": keygen(root / "wrong")}


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[SshdFarm]:
    require_tool("sshd", "ssh-keygen")
    farm = SshdFarm(tmp_path / "sshd")
    try:
        yield farm
    finally:
        farm.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    db = SqliteStore(tmp_path / "machines.db")
    try:
        yield db
    finally:
        db.close()


def add_ready(store: SqliteStore, mac: str, address: str, hostname: str | None = None) -> Machine:
    """A machine that went through check-in: state ready, with its address."""
    now = time.time()
    store.record_request(mac, address=address, endpoint="/ipxe", now=now)
    facts = {"address": address, "hostname": hostname or f"node-{address}"}
    return store.check_in(mac, facts, address, now)


@pytest.fixture
def ready() -> Callable[..., Machine]:
    return add_ready


def mac_for(index: int) -> str:
    return f"52:54:00:07:00:{index:02x}"


@pytest.fixture
def settings(client_keys: dict[str, Path]) -> SshSettings:
    return SshSettings(
        credentials=Credentials("root", (load_private_key(client_keys["good"]),)),
        port=PORT,
        timeout=3.0,
        command_timeout=60.0,
        fanout=32,
    )
