"""The SQLite machine registry: transitions, persistence, concurrency, BMC records."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from appliance.config import parse_config
from appliance.errors import StateError
from appliance.state.model import Bmc, BootMode, MachineState
from appliance.state.sqlite import SqliteStore, open_store, state_db_path
from appliance.state.store import MachineStore

MAC = "52:54:00:12:34:56"
FACTS = {
    "hostname": "node1",
    "os": {"name": "flatcar", "version": "3815.2.0"},
    "interfaces": [{"name": "eth0", "mac": MAC, "addresses": ["198.18.0.21/24"]}],
    "disks": [{"name": "vda", "size": 10737418240}],
    "address": "198.18.0.21",
    "bmc_address": "198.18.1.21",
}


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "machines.db")
    yield s  # type: ignore[misc]
    s.close()


def test_is_a_machine_store(store: SqliteStore) -> None:
    as_protocol: MachineStore = store
    assert as_protocol.get(MAC) is None
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_first_request_discovers_and_later_ones_update(store: SqliteStore) -> None:
    m = store.record_request(MAC, address="198.18.0.5", endpoint="boot.ipxe", now=100.0)
    assert (m.state, m.boot, m.first_seen, m.last_seen) == (
        MachineState.DISCOVERED,
        BootMode.INSTALL,
        100.0,
        100.0,
    )
    m = store.record_request(
        MAC, address="198.18.0.6", endpoint="ipxe", now=105.0, uuid="u-1", serial="S1"
    )
    assert m.first_seen == 100.0
    assert m.last_seen == 105.0
    assert m.last_address == "198.18.0.6"
    assert m.last_endpoint == "ipxe"
    assert (m.uuid, m.serial, m.hostname) == ("u-1", "S1", None)
    # a later request without uuid keeps the one already known
    m = store.record_request(MAC, address=None, endpoint="ignition", now=106.0)
    assert m.uuid == "u-1"
    assert store.get(MAC) == m


def test_life_cycle(store: SqliteStore) -> None:
    store.record_request(MAC, address="198.18.0.5", endpoint="ipxe", now=1.0)
    m = store.set_state(MAC, MachineState.INSTALLING, now=2.0)
    assert m.state is MachineState.INSTALLING
    store.set_host_key(MAC, "ssh-ed25519 AAAAold")
    m = store.install_complete(MAC, now=3.0)
    assert (m.state, m.boot, m.ssh_host_key) == (MachineState.INSTALLED, BootMode.LOCAL, None)
    m = store.check_in(MAC, FACTS, "198.18.0.21", now=4.0)
    assert m.state is MachineState.READY
    assert m.facts == FACTS
    assert m.hostname == "node1"
    assert m.bmc_address == "198.18.1.21"
    assert m.management_address == "198.18.0.21"
    assert m.last_endpoint == "checkin"
    m = store.set_host_key(MAC, "ssh-ed25519 AAAAnew")
    assert m.ssh_host_key == "ssh-ed25519 AAAAnew"


def test_maintenance_survives_a_check_in(store: SqliteStore) -> None:
    store.record_request(MAC, address=None, endpoint="ipxe", now=1.0)
    store.set_state(MAC, MachineState.MAINTENANCE, now=2.0)
    m = store.check_in(MAC, FACTS, None, now=3.0)
    assert m.state is MachineState.MAINTENANCE
    assert m.facts["hostname"] == "node1"


def test_check_in_of_an_unknown_machine_creates_it_booting_locally(store: SqliteStore) -> None:
    m = store.check_in(MAC, {}, "198.18.0.9", now=1.0)
    assert (m.state, m.boot, m.first_seen) == (MachineState.READY, BootMode.LOCAL, 1.0)


def test_set_boot_and_forget(store: SqliteStore) -> None:
    store.record_request(MAC, address=None, endpoint="ipxe", now=1.0)
    assert store.set_boot(MAC, BootMode.RESCUE, now=2.0).boot is BootMode.RESCUE
    store.forget(MAC)
    assert store.get(MAC) is None
    assert store.machines() == []


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.set_state(MAC, MachineState.READY, 1.0),
        lambda s: s.set_boot(MAC, BootMode.LOCAL, 1.0),
        lambda s: s.install_complete(MAC, 1.0),
        lambda s: s.set_host_key(MAC, None),
        lambda s: s.forget(MAC),
    ],
)
def test_unknown_machine_is_a_clear_error(store: SqliteStore, call: object) -> None:
    with pytest.raises(StateError, match=f"no machine with MAC {MAC}"):
        call(store)  # type: ignore[operator]


@pytest.mark.parametrize("bad", ["52-54-00-12-34-56", "AA:BB:CC:DD:EE:FF", "x", "'; DROP"])
def test_unnormalised_mac_refused(store: SqliteStore, bad: str) -> None:
    with pytest.raises(StateError, match="not a normalised MAC"):
        store.record_request(bad, address=None, endpoint="ipxe", now=1.0)
    assert store.machines() == []


def test_list_filters_by_state_and_sorts(store: SqliteStore) -> None:
    macs = [f"52:54:00:00:00:{i:02x}" for i in (3, 1, 2)]
    for mac in macs:
        store.record_request(mac, address=None, endpoint="ipxe", now=1.0)
    store.check_in(macs[0], {}, None, now=2.0)
    assert [m.mac for m in store.machines()] == sorted(macs)
    assert [m.mac for m in store.machines(MachineState.READY)] == [macs[0]]
    assert len(store.machines(MachineState.DISCOVERED)) == 2


def test_restart_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "machines.db"
    with SqliteStore(path) as first:
        first.record_request(MAC, address="198.18.0.5", endpoint="ipxe", now=1.0)
        first.install_complete(MAC, now=2.0)
        first.record_bmc(Bmc(address="198.18.1.21", ipmi_versions=("2.0",)), now=3.0)
        before = first.get(MAC)
    with SqliteStore(path) as second:
        assert second.get(MAC) == before
        assert [b.address for b in second.list_bmcs()] == ["198.18.1.21"]


def test_bmc_records_upsert(store: SqliteStore) -> None:
    b = store.record_bmc(
        Bmc(address="10.0.0.10", ipmi_versions=("1.5", "2.0"), auth_types=("md5",), iana=343),
        now=10.0,
    )
    assert (b.first_seen, b.last_seen, b.iana) == (10.0, 10.0, 343)
    b = store.record_bmc(Bmc(address="10.0.0.10", ipmi_versions=("2.0",), machine_mac=MAC), 20.0)
    assert (b.first_seen, b.last_seen, b.iana) == (10.0, 20.0, 343)
    assert b.ipmi_versions == ("2.0",)
    assert b.machine_mac == MAC
    store.record_bmc(Bmc(address="10.0.0.9"), now=21.0)
    store.record_bmc(Bmc(address="10.0.0.100"), now=21.0)
    assert [x.address for x in store.list_bmcs()] == ["10.0.0.9", "10.0.0.10", "10.0.0.100"]
    # a discovery's finds at once: new ones added, known ones updated the same way
    batch = store.record_bmcs([Bmc("10.0.0.10", protocols=("ipmi",)), Bmc("10.0.0.11")], 30.0)
    assert [(x.address, x.first_seen, x.last_seen) for x in batch] == [
        ("10.0.0.10", 10.0, 30.0),
        ("10.0.0.11", 30.0, 30.0),
    ]
    assert batch[0].machine_mac == MAC and batch[0].iana == 343
    assert len(store.list_bmcs()) == 4


def test_bmc_protocols_and_pinned_certificate(store: SqliteStore) -> None:
    b = store.record_bmc(Bmc(address="10.0.0.10", protocols=("ipmi", "redfish")), now=1.0)
    assert b.protocols == ("ipmi", "redfish")
    assert store.record_bmc(Bmc(address="10.0.0.10"), now=2.0).protocols == ("ipmi", "redfish")
    assert store.record_bmc(Bmc("10.0.0.10", protocols=("redfish",)), 3.0).protocols == ("redfish",)
    assert store.pin_bmc_cert("10.0.0.10", "ab" * 32).tls_fingerprint == "ab" * 32
    # discovery again never touches the pin; only forgetting does
    assert store.record_bmc(Bmc("10.0.0.10", protocols=("redfish",)), 4.0).tls_fingerprint
    assert store.pin_bmc_cert("10.0.0.10", None).tls_fingerprint is None
    # a BMC given by address only (never discovered) can be pinned too
    assert store.pin_bmc_cert("10.0.0.11", "cd" * 32).first_seen is None


def test_bmc_inventory_makes_a_machine_known_by_mac(store: SqliteStore) -> None:
    other = "52:54:00:aa:bb:cc"
    store.record_request(other, address=None, endpoint="ipxe", now=1.0)
    store.record_bmc(Bmc(address="10.0.0.10", protocols=("redfish",)), now=1.0)
    b = store.record_bmc_inventory(
        "10.0.0.10", model="R650", serial="SN1", uuid="u-1", macs=(MAC, other), now=2.0
    )
    assert (b.model, b.serial, b.uuid, b.macs) == ("R650", "SN1", "u-1", (MAC, other))
    assert b.machine_mac == other  # the one already in the registry
    assert store.get(other).bmc_address == "10.0.0.10"  # type: ignore[union-attr]
    # a machine first seen later (its first PXE request) gets its BMC from the inventory
    assert store.record_request(MAC, address=None, endpoint="ipxe", now=3.0).bmc_address == (
        "10.0.0.10"
    )
    assert store.list_bmcs()[0].macs == (MAC, other)
    # inventory again: the MAC list is replaced; model etc. kept when not reported
    b = store.record_bmc_inventory(
        "10.0.0.10", model=None, serial=None, uuid=None, macs=(MAC,), now=4.0
    )
    assert (b.model, b.macs) == ("R650", (MAC,))
    with pytest.raises(StateError, match="normalised MAC"):
        store.record_bmc_inventory(
            "10.0.0.10", model=None, serial=None, uuid=None, macs=("AA-BB",), now=5.0
        )
    with pytest.raises(StateError, match=r"no BMC 10\.0\.0\.99"):
        store.record_bmc_inventory("10.0.0.99", model=None, serial=None, uuid=None, macs=(), now=5)


def test_a_registry_from_schema_version_1_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "machines.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE bmcs (address TEXT PRIMARY KEY, ipmi_versions TEXT NOT NULL DEFAULT '[]',"
        " auth_types TEXT NOT NULL DEFAULT '[]', iana INTEGER, first_seen REAL, last_seen REAL,"
        " machine_mac TEXT);"
        "INSERT INTO bmcs (address, ipmi_versions) VALUES ('10.0.0.5', '[\"2.0\"]');"
        "PRAGMA user_version = 1;"
    )
    db.close()
    with SqliteStore(path) as store:
        (old,) = store.list_bmcs()
        assert (old.address, old.ipmi_versions, old.protocols) == ("10.0.0.5", ("2.0",), ())
        assert store.pin_bmc_cert("10.0.0.5", "ef" * 32).tls_fingerprint == "ef" * 32


def test_concurrent_writers_from_two_connections_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "machines.db"
    stores = [SqliteStore(path), SqliteStore(path)]
    try:

        def work(index: int) -> None:
            s = stores[index % 2]
            for i in range(25):
                mac = f"52:54:00:00:{index:02x}:{i:02x}"
                s.record_request(mac, address=None, endpoint="ipxe", now=float(i))
                s.check_in(mac, {"n": i}, None, now=float(i))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ready = stores[0].machines(MachineState.READY)
        assert len(ready) == 200
    finally:
        for s in stores:
            s.close()


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "machines.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="not a usable machine registry"):
        SqliteStore(path)


def test_open_store_uses_the_config(tmp_path: Path) -> None:
    base = "provisioning: {interface: eth0, address: 198.18.0.1, subnet: 198.18.0.0/24}\n"
    config = parse_config(base + f"bootcfg: {{data_dir: {tmp_path}}}\n")
    assert state_db_path(config) == tmp_path / "machines.db"
    store = open_store(config)
    try:
        store.record_request(MAC, address=None, endpoint="ipxe", now=1.0)
    finally:
        store.close()
    assert (tmp_path / "machines.db").exists()
    other = tmp_path / "elsewhere" / "reg.db"
    config = parse_config(base + f"bootcfg: {{data_dir: {tmp_path}, state_db: {other}}}\n")
    assert state_db_path(config) == other
