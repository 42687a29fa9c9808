"""kpc state export | import | check: a registry moved through versioned JSON, exactly."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.errors import StateError
from appliance.state.model import Bmc, BootMode, MachineState
from appliance.state.portable import parse_document
from appliance.state.sqlite import SqliteStore
from tests.bootcfg.test_cli import kpc, site  # noqa: F401  (fixture)
from tests.conftest import REPO

MAC = "52:54:00:12:34:56"
OTHER = "52:54:00:00:00:02"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def _fill(db: Path) -> None:
    with SqliteStore(db) as store:
        store.record_request(MAC, address="198.18.0.50", endpoint="ipxe", now=1.0, uuid="u-1")
        store.install_complete(MAC, now=2.0)
        store.set_host_key(MAC, HOST_KEY)
        store.check_in(MAC, {"hostname": "n1", "address": "198.18.0.21"}, "198.18.0.21", 3.0)
        store.record_request(OTHER, address=None, endpoint="ipxe", now=4.0)
        store.record_bmc(Bmc(address="198.18.1.21", protocols=("ipmi",)), now=5.0)
        store.record_bmc_inventory(
            "198.18.1.21", model="R650", serial="S1", uuid="u-1", macs=(MAC,), now=6.0
        )
        store.pin_bmc_cert("198.18.1.21", "ab" * 32)


def test_export_then_import_into_an_empty_registry_is_exact(site: Path, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "data" / "machines.db"
    _fill(db)
    code, out = kpc(site, "state", "export", "-o", str(tmp_path / "reg.json"))
    assert code == 0, out
    exported = tmp_path / "reg.json"
    assert oct(exported.stat().st_mode & 0o777) == "0o600"
    doc = json.loads(exported.read_text())
    assert (doc["format"], doc["version"]) == ("kpc-registry", 1)
    assert "install_token" not in exported.read_text()  # no secret in a file that travels
    with SqliteStore(db) as store:
        before = (store.machines(), store.list_bmcs())
    db.rename(tmp_path / "old.db")
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    code, out = kpc(site, "state", "import", str(exported), "--dry-run")
    assert code == 0 and "would add 2 machines" in out, out
    assert SqliteStore(db).machines() == []
    code, out = kpc(site, "state", "import", str(exported))
    assert code == 0 and "added 2 machines" in out, out
    with SqliteStore(db) as store:
        machines, bmcs = store.machines(), store.list_bmcs()
    strip = [m.__class__(**{**m.__dict__, "install_token": None}) for m in before[0]]
    assert machines == strip
    assert [b.__dict__ | {"first_seen": None, "last_seen": None} for b in bmcs] == [
        b.__dict__ | {"first_seen": None, "last_seen": None} for b in before[1]
    ]
    # a second import changes nothing; a different record is a conflict, kept unless --replace
    code, out = kpc(site, "state", "import", str(exported))
    assert code == 0 and "added 0 machines" in out
    doc["machines"][0]["hostname"] = "renamed"
    exported.write_text(json.dumps(doc))
    code, out = kpc(site, "state", "import", str(exported))
    assert (code == 1 and "conflict: 52:54:00:00:00:02" in out) or "conflict: " + MAC in out
    code, out = kpc(site, "state", "import", str(exported), "--replace")
    assert code == 0 and "replaced 1" in out
    code, out = kpc(site, "state", "check")
    assert code == 0 and "consistent (2 machines)" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="x"), "not a kpc registry export"),
        (lambda d: d.update(version=2), "version 2"),
        (lambda d: d["machines"][0].update(mac="52-54-00-12-34-56"), "machines[0].mac"),
        (lambda d: d["machines"][0].update(state="gone"), "machines[0]"),
        (lambda d: d["machines"][0].update(colour="red"), "unknown field 'colour'"),
        (lambda d: d["machines"][0].update(last_seen="x"), "machines[0].last_seen"),
        (lambda d: d["machines"][0].update(install_token="t"), "unknown field"),
        (lambda d: d["bmcs"].append({"address": "a", "macs": "x"}), "bmcs[0].macs"),
    ],
)
def test_a_bad_export_is_refused_with_its_place(change: object, message: str) -> None:
    doc = {
        "format": "kpc-registry",
        "version": 1,
        "machines": [{"mac": MAC, "state": "ready", "boot": "local"}],
        "bmcs": [],
    }
    assert callable(change)
    change(doc)
    with pytest.raises(StateError) as caught:
        parse_document(doc)
    assert message in caught.value.message


def test_import_refuses_a_bad_file_before_writing_anything(site: Path, tmp_path: Path) -> None:  # noqa: F811
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "format": "kpc-registry",
                "version": 1,
                "machines": [{"mac": MAC}, {"mac": OTHER, "boot": "sideways"}],
            }
        )
    )
    code, out = kpc(site, "state", "import", str(bad))
    assert code != 0 and "machines[1]" in out
    with SqliteStore(tmp_path / "data" / "machines.db") as store:
        assert store.machines() == []


def test_check_finds_orphaned_records(site: Path, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "data" / "machines.db"
    _fill(db)
    with sqlite3.connect(db) as raw:
        raw.execute("DELETE FROM machines WHERE mac = ?", (MAC,))  # behind kpc's back
    code, out = kpc(site, "state", "check")
    assert code != 0
    assert "BMC 198.18.1.21 points at machine 52:54:00:12:34:56" in out
    assert "events of machine 52:54:00:12:34:56" in out
    with SqliteStore(db) as store:
        other = store.get(OTHER)
    assert other is not None and (other.state, other.boot) == (
        MachineState.DISCOVERED,
        BootMode.INSTALL,
    )  # check reads; it changes nothing


def test_nodes_watch_streams_changes_made_by_another_process(site: Path, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "data" / "machines.db"
    SqliteStore(db).close()
    env = {**os.environ, "KPC_CONFIG": str(site), "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "nodes", "watch", "--count", "2", "--json",
         "--interval", "0.05"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stderr is not None and proc.stdout is not None
        assert "watching the machine registry" in proc.stderr.readline()
        with SqliteStore(db) as store:
            store.record_request(MAC, address="198.18.0.50", endpoint="ipxe", now=1.0)
            store.set_boot(MAC, BootMode.LOCAL, now=2.0)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["mac"], e["kind"], e["detail"].get("to")) for e in events] == [
        (MAC, "request", None),
        (MAC, "boot", "local"),
    ]
    assert proc.returncode == 0
