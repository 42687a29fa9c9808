"""The etcd backend passes the same store tests as SQLite (they are imported and run here
with ``store`` an ``EtcdStore`` on a real etcd), plus what is particular to etcd."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator

import pytest

from appliance.drivers.etcd import EtcdClient
from appliance.errors import StateError
from appliance.state import etcd as etcd_module
from appliance.state.etcd import EtcdStore
from appliance.state.model import Machine
from appliance.state.store import MachineStore, Transition
from tests.bootcfg.test_store import (  # noqa: F401  (collected here, against etcd)
    test_bmc_inventory_makes_a_machine_known_by_mac,
    test_bmc_protocols_and_pinned_certificate,
    test_bmc_records_upsert,
    test_check_in_of_an_unknown_machine_creates_it_booting_locally,
    test_first_request_discovers_and_later_ones_update,
    test_life_cycle,
    test_list_filters_by_state_and_sorts,
    test_maintenance_survives_a_check_in,
    test_set_boot_and_forget,
    test_unknown_machine_is_a_clear_error,
    test_unnormalised_mac_refused,
)
from tests.bootcfg.test_store_events import (  # noqa: F401
    test_a_machines_life_is_recorded_in_order,
    test_audited_actions_and_events_without_a_machine,
    test_bad_event_input_is_refused_and_nothing_is_written,
    test_changes_since_is_a_cursor_over_every_machine,
    test_host_key_events_never_hold_the_key,
)
from tests.state.etcd_cluster import EtcdCluster


@pytest.fixture
def store(etcd_store: EtcdStore) -> Iterator[MachineStore]:
    yield etcd_store


MAC = "52:54:00:12:34:56"
OTHER = "52:54:00:00:00:02"


def _bump(m: Machine | None) -> Transition[int]:
    current = m if m is not None else Machine(mac=MAC)
    count = int(current.facts.get("count", 0)) + 1
    return Transition(dataclasses.replace(current, facts={"count": count}), count)


def test_two_hosts_writing_one_machine_lose_no_update(etcd_single: EtcdCluster) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}/"
    hosts = [EtcdStore(EtcdClient(etcd_single.endpoints), prefix) for _ in range(2)]
    told: list[int] = []
    lock = threading.Lock()

    def writer(store: EtcdStore) -> None:
        for _ in range(25):
            result = store.transact(MAC, _bump, 1.0)
            with lock:
                told.append(result)

    threads = [threading.Thread(target=writer, args=(h,)) for h in hosts for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = hosts[0].get(MAC)
    assert final is not None and final.facts["count"] == 150
    # every writer was told a different count: no two applied the same transition
    assert sorted(told) == list(range(1, 151))
    for h in hosts:
        h.close()


def test_forget_drops_the_history_and_logs_the_removal(etcd_store: EtcdStore) -> None:
    etcd_store.record_request(MAC, address=None, endpoint="ipxe", now=1.0)
    cursor = etcd_store.event_cursor()
    etcd_store.forget(MAC)
    assert etcd_store.events(MAC) == []
    assert [(e.kind, e.mac) for e in etcd_store.changes_since(cursor)] == [("forgotten", MAC)]
    assert etcd_store.check() == []


def test_the_log_is_bounded(etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_module, "EVENTS_PER_MACHINE", 5)
    monkeypatch.setattr(etcd_module, "TRIM_EVERY", 4)
    for i in range(12):
        etcd_store.record_request(MAC, address=None, endpoint=f"e{i}", now=float(i))
    kept = etcd_store.events(MAC)
    assert len(kept) <= 8 and kept[-1].detail["endpoint"] == "e11"
    ids = [e.id for e in kept]
    assert ids == sorted(set(ids))


def test_check_finds_orphans_and_a_newer_schema_is_refused(etcd_store: EtcdStore) -> None:
    client = EtcdClient([e.url for e in etcd_store._c.endpoints])
    etcd_store.record_request(MAC, address=None, endpoint="ipxe", now=1.0)
    client.put(f"{etcd_store.prefix}bmc_macs/{OTHER}", "198.18.1.9")
    client.put(f"{etcd_store.prefix}stray", "x")
    client.put(f"{etcd_store.prefix}machines/{OTHER}", "{not json")
    problems = etcd_store.check()
    assert any("bmc_macs" in p and "orphaned" in p for p in problems), problems
    assert any(p.startswith(f"{etcd_store.prefix}stray: orphaned") for p in problems)
    assert any(f"machines/{OTHER}: does not decode" in p for p in problems)
    client.put(f"{etcd_store.prefix}schema", '{"version": 99}')
    with pytest.raises(StateError, match="schema version 99, newer"):
        EtcdStore(client, etcd_store.prefix)


def test_a_lock_is_held_by_one_host_at_a_time(etcd_single: EtcdCluster) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}/"
    hosts = [EtcdStore(EtcdClient(etcd_single.endpoints), prefix) for _ in range(2)]
    inside: list[str] = []
    overlaps: list[str] = []

    def work(store: EtcdStore, name: str) -> None:
        for _ in range(5):
            with store.hold(["bmc/198.18.1.21", "bmc/198.18.1.22"], name, ttl=5):
                if inside:
                    overlaps.append(name)
                inside.append(name)
                store.get(MAC)  # a round trip to etcd while holding it
                inside.remove(name)

    threads = [threading.Thread(target=work, args=(h, f"host{i}")) for i, h in enumerate(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    busy = pytest.raises(StateError, match=r"bmc/x \(held by host0\)")
    with hosts[0].hold(["bmc/x"], "host0"), busy, hosts[1].hold(["bmc/y", "bmc/x"], "h1", wait=0.3):
        pass
    with hosts[1].hold(["bmc/y"], "h1", wait=0.3):  # the refused hold took nothing
        pass
