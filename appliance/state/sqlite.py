"""The machine registry in one SQLite file (WAL), implementing ``MachineStore``.

One connection per store, guarded by a lock so the store may be shared between threads.
Every write is one ``BEGIN IMMEDIATE`` transaction, so concurrent writers (the bootcfg service
and an operator's ``kpc nodes`` command) queue on SQLite's lock instead of losing updates.
WAL lets readers run while a write is in progress.

``transact`` is the one write path for machine records: read, decide (``rules``, or a
caller's decision such as bootcfg's server layer), write, all inside one transaction. The
named methods (``record_request``, ``install_complete``, ...) are transitions from
``appliance.state.rules`` applied through it.

The event log (table ``events``) is appended to inside the same transaction as the change
it records. It is bounded: a machine keeps its newest ``EVENTS_PER_MACHINE`` events (a few
dozen more between prunings), events about no machine their newest
``EVENTS_WITHOUT_MACHINE``. Ids come from AUTOINCREMENT, so they are never reused and serve
as the cursor of ``changes_since``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from appliance.config import SiteConfig
from appliance.errors import RegistryUnavailable, StateError
from appliance.mac import MAC_RE
from appliance.state import rules
from appliance.state.model import Bmc, BootMode, Event, EventKind, Machine, MachineState
from appliance.state.store import MachineStore, Step
from appliance.state.transitions import NamedTransitions, unknown_machine

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 10_000  # how long a command waits for another writer's lock
SERVICE_BUSY_TIMEOUT_MS = 2_000  # bootcfg's: a node hears "busy, retry" (503) instead
MIN_FREE_BYTES = 1 << 20  # below this the registry reports itself not writable
EVENTS_PER_MACHINE = 500
POLL_INTERVAL = 0.2  # seconds between looks at the log while waiting for a change
EVENTS_WITHOUT_MACHINE = 2000
# Pruning a machine's history costs an index walk of its EVENTS_PER_MACHINE newest events,
# so it runs on one append in PRUNE_ONE_IN (chosen by a hash of the event id, so that no
# pattern of writers can dodge it): a history may overshoot its bound by a few dozen events.
PRUNE_ONE_IN = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS machines (
    mac           TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    boot          TEXT NOT NULL,
    uuid          TEXT,
    hostname      TEXT,
    serial        TEXT,
    first_seen    REAL,
    last_seen     REAL,
    last_address  TEXT,
    last_endpoint TEXT,
    facts         TEXT NOT NULL DEFAULT '{}',
    bmc_address   TEXT,
    ssh_host_key  TEXT
);
CREATE INDEX IF NOT EXISTS machines_state ON machines(state);
CREATE TABLE IF NOT EXISTS bmcs (
    address        TEXT PRIMARY KEY,
    ipmi_versions  TEXT NOT NULL DEFAULT '[]',
    auth_types     TEXT NOT NULL DEFAULT '[]',
    iana           INTEGER,
    first_seen     REAL,
    last_seen      REAL,
    machine_mac    TEXT,
    protocols      TEXT NOT NULL DEFAULT '[]',
    tls_fingerprint TEXT,
    model          TEXT,
    serial         TEXT,
    uuid           TEXT
);
CREATE TABLE IF NOT EXISTS bmc_macs (
    mac            TEXT PRIMARY KEY,
    address        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    REAL NOT NULL,
    kind    TEXT NOT NULL,
    mac     TEXT,
    detail  TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_mac ON events(mac, id);
"""

# columns added to a table after its first release: (table, column, declaration)
_ADDED_COLUMNS = (
    ("bmcs", "protocols", "TEXT NOT NULL DEFAULT '[]'"),
    ("bmcs", "tls_fingerprint", "TEXT"),
    ("bmcs", "model", "TEXT"),
    ("bmcs", "serial", "TEXT"),
    ("bmcs", "uuid", "TEXT"),
    ("machines", "install_token", "TEXT"),
)

_MACHINE_COLUMNS = (
    "mac, state, boot, uuid, hostname, serial, first_seen, last_seen, last_address, "
    "last_endpoint, facts, bmc_address, ssh_host_key, install_token"
)

T = TypeVar("T")


def _machine(row: sqlite3.Row) -> Machine:
    return Machine(
        mac=row["mac"],
        state=MachineState(row["state"]),
        boot=BootMode(row["boot"]),
        uuid=row["uuid"],
        hostname=row["hostname"],
        serial=row["serial"],
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        last_address=row["last_address"],
        last_endpoint=row["last_endpoint"],
        facts=json.loads(row["facts"]),
        bmc_address=row["bmc_address"],
        ssh_host_key=row["ssh_host_key"],
        install_token=row["install_token"],
    )


def _bmc(row: sqlite3.Row, macs: tuple[str, ...] = ()) -> Bmc:
    return Bmc(
        address=row["address"],
        ipmi_versions=tuple(json.loads(row["ipmi_versions"])),
        auth_types=tuple(json.loads(row["auth_types"])),
        iana=row["iana"],
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        machine_mac=row["machine_mac"],
        protocols=tuple(json.loads(row["protocols"])),
        tls_fingerprint=row["tls_fingerprint"],
        model=row["model"],
        serial=row["serial"],
        uuid=row["uuid"],
        macs=macs,
    )


def _event(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"],
        time=row["time"],
        kind=row["kind"],
        mac=row["mac"],
        detail=json.loads(row["detail"]),
    )


def _append(
    db: sqlite3.Connection, mac: str | None, kind: str, detail: Mapping[str, Any], now: float
) -> Event:
    """Append one event inside the caller's transaction and drop what falls off the bound."""
    try:
        encoded = json.dumps(dict(detail), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise StateError(f"event detail is not JSON data: {exc}") from None
    cursor = db.execute(
        "INSERT INTO events (time, kind, mac, detail) VALUES (?, ?, ?, ?)",
        (now, str(kind), mac, encoded),
    )
    event_id = cursor.lastrowid
    assert event_id is not None
    if zlib.crc32(str(event_id).encode()) % PRUNE_ONE_IN == 0:
        _prune(db, mac)
    return Event(id=event_id, time=now, kind=str(kind), mac=mac, detail=json.loads(encoded))


def _prune(db: sqlite3.Connection, mac: str | None) -> None:
    """Drop what falls off the bound of ``mac``'s events (or of those about no machine)."""
    keep = EVENTS_PER_MACHINE if mac is not None else EVENTS_WITHOUT_MACHINE
    oldest_kept = db.execute(
        "SELECT id FROM events WHERE mac IS ? ORDER BY id DESC LIMIT 1 OFFSET ?",
        (mac, keep - 1),
    ).fetchone()
    if oldest_kept is not None:
        db.execute("DELETE FROM events WHERE mac IS ? AND id < ?", (mac, oldest_kept[0]))


def _check_mac(mac: str) -> str:
    if not MAC_RE.fullmatch(mac):
        raise StateError(
            f"not a normalised MAC address: {mac!r}",
            hint="MACs are stored as aa:bb:cc:dd:ee:ff (use appliance.config.normalize_mac)",
        )
    return mac


class SqliteStore(NamedTransitions):
    """``MachineStore`` on SQLite. ``path`` is created (with its schema) when missing."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._durable = True
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path),
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout_ms / 1000,
            )
        except (OSError, sqlite3.Error) as exc:
            raise StateError(
                f"cannot open the machine registry {path}: {exc}",
                hint="check that the directory exists and is writable (bootcfg.state_db)",
            ) from None
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = str(self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if mode.lower() != "wal":
                raise StateError(f"the machine registry {path} cannot use WAL (journal: {mode})")
            # NORMAL, plus an fsync of the WAL after every state-changing commit (_write):
            # an acknowledged install-complete survives power loss, while a request that
            # only moves "last seen" does not pay for a disk flush (docs/benchmarks.md)
            self._db.execute("PRAGMA synchronous = NORMAL")
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"the machine registry {path} has schema version {version}, "
                    f"newer than this kpc understands ({SCHEMA_VERSION})",
                    hint="upgrade kpc, or point bootcfg.state_db at another file",
                )
            with self._write() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                _add_columns(db)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StateError(
                f"{path} is not a usable machine registry: {exc}",
                hint="move the file away to start an empty registry",
            ) from None
        except StateError:
            self._db.close()
            raise

    # --- plumbing ---------------------------------------------------------------------

    def _bmc_row(self, db: sqlite3.Connection, address: str) -> Bmc | None:
        row = db.execute("SELECT * FROM bmcs WHERE address = ?", (address,)).fetchone()
        if row is None:
            return None
        macs = db.execute(
            "SELECT mac FROM bmc_macs WHERE address = ? ORDER BY mac", (address,)
        ).fetchall()
        return _bmc(row, tuple(m["mac"] for m in macs))

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back on any error. A database that cannot take the
        write (busy, locked, full, read-only, I/O error) raises ``RegistryUnavailable``."""
        with self._lock:
            self._durable = True  # a transaction may lower this before it commits
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from None
            try:
                yield self._db
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.OperationalError):
                    raise self._unavailable(exc) from None
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._rollback()
                raise self._unavailable(exc) from None
            if self._durable:
                self._sync_wal()

    def _sync_wal(self) -> None:
        """Flush the WAL (which holds the commit just made) to the disk."""
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # nothing was written
        except OSError as exc:
            raise RegistryUnavailable(f"the machine registry {self.path}: {exc}") from None
        try:
            os.fsync(fd)
        except OSError as exc:
            raise RegistryUnavailable(
                f"the machine registry {self.path} could not flush a commit to disk: {exc}",
                hint="the change may not survive a power loss; the request can be retried",
            ) from None
        finally:
            os.close(fd)

    def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction is gone either way; the write did not happen

    def _unavailable(self, exc: sqlite3.Error) -> RegistryUnavailable:
        return RegistryUnavailable(
            f"the machine registry {self.path} cannot take writes now: {exc}",
            hint="another process may hold its lock, or its file system is full or "
            "read-only; nothing was changed, the request can be retried",
        )

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return fn(self._db)
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from None

    def check_writable(self) -> None:
        """Raise ``RegistryUnavailable`` unless a write could be committed now: the write
        lock can be taken and the file system has room."""
        try:
            free = os.statvfs(self.path.parent)
        except OSError as exc:
            raise RegistryUnavailable(f"the machine registry {self.path}: {exc}") from None
        if free.f_bavail * free.f_frsize < MIN_FREE_BYTES:
            raise RegistryUnavailable(
                f"the file system of the machine registry {self.path} is full",
                hint="free space there; nothing is lost, writes resume by themselves",
            )
        if free.f_flag & os.ST_RDONLY:
            raise RegistryUnavailable(
                f"the file system of the machine registry {self.path} is read-only"
            )
        with self._write():
            self._durable = False

    def _row(self, db: sqlite3.Connection, mac: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = db.execute(
            f"SELECT {_MACHINE_COLUMNS} FROM machines WHERE mac = ?", (mac,)
        ).fetchone()
        return row

    def _require(self, db: sqlite3.Connection, mac: str) -> Machine:
        row = self._row(db, _check_mac(mac))
        if row is None:
            raise unknown_machine(mac)
        return _machine(row)

    def _put(self, db: sqlite3.Connection, m: Machine) -> None:
        db.execute(
            f"INSERT OR REPLACE INTO machines ({_MACHINE_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                m.mac,
                m.state.value,
                m.boot.value,
                m.uuid,
                m.hostname,
                m.serial,
                m.first_seen,
                m.last_seen,
                m.last_address,
                m.last_endpoint,
                json.dumps(m.facts, sort_keys=True),
                m.bmc_address,
                m.ssh_host_key,
                m.install_token,
            ),
        )

    # --- MachineStore -------------------------------------------------------------------

    def get(self, mac: str) -> Machine | None:
        def read(db: sqlite3.Connection) -> Machine | None:
            row = self._row(db, mac)
            return _machine(row) if row is not None else None

        return self._read(read)

    def machines(self, state: MachineState | None = None) -> list[Machine]:
        def read(db: sqlite3.Connection) -> list[Machine]:
            if state is None:
                rows = db.execute(f"SELECT {_MACHINE_COLUMNS} FROM machines ORDER BY mac")
            else:
                rows = db.execute(
                    f"SELECT {_MACHINE_COLUMNS} FROM machines WHERE state = ? ORDER BY mac",
                    (MachineState(state).value,),
                )
            return [_machine(row) for row in rows]

        return self._read(read)

    def _transaction(self, mac: str, step: Step[T], now: float) -> tuple[Machine | None, T]:
        """``transact``, also returning the record as stored afterwards."""
        _check_mac(mac)
        with self._write() as db:
            row = self._row(db, mac)
            before = _machine(row) if row is not None else None
            transition = step(before)
            after = transition.machine
            if after is not None and after.bmc_address is None:
                # a BMC inventory that lists this MAC names the machine's BMC
                inventoried = db.execute(
                    "SELECT address FROM bmc_macs WHERE mac = ?", (mac,)
                ).fetchone()
                if inventoried is not None:
                    after = dataclasses.replace(after, bmc_address=inventoried["address"])
            for kind, detail in transition.events:
                _append(db, mac, kind, detail, now)
            self._durable = after is not None and _state_changed(before, after)
            if after is not None and after != before:
                if after.mac != mac:
                    raise StateError(f"a transition on {mac} returned the record of {after.mac}")
                self._put(db, after)
                # a new record's changes count from a fresh discovery
                origin = before if before is not None else rules.new_machine(mac, now, after.boot)
                _note_changes(db, origin, after, now)
            return (after if after is not None else before), transition.result

    def forget(self, mac: str) -> None:
        with self._write() as db:
            self._require(db, mac)
            db.execute("DELETE FROM machines WHERE mac = ?", (mac,))
            db.execute("UPDATE bmcs SET machine_mac = NULL WHERE machine_mac = ?", (mac,))
            db.execute("DELETE FROM events WHERE mac = ?", (mac,))
            _append(db, mac, EventKind.FORGOTTEN, {}, time.time())

    def record_bmc(self, bmc: Bmc, now: float) -> Bmc:
        return self.record_bmcs([bmc], now)[0]

    def record_bmcs(self, bmcs: Sequence[Bmc], now: float) -> list[Bmc]:
        """Every BMC in one transaction: one flush to disk for a whole discovery."""
        with self._write() as db:
            return [self._upsert_bmc(db, bmc, now) for bmc in bmcs]

    def _upsert_bmc(self, db: sqlite3.Connection, bmc: Bmc, now: float) -> Bmc:
        db.execute(
            "INSERT INTO bmcs (address, ipmi_versions, auth_types, iana, first_seen, "
            "last_seen, machine_mac, protocols) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(address) DO UPDATE SET ipmi_versions = excluded.ipmi_versions, "
            "auth_types = excluded.auth_types, iana = COALESCE(excluded.iana, iana), "
            "last_seen = excluded.last_seen, "
            "machine_mac = COALESCE(excluded.machine_mac, machine_mac), "
            "protocols = CASE WHEN excluded.protocols = '[]' THEN protocols "
            "ELSE excluded.protocols END",
            (
                bmc.address,
                json.dumps(list(bmc.ipmi_versions)),
                json.dumps(list(bmc.auth_types)),
                bmc.iana,
                now,
                now,
                bmc.machine_mac,
                json.dumps(list(bmc.protocols)),
            ),
        )
        recorded = self._bmc_row(db, bmc.address)
        assert recorded is not None
        _append(db, recorded.machine_mac, EventKind.BMC, {"address": bmc.address}, now)
        return recorded

    def list_bmcs(self) -> list[Bmc]:
        def read(db: sqlite3.Connection) -> list[Bmc]:
            macs: dict[str, list[str]] = {}
            for row in db.execute("SELECT mac, address FROM bmc_macs ORDER BY mac"):
                macs.setdefault(row["address"], []).append(row["mac"])
            rows = db.execute("SELECT * FROM bmcs").fetchall()
            bmcs = (_bmc(r, tuple(macs.get(r["address"], ()))) for r in rows)
            return sorted(bmcs, key=lambda b: rules.address_order(b.address))

        return self._read(read)

    def record_bmc_inventory(
        self,
        address: str,
        *,
        model: str | None,
        serial: str | None,
        uuid: str | None,
        macs: tuple[str, ...],
        now: float,
    ) -> Bmc:
        for mac in macs:
            _check_mac(mac)
        with self._write() as db:
            if self._bmc_row(db, address) is None:
                raise StateError(f"no BMC {address} in the registry")
            db.execute(
                "UPDATE bmcs SET model = COALESCE(?, model), serial = COALESCE(?, serial), "
                "uuid = COALESCE(?, uuid), last_seen = ? WHERE address = ?",
                (model, serial, uuid, now, address),
            )
            db.execute("DELETE FROM bmc_macs WHERE address = ?", (address,))
            for mac in macs:
                db.execute(
                    "INSERT INTO bmc_macs (mac, address) VALUES (?, ?) "
                    "ON CONFLICT(mac) DO UPDATE SET address = excluded.address",
                    (mac, address),
                )
                db.execute("UPDATE machines SET bmc_address = ? WHERE mac = ?", (address, mac))
            known = [m for m in macs if self._row(db, m) is not None]
            if known:
                db.execute("UPDATE bmcs SET machine_mac = ? WHERE address = ?", (known[0], address))
            recorded = self._bmc_row(db, address)
            assert recorded is not None
            _append(db, recorded.machine_mac, EventKind.BMC, {"address": address}, now)
            return recorded

    def pin_bmc_cert(self, address: str, fingerprint: str | None) -> Bmc:
        with self._write() as db:
            if self._bmc_row(db, address) is None:
                db.execute("INSERT INTO bmcs (address) VALUES (?)", (address,))
            db.execute(
                "UPDATE bmcs SET tls_fingerprint = ? WHERE address = ?", (fingerprint, address)
            )
            recorded = self._bmc_row(db, address)
            assert recorded is not None
            return recorded

    def record_event(
        self, mac: str | None, kind: str, detail: Mapping[str, Any], now: float
    ) -> Event:
        if mac is not None:
            _check_mac(mac)
        with self._write() as db:
            return _append(db, mac, kind, detail, now)

    def events(self, mac: str, limit: int = 200) -> list[Event]:
        def read(db: sqlite3.Connection) -> list[Event]:
            rows = db.execute(
                "SELECT * FROM events WHERE mac = ? ORDER BY id DESC LIMIT ?", (mac, limit)
            ).fetchall()
            return [_event(row) for row in reversed(rows)]

        return self._read(read)

    def changes_since(self, cursor: int, limit: int = 1000) -> list[Event]:
        def read(db: sqlite3.Connection) -> list[Event]:
            rows = db.execute(
                "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)
            )
            return [_event(row) for row in rows]

        return self._read(read)

    def wait_changes(self, cursor: int, timeout: float) -> list[Event]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.changes_since(cursor)
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))

    def event_cursor(self) -> int:
        def read(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            return int(row[0]) if row is not None else 0

        return self._read(read)

    @contextmanager
    def hold(
        self, names: Sequence[str], holder: str, *, ttl: int = 15, wait: float = 60.0
    ) -> Iterator[None]:
        """``flock`` on a file per name beside the registry (``locks/``): the processes of this
        deploy host (SQLite is never shared between hosts) queue; a dead holder's locks go
        with its process. ``ttl`` is for the etcd backend."""
        folder = self.path.parent / "locks"
        folder.mkdir(mode=0o700, exist_ok=True)
        deadline = time.monotonic() + wait
        held: list[int] = []
        try:
            for name in sorted(set(names)):
                path = folder / (name.replace("/", "_") + ".lock")
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                held.append(fd)
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            who = os.pread(fd, 200, 0).decode(errors="replace").strip()
                            raise StateError(
                                f"busy: {name} (held by {who or 'another process'})",
                                hint="wait for that operation to finish, then retry",
                            ) from None
                        time.sleep(POLL_INTERVAL)
                os.ftruncate(fd, 0)
                os.pwrite(fd, holder.encode(), 0)
            yield
        finally:
            for fd in held:
                os.close(fd)  # releases its lock

    def health(self) -> tuple[bool, list[str]]:
        try:
            self.check_writable()
        except RegistryUnavailable as exc:
            return False, [exc.message]
        return True, [f"{self.describe()}: writable"]

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def check(self) -> list[str]:
        """Problems with the registry file, one line each (empty: consistent)."""

        def read(db: sqlite3.Connection) -> list[str]:
            problems: list[str] = []
            integrity = [str(r[0]) for r in db.execute("PRAGMA integrity_check")]
            if integrity != ["ok"]:
                problems += [f"SQLite integrity check: {line}" for line in integrity[:20]]
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version != SCHEMA_VERSION:
                problems.append(
                    f"schema version {version}, this kpc writes {SCHEMA_VERSION} "
                    "(opening the registry with this kpc upgrades it)"
                )
            for row in db.execute(f"SELECT {_MACHINE_COLUMNS} FROM machines"):
                mac = row["mac"]
                if not MAC_RE.fullmatch(mac):
                    problems.append(f"machine {mac!r}: not a normalised MAC")
                try:
                    _machine(row)
                except (ValueError, TypeError) as exc:
                    problems.append(f"machine {mac}: unreadable record: {exc}")
            orphans = db.execute(
                "SELECT address, machine_mac FROM bmcs WHERE machine_mac IS NOT NULL AND "
                "machine_mac NOT IN (SELECT mac FROM machines)"
            ).fetchall()
            problems += [
                f"BMC {r['address']} points at machine {r['machine_mac']}, which is not in "
                "the registry"
                for r in orphans
            ]
            strays = db.execute(
                "SELECT mac, address FROM bmc_macs WHERE address NOT IN (SELECT address FROM bmcs)"
            ).fetchall()
            problems += [
                f"MAC {r['mac']} is listed for BMC {r['address']}, which is not in the registry"
                for r in strays
            ]
            unknown = db.execute(
                "SELECT DISTINCT mac FROM events WHERE mac IS NOT NULL AND "
                "mac NOT IN (SELECT mac FROM machines) AND id NOT IN "
                "(SELECT id FROM events WHERE kind = 'forgotten')"
            ).fetchall()
            problems += [
                f"events of machine {r['mac']}, which is not in the registry" for r in unknown
            ]
            return problems

        return self._read(read)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _add_columns(db: sqlite3.Connection) -> None:
    """Bring a registry made by an older kpc up to date (columns are only ever added)."""
    present: dict[str, set[str]] = {}
    for table, column, declaration in _ADDED_COLUMNS:
        if table not in present:
            rows = db.execute(f"PRAGMA table_info({table})").fetchall()
            present[table] = {str(r["name"]) for r in rows}
        if column not in present[table]:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            present[table].add(column)


def _state_changed(before: Machine | None, after: Machine) -> bool:
    """Whether a transition changes more than when and from where the machine was last
    seen: such commits are flushed to disk before they are acknowledged."""
    if before is None:
        return True
    seen_only = dataclasses.replace(
        after,
        last_seen=before.last_seen,
        last_address=before.last_address,
        last_endpoint=before.last_endpoint,
        uuid=before.uuid,
        hostname=before.hostname,
        serial=before.serial,
    )
    return seen_only != before


def _note_changes(db: sqlite3.Connection, before: Machine, after: Machine, now: float) -> None:
    """Append the state, boot and host-key changes between two versions of a machine."""
    for kind, detail in rules.change_events(before, after):
        _append(db, after.mac, kind, detail, now)


def state_db_path(config: SiteConfig) -> Path:
    """Where the registry lives: ``bootcfg.state_db``, else ``bootcfg.data_dir/machines.db``."""
    return config.bootcfg.state_db or config.bootcfg.data_dir / "machines.db"


def open_store(config: SiteConfig, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> MachineStore:
    """The site's machine registry (SQLite)."""
    return SqliteStore(state_db_path(config), busy_timeout_ms=busy_timeout_ms)
