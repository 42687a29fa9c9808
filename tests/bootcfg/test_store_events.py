"""The registry's event log: what each change appends, bounds, cursors, concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.errors import StateError
from appliance.state import sqlite as sqlite_module
from appliance.state.model import Bmc, BootMode, EventKind, MachineState
from appliance.state.sqlite import SqliteStore

MAC = "52:54:00:12:34:56"
OTHER = "52:54:00:00:00:02"
THIRD = "52:54:00:00:00:03"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "machines.db")
    yield s
    s.close()


def kinds(store: SqliteStore, mac: str) -> list[tuple[str, dict[str, object]]]:
    return [(e.kind, e.detail) for e in store.events(mac)]


def test_a_machines_life_is_recorded_in_order(store: SqliteStore) -> None:
    store.record_request(MAC, address="198.18.0.5", endpoint="boot.ipxe", now=1.0)
    store.record_request(
        MAC, address="198.18.0.5", endpoint="ipxe", now=2.0, detail={"profile": "install"}
    )
    store.set_state(MAC, MachineState.INSTALLING, 3.0)
    store.set_state(MAC, MachineState.INSTALLING, 3.5)  # no change, no state event
    store.install_complete(MAC, 4.0)
    store.check_in(MAC, {"address": "198.18.0.21"}, "198.18.0.21", 5.0)
    assert kinds(store, MAC) == [
        ("request", {"endpoint": "boot.ipxe", "address": "198.18.0.5"}),
        ("request", {"endpoint": "ipxe", "address": "198.18.0.5", "profile": "install"}),
        ("state", {"from": "discovered", "to": "installing"}),
        ("state", {"from": "installing", "to": "installed"}),
        ("boot", {"from": "install", "to": "local"}),
        ("checkin", {"address": "198.18.0.21"}),
        ("state", {"from": "installed", "to": "ready"}),
    ]
    assert [e.time for e in store.events(MAC)] == [1.0, 2.0, 3.0, 4.0, 4.0, 5.0, 5.0]
    assert store.events(OTHER) == []


def test_host_key_events_never_hold_the_key(store: SqliteStore) -> None:
    store.record_request(MAC, address=None, endpoint="ipxe", now=1.0)
    store.set_host_key(MAC, "ssh-ed25519 AAAAsecretish")
    store.set_boot(MAC, BootMode.RESCUE, 2.0)
    events = store.events(MAC)
    assert [e.kind for e in events] == ["request", "host-key", "boot"]
    assert events[1].detail == {"recorded": True}
    assert "AAAA" not in repr(events)


def test_changes_since_is_a_cursor_over_every_machine(store: SqliteStore) -> None:
    start = store.event_cursor()
    assert start == 0
    store.record_request(MAC, address=None, endpoint="ipxe", now=1.0)
    store.record_request(OTHER, address=None, endpoint="ipxe", now=2.0)
    store.record_bmc(Bmc(address="198.18.1.21", machine_mac=OTHER), 3.0)
    changes = store.changes_since(start)
    assert [(e.mac, e.kind) for e in changes] == [
        (MAC, "request"),
        (OTHER, "request"),
        (OTHER, "bmc"),
    ]
    cursor = changes[-1].id
    assert store.event_cursor() == cursor
    assert store.changes_since(cursor) == []
    store.set_state(MAC, MachineState.MAINTENANCE, 4.0)
    assert [(e.mac, e.detail["to"]) for e in store.changes_since(cursor)] == [(MAC, "maintenance")]
    assert len(store.changes_since(start, limit=2)) == 2


def test_audited_actions_and_events_without_a_machine(store: SqliteStore) -> None:
    action = {"who": "operator", "action": "power-on", "dry_run": True, "result": "ok"}
    store.record_request(MAC, address=None, endpoint="ipxe", now=1.0)
    event = store.record_event(MAC, EventKind.ACTION, action, 2.0)
    assert store.events(MAC)[-1] == event
    assert event.detail == action
    site = store.record_event(None, "action", {"who": "operator", "action": "pxe-all"}, 3.0)
    assert site.mac is None
    assert store.changes_since(event.id) == [site]


def test_bad_event_input_is_refused_and_nothing_is_written(store: SqliteStore) -> None:
    with pytest.raises(StateError, match="not JSON data"):
        store.record_event(MAC, "action", {"when": object()}, 1.0)
    with pytest.raises(StateError, match="not a normalised MAC"):
        store.record_event("52-54-00-12-34-56", "action", {}, 1.0)
    assert store.changes_since(0) == []


def test_the_log_is_bounded_per_machine_and_ids_are_never_reused(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "EVENTS_PER_MACHINE", 5)
    monkeypatch.setattr(sqlite_module, "PRUNE_ONE_IN", 1)  # prune at every append
    for i in range(12):
        store.record_request(MAC, address=None, endpoint=f"e{i}", now=float(i))
    store.record_request(OTHER, address=None, endpoint="only", now=20.0)
    assert [e.detail["endpoint"] for e in store.events(MAC)] == ["e7", "e8", "e9", "e10", "e11"]
    assert len(store.events(OTHER)) == 1
    assert store.events(MAC, limit=2)[-1].detail["endpoint"] == "e11"
    last = store.event_cursor()
    store.forget(OTHER)
    (gone,) = store.changes_since(last)
    assert (gone.mac, gone.kind, gone.id) == (OTHER, "forgotten", last + 1)
    assert store.events(OTHER) == [gone]


def test_pruning_now_and_then_still_bounds_every_history(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "EVENTS_PER_MACHINE", 20)
    for i in range(1500):  # two machines, interleaved, and one writing alone
        store.record_request(MAC, address=None, endpoint="ipxe", now=float(i))
        store.record_request(OTHER, address=None, endpoint="ipxe", now=float(i))
    for i in range(1500):
        store.record_request(THIRD, address=None, endpoint="ipxe", now=float(i))
    for mac in (MAC, OTHER, THIRD):
        kept = len(store.events(mac, limit=10_000))
        assert 20 <= kept <= 20 + 8 * sqlite_module.PRUNE_ONE_IN, (mac, kept)


def test_the_log_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "machines.db"
    with SqliteStore(path) as first:
        first.record_request(MAC, address=None, endpoint="ipxe", now=1.0)
        cursor = first.event_cursor()
    with SqliteStore(path) as second:
        assert second.event_cursor() == cursor
        assert [e.kind for e in second.events(MAC)] == ["request"]


def test_a_watcher_in_another_connection_sees_every_concurrent_change(tmp_path: Path) -> None:
    path = tmp_path / "machines.db"
    writers = [SqliteStore(path) for _ in range(4)]
    watcher = SqliteStore(path)
    macs = [f"52:54:00:00:01:{i:02x}" for i in range(4)]

    def write(store: SqliteStore, mac: str) -> None:
        for n in range(50):
            store.record_request(mac, address=None, endpoint="ipxe", now=float(n))

    pairs = zip(writers, macs, strict=True)
    threads = [threading.Thread(target=write, args=pair) for pair in pairs]
    for t in threads:
        t.start()
    seen: list[int] = []
    cursor = 0
    while any(t.is_alive() for t in threads) or (batch := watcher.changes_since(cursor)):
        batch = watcher.changes_since(cursor)
        if batch:
            seen.extend(e.id for e in batch)
            cursor = batch[-1].id
    for t in threads:
        t.join()
    for store in [*writers, watcher]:
        store.close()
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen)) == 200
