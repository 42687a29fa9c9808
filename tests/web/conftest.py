"""Fixtures for the web view: a registry with machines, the web server, a client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.state.model import MachineState
from appliance.state.sqlite import SqliteStore
from tests.web.server import Client, WebServer, write_config

MACS = [f"52:54:00:aa:00:{i:02x}" for i in range(6)]


def seed(db: Path) -> None:
    with SqliteStore(db) as store:
        for i, mac in enumerate(MACS):
            store.record_request(mac, address=f"198.18.0.{20 + i}", endpoint="ipxe", now=100.0)
        store.set_state(MACS[1], MachineState.INSTALLING, 110.0)
        store.check_in(
            MACS[2],
            {"hostname": "node2", "address": "198.18.0.22", "bmc_address": "198.18.1.22"},
            "198.18.0.22",
            120.0,
        )


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[WebServer]:
    config = write_config(tmp_path, actions=True)
    seed(tmp_path / "machines.db")
    server = WebServer(config).start()
    yield server
    server.stop()


@pytest.fixture
def client(web_server: WebServer) -> Client:
    c = Client(web_server.url)
    assert c.login().status == 303
    return c
