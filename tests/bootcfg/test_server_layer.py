"""The server layer: one request, one registry transaction (record, match, decide, state)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.state.model import BootMode, Machine, MachineState
from appliance.state.sqlite import SqliteStore
from appliance.state.store import Transition
from tests.bootcfg.conftest import MAC
from tests.bootcfg.server import Server


@pytest.fixture
def writes(server: Server) -> Iterator[list[str]]:
    """Every write transaction the service's registry connection begins."""
    seen: list[str] = []

    def trace(statement: str) -> None:
        if statement.strip().upper().startswith("BEGIN"):
            seen.append(statement)

    server.store._db.set_trace_callback(trace)
    yield seen
    server.store._db.set_trace_callback(None)


@pytest.mark.parametrize(
    "path",
    [
        f"/ipxe?mac={MAC}",
        f"/ignition?mac={MAC}",
        f"/metadata?mac={MAC}",
        f"/ignition?mac={MAC}&os=installed",
    ],
)
def test_a_request_is_one_write_transaction(server: Server, writes: list[str], path: str) -> None:
    reply = server.get(path)
    assert reply.status == 200, reply.text
    assert len(writes) == 1, writes
    machine = server.store.get(MAC)
    assert machine is not None and machine.last_endpoint == path[1:].split("?")[0]


def test_ipxe_records_and_moves_to_installing_in_one_transaction(
    server: Server, writes: list[str]
) -> None:
    assert server.get(f"/ipxe?mac={MAC}").status == 200
    machine = server.store.get(MAC)
    assert machine is not None
    assert (machine.state, machine.boot, machine.last_endpoint) == (
        MachineState.INSTALLING,
        BootMode.INSTALL,
        "ipxe",
    )
    assert len(writes) == 1


def test_install_complete_is_one_write_transaction(server: Server, writes: list[str]) -> None:
    server.get(f"/ipxe?mac={MAC}")
    writes.clear()
    reply = server.post(f"/install-complete?mac={MAC}")
    assert reply.status == 200, reply.text
    assert len(writes) == 1
    machine = server.store.get(MAC)
    assert machine is not None and machine.boot is BootMode.LOCAL


def test_request_without_mac_writes_nothing(server: Server, writes: list[str]) -> None:
    assert server.get("/ipxe?uuid=1b4e28ba-2fa1-11d2-883f-0016d3cca427").status in (200, 403)
    assert writes == []
    assert server.store.machines() == []


def test_transact_rolls_back_when_the_decision_fails(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    with SqliteStore(tmp_path / "m.db") as store:
        store.record_request(MAC, address=None, endpoint="ipxe", now=1.0)

        def boom(m: Machine | None) -> Transition[None]:
            raise RuntimeError("decision failed")

        with pytest.raises(RuntimeError):
            store.transact(MAC, boom, 2.0)
        machine = store.get(MAC)
        assert machine is not None and machine.last_seen == 1.0
        # a step that returns the same record writes nothing and returns its result
        assert store.transact(MAC, lambda m: Transition(m, "same"), 3.0) == "same"
        assert [e.kind for e in store.events(MAC)] == ["request"]


def test_the_request_and_its_decision_are_one_event_with_the_state_change(server: Server) -> None:
    assert server.get(f"/ipxe?mac={MAC}").status == 200
    events = server.store.events(MAC)
    assert [(e.kind, e.detail.get("to")) for e in events] == [
        ("request", None),
        ("state", "installing"),
    ]
    assert events[0].detail["profile"] == "install"
    assert events[0].detail["outcome"] == "profile"
    assert server.post(f"/install-complete?mac={MAC}").status == 200
    assert [(e.kind, e.detail.get("to")) for e in server.store.events(MAC)][2:] == [
        ("request", None),
        ("state", "installed"),
        ("boot", "local"),
    ]
