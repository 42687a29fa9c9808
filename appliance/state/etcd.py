"""The machine registry on etcd v3, implementing ``MachineStore`` for several deploy hosts.

Keys, all under the site's prefix (``state.etcd.prefix``, default ``kpc/``)::

    schema                  {"version": N}
    machines/<mac>          a Machine as JSON (``appliance.state.codec``)
    bmcs/<address>          a Bmc as JSON (without its MACs)
    bmc_macs/<mac>          the address of the BMC whose inventory lists <mac>
    events/<mac>/<t>.<i>    one event (machine events); ``events/-/...`` for the others
    locks/<name>            a held lock (e.g. bmc/<address>): its holder, bound to a lease

Every transition is a compare-and-swap: ``transact`` reads the record (and the BMC
inventory entry for its MAC) in one round trip, calls the step, and commits the new record
and its events in one etcd transaction that only succeeds if neither key changed since the
read (``mod_revision``). When another deploy host got there first the step runs again on
the new record (steps are pure), so two hosts never apply conflicting transitions and no
update is lost.

Event ids: every event of one transaction is created at that transaction's revision ``r``;
the ``i``-th gets id ``r * 16 + i`` (at most 16 per transaction), so ids grow with etcd's
revision on every host and ``changes_since`` is a range on create revision.

When etcd cannot serve (no quorum, no member reachable) writes raise
``RegistryUnavailable`` (bootcfg: 503 with Retry-After); ``get`` falls back to a member's
local copy (a serializable read) and then to the last record this process read, so a known
machine can still be told how to boot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from appliance.config import MAC_RE, EtcdSettings, SecretRef
from appliance.drivers import etcd as drv
from appliance.errors import RegistryUnavailable, StateError
from appliance.state import codec, rules
from appliance.state.model import Bmc, Event, EventKind, Machine, MachineState
from appliance.state.store import Step
from appliance.state.transitions import NamedTransitions, unknown_machine

SCHEMA_VERSION = 1
EVENTS_PER_MACHINE = 500
EVENTS_WITHOUT_MACHINE = 2000
EVENTS_PER_TXN = 16
TRIM_EVERY = 64  # appends to one machine's log between two checks of its bound
MAX_ATTEMPTS = 100  # compare-and-swap rounds before a transition gives up (contention)
BATCH = 100  # operations per etcd transaction (etcd's default limit is 128)
NO_MAC = "-"
LOCK_POLL = 0.2  # seconds between tries of a busy lock
DOWN_PAUSE = 1.0  # seconds writes fail at once after etcd could not serve one

T = TypeVar("T")


def _check_mac(mac: str) -> str:
    if not MAC_RE.fullmatch(mac):
        raise StateError(
            f"not a normalised MAC address: {mac!r}",
            hint="MACs are stored as aa:bb:cc:dd:ee:ff (use appliance.config.normalize_mac)",
        )
    return mac


def _dumps(data: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(data), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise StateError(f"event detail is not JSON data: {exc}") from None


def _key_file(ref: SecretRef, environ: Mapping[str, str]) -> str:
    """A path ``ssl`` can load the client key from, without writing it to disk or argv: the
    referenced file itself (after the owner-only check), or an in-memory file."""
    text = ref.resolve(environ)  # checks a file's permissions; never shown
    if ref.file is not None:
        return str(ref.file)
    fd = os.memfd_create("kpc-etcd-key", os.MFD_CLOEXEC)
    os.write(fd, text.encode())
    return f"/proc/{os.getpid()}/fd/{fd}"


def connect(settings: EtcdSettings, environ: Mapping[str, str]) -> drv.EtcdClient:
    """An etcd client for ``settings``; secrets are resolved from their references here."""
    password = settings.password.resolve(environ) if settings.password is not None else None
    key_file = _key_file(settings.key, environ) if settings.key is not None else None
    try:
        return drv.EtcdClient(
            settings.endpoints,
            ca_file=str(settings.ca_file) if settings.ca_file else None,
            cert_file=str(settings.cert_file) if settings.cert_file else None,
            key_file=key_file,
            user=settings.user,
            password=password,
            timeout=settings.timeout,
        )
    except (OSError, ValueError) as exc:  # ssl errors are OSErrors
        raise StateError(
            f"cannot set up TLS for etcd: {exc}",
            hint="check state.etcd.ca_file, cert_file and key",
        ) from None
    except drv.EtcdError as exc:
        raise StateError(str(exc), hint="check state.etcd.endpoints") from None


class EtcdStore(NamedTransitions):
    """``MachineStore`` on an etcd v3 cluster."""

    def __init__(self, client: drv.EtcdClient, prefix: str = "kpc/") -> None:
        self._c = client
        self.prefix = prefix
        self._last: dict[str, Machine] = {}  # the newest record read or written, per MAC
        self._appends: dict[str, int] = {}
        self._lock = threading.Lock()
        self._down_until = 0.0  # etcd failed: until then, fail at once (a registry thread
        # waiting out a timeout per request would turn every request into a 503 by deadline)
        try:
            self._check_schema()
        except RegistryUnavailable:
            # no quorum now: open anyway (reads of known machines still work; writes are
            # refused until it is back). The schema is checked on a later open.
            self._down_until = 0.0

    def _check_schema(self) -> None:
        """Refuse a registry written by a newer kpc; mark a new one with our version."""
        with self._etcd():
            try:
                schema = self._c.get(self._k("schema"))
            except drv.EtcdUnavailable:
                schema = self._c.get(self._k("schema"), serializable=True)
                if schema is None:
                    raise
            if schema is None:
                self._c.txn(
                    [drv.cmp_absent(self._k("schema"))],
                    [drv.op_put(self._k("schema"), json.dumps({"version": SCHEMA_VERSION}))],
                )
                return
        version = self._schema_version(schema.value)
        if version > SCHEMA_VERSION:
            raise StateError(
                f"the machine registry {self.describe()} has schema version {version}, "
                f"newer than this kpc understands ({SCHEMA_VERSION})",
                hint="upgrade kpc on this deploy host",
            )

    # --- plumbing ---------------------------------------------------------------------

    def _k(self, *parts: str) -> str:
        return self.prefix + "".join(parts)

    def describe(self) -> str:
        return f"etcd {', '.join(e.url for e in self._c.endpoints)} (prefix {self.prefix})"

    @contextmanager
    def _etcd(self) -> Iterator[None]:
        if time.monotonic() < self._down_until:
            raise RegistryUnavailable(
                f"the machine registry ({self.describe()}) cannot take writes now: "
                "etcd did not answer a moment ago",
                hint="etcd has no quorum or no member is reachable; the request can be retried",
            )
        try:
            yield
        except drv.EtcdUnavailable as exc:
            self._down_until = time.monotonic() + DOWN_PAUSE
            raise RegistryUnavailable(
                f"the machine registry ({self.describe()}) cannot take writes now: {exc}",
                hint="etcd has no quorum or no member is reachable; nothing was changed, "
                "the request can be retried ('kpc state check' shows each member)",
            ) from None
        except drv.EtcdError as exc:
            raise StateError(
                f"the machine registry ({self.describe()}) refused a request: {exc}",
                hint="check state.etcd's user, password and certificates",
            ) from None

    @staticmethod
    def _schema_version(value: str) -> int:
        try:
            return int(json.loads(value)["version"])
        except (ValueError, KeyError, TypeError):
            return -1

    def _machine(self, kv: drv.KeyValue) -> Machine:
        try:
            data = json.loads(kv.value)
        except ValueError:
            raise StateError(f"the registry key {kv.key} is not JSON") from None
        return codec.machine_from_data(data, f"the registry key {kv.key}")

    def _bmc(self, kv: drv.KeyValue, macs: tuple[str, ...] = ()) -> Bmc:
        try:
            data = json.loads(kv.value)
        except ValueError:
            raise StateError(f"the registry key {kv.key} is not JSON") from None
        return dataclasses.replace(
            codec.bmc_from_data(data, f"the registry key {kv.key}"), macs=macs
        )

    def _event(self, kv: drv.KeyValue) -> Event:
        data = json.loads(kv.value)
        index = int(kv.key.rsplit(".", 1)[1], 16)
        data["id"] = kv.create_revision * EVENTS_PER_TXN + index
        return codec.event_from_data(data, f"the registry key {kv.key}")

    def _event_ops(
        self, mac: str | None, events: Sequence[tuple[str, Mapping[str, Any]]], now: float
    ) -> list[dict[str, Any]]:
        if len(events) > EVENTS_PER_TXN:
            raise StateError(f"a transition appended {len(events)} events (at most 16)")
        token = uuid.uuid4().hex
        ops = []
        for i, (kind, detail) in enumerate(events):
            value = {
                "time": now,
                "kind": str(kind),
                "mac": mac,
                "detail": json.loads(_dumps(detail)),
            }
            key = self._k("events/", mac or NO_MAC, "/", f"{token}.{i:02x}")
            ops.append(drv.op_put(key, json.dumps(value, sort_keys=True)))
        return ops

    def _appended(self, mac: str | None, count: int) -> None:
        """Keep a log within its bound: checked every ``TRIM_EVERY`` appends."""
        if not count:
            return
        name = mac or NO_MAC
        with self._lock:
            total = self._appends.get(name, 0) + count
            self._appends[name] = total
        if total // TRIM_EVERY == (total - count) // TRIM_EVERY:
            return
        keep = EVENTS_PER_MACHINE if mac is not None else EVENTS_WITHOUT_MACHINE
        prefix = self._k("events/", name, "/")
        try:
            found = self._c.range(prefix, drv.prefix_end(prefix), count_only=True).count
            if found <= keep:
                return
            old = self._c.range(
                prefix,
                drv.prefix_end(prefix),
                keys_only=True,
                sort_target="CREATE",
                sort_order="ASCEND",
                limit=found - keep,
            ).kvs
            for start in range(0, len(old), BATCH):
                self._c.txn([], [drv.op_delete(kv.key) for kv in old[start : start + BATCH]])
        except drv.EtcdError:
            pass  # trimming is housekeeping; the next round does it

    # --- MachineStore -------------------------------------------------------------------

    def get(self, mac: str) -> Machine | None:
        """The machine's record. Without quorum: a member's local copy, else the last one
        this process read (both possibly stale); ``RegistryUnavailable`` if neither."""
        key = self._k("machines/", mac)
        try:
            if time.monotonic() < self._down_until:
                raise drv.EtcdUnavailable("etcd did not answer a moment ago")
            kv = self._c.get(key)
        except drv.EtcdUnavailable as exc:
            self._down_until = max(self._down_until, time.monotonic() + DOWN_PAUSE)
            try:
                kv = self._c.get(key, serializable=True)
            except drv.EtcdUnavailable:
                with self._lock:
                    if mac in self._last:
                        return self._last[mac]
                raise RegistryUnavailable(
                    f"the machine registry ({self.describe()}) cannot be read now: {exc}",
                    hint="no etcd member is reachable; the request can be retried",
                ) from None
            if kv is None:
                return self._last.get(mac)
            return self._machine(kv)
        except drv.EtcdError as exc:
            raise StateError(
                f"the machine registry ({self.describe()}) refused a request: {exc}"
            ) from None
        machine = self._machine(kv) if kv is not None else None
        self._remember(mac, machine)
        return machine

    def _remember(self, mac: str, machine: Machine | None) -> None:
        with self._lock:
            if machine is None:
                self._last.pop(mac, None)
            else:
                self._last[mac] = machine

    def machines(self, state: MachineState | None = None) -> list[Machine]:
        prefix = self._k("machines/")
        with self._etcd():
            kvs = self._c.range(prefix, drv.prefix_end(prefix)).kvs
        found = [self._machine(kv) for kv in kvs]
        if state is not None:
            found = [m for m in found if m.state is MachineState(state)]
        return sorted(found, key=lambda m: m.mac)

    def _transaction(self, mac: str, step: Step[T], now: float) -> tuple[Machine | None, T]:
        _check_mac(mac)
        key = self._k("machines/", mac)
        inventory_key = self._k("bmc_macs/", mac)
        for _ in range(MAX_ATTEMPTS):
            with self._etcd():
                read = self._c.txn([], [drv.op_range(key), drv.op_range(inventory_key)])
            record, inventory = read.ranges()
            before = self._machine(record[0]) if record else None
            revision = record[0].mod_revision if record else 0
            inventory_revision = inventory[0].mod_revision if inventory else 0
            transition = step(before)
            after = transition.machine
            if after is not None and after.bmc_address is None and inventory:
                # a BMC inventory that lists this MAC names the machine's BMC
                after = dataclasses.replace(after, bmc_address=inventory[0].value)
            events = list(transition.events)
            ops: list[dict[str, Any]] = []
            if after is not None and after != before:
                if after.mac != mac:
                    raise StateError(f"a transition on {mac} returned the record of {after.mac}")
                ops.append(drv.op_put(key, json.dumps(codec.machine_to_data(after))))
                origin = before if before is not None else rules.new_machine(mac, now, after.boot)
                events.extend(rules.change_events(origin, after))
            stored = after if after is not None and after != before else before
            if not ops and not events:
                self._remember(mac, stored)
                return stored, transition.result
            ops.extend(self._event_ops(mac, events, now))
            with self._etcd():
                done = self._c.txn(
                    [
                        drv.cmp_mod_revision(key, revision),
                        drv.cmp_mod_revision(inventory_key, inventory_revision),
                    ],
                    ops,
                )
            if done.succeeded:
                self._remember(mac, stored)
                self._appended(mac, len(events))
                return stored, transition.result
        raise RegistryUnavailable(
            f"the record of {mac} kept changing under {MAX_ATTEMPTS} attempts to update it",
            hint="other deploy hosts are writing it at the same time; the request can be retried",
        )

    def forget(self, mac: str) -> None:
        _check_mac(mac)
        key = self._k("machines/", mac)
        events = self._k("events/", mac, "/")
        for _ in range(MAX_ATTEMPTS):
            with self._etcd():
                read = self._c.txn([], [drv.op_range(key), self._bmcs_range()])
            record, bmc_kvs = read.ranges()
            if not record:
                raise unknown_machine(mac)
            compares = [drv.cmp_mod_revision(key, record[0].mod_revision)]
            ops = [drv.op_delete(key), drv.op_delete(events, drv.prefix_end(events))]
            for kv in bmc_kvs:
                bmc = self._bmc(kv)
                if bmc.machine_mac == mac:
                    compares.append(drv.cmp_mod_revision(kv.key, kv.mod_revision))
                    ops.append(self._bmc_put(dataclasses.replace(bmc, machine_mac=None)))
            # the machine's own log is gone with it; its removal is logged without a machine
            now = time.time()
            value = {"time": now, "kind": str(EventKind.FORGOTTEN), "mac": mac, "detail": {}}
            ops.append(
                drv.op_put(
                    self._k("events/", NO_MAC, "/", f"{uuid.uuid4().hex}.00"),
                    json.dumps(value, sort_keys=True),
                )
            )
            with self._etcd():
                if self._c.txn(compares, ops).succeeded:
                    self._remember(mac, None)
                    self._appended(None, 1)
                    return
        raise RegistryUnavailable(f"the record of {mac} kept changing; retry")

    # --- BMCs ---------------------------------------------------------------------------

    def _bmcs_range(self) -> dict[str, Any]:
        prefix = self._k("bmcs/")
        return drv.op_range(prefix, drv.prefix_end(prefix))

    def _bmc_put(self, bmc: Bmc) -> dict[str, Any]:
        data = codec.bmc_to_data(bmc, with_macs=False)
        return drv.op_put(self._k("bmcs/", bmc.address), json.dumps(data, sort_keys=True))

    def _bmc_macs(self, address: str) -> tuple[str, ...]:
        prefix = self._k("bmc_macs/")
        with self._etcd():
            kvs = self._c.range(prefix, drv.prefix_end(prefix)).kvs
        return tuple(sorted(kv.key[len(prefix) :] for kv in kvs if kv.value == address))

    def _update_bmc(
        self,
        address: str,
        change: Callable[[Bmc | None], Bmc],
        now: float,
        event: bool = True,
    ) -> Bmc:
        key = self._k("bmcs/", address)
        for _ in range(MAX_ATTEMPTS):
            with self._etcd():
                kv = self._c.get(key)
            before = self._bmc(kv) if kv is not None else None
            after = change(before)
            ops = [self._bmc_put(after)]
            if event:
                details = ((EventKind.BMC, {"address": address}),)
                ops.extend(self._event_ops(after.machine_mac, details, now))
            compares = [drv.cmp_mod_revision(key, kv.mod_revision if kv else 0)]
            with self._etcd():
                if self._c.txn(compares, ops).succeeded:
                    if event:
                        self._appended(after.machine_mac, 1)
                    return dataclasses.replace(after, macs=self._bmc_macs(address))
        raise RegistryUnavailable(f"the record of BMC {address} kept changing; retry")

    def record_bmc(self, bmc: Bmc, now: float) -> Bmc:
        def change(old: Bmc | None) -> Bmc:
            if old is None:
                return dataclasses.replace(bmc, first_seen=now, last_seen=now, macs=())
            return dataclasses.replace(
                old,
                ipmi_versions=bmc.ipmi_versions,
                auth_types=bmc.auth_types,
                iana=bmc.iana if bmc.iana is not None else old.iana,
                last_seen=now,
                machine_mac=bmc.machine_mac or old.machine_mac,
                protocols=bmc.protocols or old.protocols,
            )

        return self._update_bmc(bmc.address, change, now)

    def record_bmcs(self, bmcs: Sequence[Bmc], now: float) -> list[Bmc]:
        """One compare-and-swap per BMC (each its own key and revision)."""
        return [self.record_bmc(bmc, now) for bmc in bmcs]

    def list_bmcs(self) -> list[Bmc]:
        prefix = self._k("bmc_macs/")
        with self._etcd():
            read = self._c.txn(
                [], [self._bmcs_range(), drv.op_range(prefix, drv.prefix_end(prefix))]
            )
        bmc_kvs, mac_kvs = read.ranges()
        macs: dict[str, list[str]] = {}
        for kv in sorted(mac_kvs, key=lambda kv: kv.key):
            macs.setdefault(kv.value, []).append(kv.key[len(prefix) :])
        bmcs = []
        for kv in bmc_kvs:
            address = kv.key[len(self._k("bmcs/")) :]
            bmcs.append(self._bmc(kv, tuple(macs.get(address, ()))))
        return sorted(bmcs, key=lambda b: rules.address_order(b.address))

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
        key = self._k("bmcs/", address)
        inventory = self._k("bmc_macs/")
        for _ in range(MAX_ATTEMPTS):
            reads = [drv.op_range(key), drv.op_range(inventory, drv.prefix_end(inventory))]
            reads.extend(drv.op_range(self._k("machines/", mac)) for mac in macs)
            with self._etcd():
                read = self._c.txn([], reads)
            ranges = read.ranges()
            if not ranges[0]:
                raise StateError(f"no BMC {address} in the registry")
            bmc_kv, listed, records = ranges[0][0], ranges[1], ranges[2:]
            compares = [drv.cmp_mod_revision(key, bmc_kv.mod_revision)]
            ops: list[dict[str, Any]] = []
            for kv in listed:
                if kv.value == address and kv.key[len(inventory) :] not in macs:
                    compares.append(drv.cmp_mod_revision(kv.key, kv.mod_revision))
                    ops.append(drv.op_delete(kv.key))
            known = []
            for mac, record in zip(macs, records, strict=True):
                ops.append(drv.op_put(self._k("bmc_macs/", mac), address))
                entry = self._k("bmc_macs/", mac)
                current = next((kv for kv in listed if kv.key == entry), None)
                compares.append(drv.cmp_mod_revision(entry, current.mod_revision if current else 0))
                if record:
                    machine = self._machine(record[0])
                    compares.append(drv.cmp_mod_revision(record[0].key, record[0].mod_revision))
                    updated = dataclasses.replace(machine, bmc_address=address)
                    ops.append(
                        drv.op_put(record[0].key, json.dumps(codec.machine_to_data(updated)))
                    )
                    known.append(mac)
            old = self._bmc(bmc_kv)
            bmc = dataclasses.replace(
                old,
                model=model if model is not None else old.model,
                serial=serial if serial is not None else old.serial,
                uuid=uuid if uuid is not None else old.uuid,
                last_seen=now,
                machine_mac=known[0] if known else old.machine_mac,
            )
            ops.append(self._bmc_put(bmc))
            ops.extend(
                self._event_ops(bmc.machine_mac, ((EventKind.BMC, {"address": address}),), now)
            )
            with self._etcd():
                if self._c.txn(compares, ops).succeeded:
                    self._appended(bmc.machine_mac, 1)
                    return dataclasses.replace(bmc, macs=tuple(sorted(macs)))
        raise RegistryUnavailable(f"the record of BMC {address} kept changing; retry")

    def pin_bmc_cert(self, address: str, fingerprint: str | None) -> Bmc:
        def change(old: Bmc | None) -> Bmc:
            return dataclasses.replace(old or Bmc(address=address), tls_fingerprint=fingerprint)

        return self._update_bmc(address, change, time.time(), event=False)

    # --- events -------------------------------------------------------------------------

    def record_event(
        self, mac: str | None, kind: str, detail: Mapping[str, Any], now: float
    ) -> Event:
        if mac is not None:
            _check_mac(mac)
        ops = self._event_ops(mac, ((kind, detail),), now)
        with self._etcd():
            done = self._c.txn([], ops)
        self._appended(mac, 1)
        return Event(
            id=done.revision * EVENTS_PER_TXN,
            time=now,
            kind=str(kind),
            mac=mac,
            detail=json.loads(_dumps(detail)),
        )

    def _event_range(
        self, prefix: str, order: str, limit: int, min_create_revision: int = 0
    ) -> list[Event]:
        """Events under ``prefix`` in id order, read ``limit`` at a time from the newest
        (``order`` DESCEND) or the oldest (ASCEND, from ``min_create_revision``)."""
        with self._etcd():
            kvs = self._c.range(
                prefix,
                drv.prefix_end(prefix),
                sort_target="CREATE",
                sort_order=order,
                limit=limit,
                min_create_revision=min_create_revision,
            ).kvs
        return sorted((self._event(kv) for kv in kvs), key=lambda e: e.id)

    def events(self, mac: str, limit: int = 200) -> list[Event]:
        found = self._event_range(self._k("events/", mac, "/"), "DESCEND", limit + EVENTS_PER_TXN)
        return found[-limit:] if limit else []

    def changes_since(self, cursor: int, limit: int = 1000) -> list[Event]:
        found = self._event_range(
            self._k("events/"),
            "ASCEND",
            limit + EVENTS_PER_TXN,
            min_create_revision=max(1, cursor // EVENTS_PER_TXN),
        )
        return [e for e in found if e.id > cursor][:limit]

    def event_cursor(self) -> int:
        found = self._event_range(self._k("events/"), "DESCEND", EVENTS_PER_TXN)
        return max((e.id for e in found), default=0)

    def wait_changes(self, cursor: int, timeout: float) -> list[Event]:
        until = time.monotonic() + timeout
        with self._etcd():  # first the revision, then the log: nothing falls in between
            revision = self._c.range(self._k("schema"), count_only=True).revision
        found = self.changes_since(cursor)
        if found:
            return found
        prefix = self._k("events/")
        with self._etcd():
            for _ in self._c.watch(prefix, drv.prefix_end(prefix), revision + 1, until=until):
                break  # something was appended: read it in order through the log
        return self.changes_since(cursor)

    def health(self) -> tuple[bool, list[str]]:
        members = self._c.member_status()
        answering = [(url, st) for url, st in members if isinstance(st, dict)]
        lines = []
        for url, st in members:
            if isinstance(st, dict):
                role = "leader" if st.get("leader") == st["header"].get("member_id") else "member"
                revision = st["header"].get("revision", "?")
                lines.append(f"  {url}: {role}, etcd {st.get('version', '?')}, rev {revision}")
            else:
                lines.append(f"  {url}: not answering ({st})")
        self._down_until = 0.0
        try:
            self.check_writable()
        except RegistryUnavailable:
            head = (
                f"{self.describe()}: NO QUORUM ({len(answering)} of {len(members)} listed "
                "members answer): writes are refused (bootcfg answers 503 and nodes retry); "
                "known machines still boot from their last-read record"
            )
            return False, [head, *lines]
        head = f"{self.describe()}: writable ({len(answering)} of {len(members)} members answer)"
        return True, [head, *lines]

    def check_writable(self) -> None:
        """Raise ``RegistryUnavailable`` unless etcd has quorum (a linearizable read, which
        needs the leader and a majority, answers)."""
        with self._etcd():
            self._c.range(self._k("schema"), count_only=True)

    # --- whole registry -----------------------------------------------------------------

    def check(self) -> list[str]:
        problems: list[str] = []
        with self._etcd():
            kvs = self._c.range(self.prefix, drv.prefix_end(self.prefix)).kvs
        known_bmcs = {
            kv.key[len(self._k("bmcs/")) :] for kv in kvs if kv.key.startswith(self._k("bmcs/"))
        }
        machines = {
            kv.key[len(self._k("machines/")) :]
            for kv in kvs
            if kv.key.startswith(self._k("machines/"))
        }
        schema = [kv for kv in kvs if kv.key == self._k("schema")]
        if not schema:
            problems.append(f"{self._k('schema')}: missing (no schema version)")
        elif (version := self._schema_version(schema[0].value)) != SCHEMA_VERSION:
            problems.append(
                f"{self._k('schema')}: version {version}, this kpc writes {SCHEMA_VERSION}"
            )
        for kv in kvs:
            name = kv.key[len(self.prefix) :]
            space, _, rest = name.partition("/")
            try:
                if space == "schema" and not rest:
                    continue
                if space == "machines":
                    machine = self._machine(kv)
                    if machine.mac != rest:
                        problems.append(f"{kv.key}: holds the record of {machine.mac}")
                elif space == "bmcs":
                    bmc = self._bmc(kv)
                    if bmc.machine_mac is not None and bmc.machine_mac not in machines:
                        problems.append(
                            f"{kv.key}: names machine {bmc.machine_mac}, not in the registry"
                        )
                elif space == "bmc_macs":
                    if kv.value not in known_bmcs:
                        problems.append(
                            f"{kv.key}: orphaned (BMC {kv.value} is not in the registry)"
                        )
                elif space == "events":
                    owner = rest.split("/", 1)[0]
                    self._event(kv)
                    if owner != NO_MAC and owner not in machines:
                        problems.append(
                            f"{kv.key}: orphaned (machine {owner} is not in the registry)"
                        )
                elif space == "locks":
                    if not kv.lease:
                        problems.append(f"{kv.key}: a lock without a lease (never released)")
                else:
                    problems.append(f"{kv.key}: orphaned (not a key kpc writes)")
            except (StateError, ValueError, KeyError, IndexError) as exc:
                problems.append(f"{kv.key}: does not decode: {exc}")
        return problems

    # --- locks --------------------------------------------------------------------------

    @contextmanager
    def hold(
        self, names: Sequence[str], holder: str, *, ttl: int = 15, wait: float = 60.0
    ) -> Iterator[None]:
        """Hold ``locks/<name>`` for every name across deploy hosts while the block runs.
        Taken all at once (per 100, in sorted order: two hosts never deadlock) and bound to
        one lease kept alive meanwhile, so a host that dies releases them within ``ttl`` s.
        ``StateError`` naming the holder if they stay busy longer than ``wait`` s."""
        keys = sorted({self._k("locks/", name) for name in names})
        deadline = time.monotonic() + wait
        with self._etcd():
            lease = self._c.lease_grant(ttl)
        try:
            for start in range(0, len(keys), BATCH):
                self._take(keys[start : start + BATCH], holder, lease, deadline)
            stop = threading.Event()

            def keep_alive() -> None:
                while not stop.wait(ttl / 3):
                    with contextlib.suppress(drv.EtcdError):
                        self._c.lease_keepalive(lease)

            alive = threading.Thread(target=keep_alive, name="kpc-etcd-lease", daemon=True)
            alive.start()
            try:
                yield
            finally:
                stop.set()
                alive.join()
        finally:
            with contextlib.suppress(drv.EtcdError):  # else the lease expires by itself
                self._c.lease_revoke(lease)

    def _take(self, keys: list[str], holder: str, lease: int, deadline: float) -> None:
        while True:
            with self._etcd():
                done = self._c.txn(
                    [drv.cmp_absent(k) for k in keys],
                    [drv.op_put(k, holder, lease) for k in keys],
                    [drv.op_range(k) for k in keys],
                )
            if done.succeeded:
                return
            held = [kvs[0] for kvs in done.ranges() if kvs]
            if time.monotonic() > deadline:
                what = ", ".join(
                    f"{kv.key[len(self._k('locks/')) :]} (held by {kv.value})" for kv in held
                )
                raise StateError(
                    f"busy: {what or 'another deploy host holds a lock'}",
                    hint="wait for that operation to finish, then retry",
                )
            time.sleep(LOCK_POLL)

    def close(self) -> None:
        self._c.close()

    def __enter__(self) -> EtcdStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_etcd_store(settings: EtcdSettings, environ: Mapping[str, str]) -> EtcdStore:
    return EtcdStore(connect(settings, environ), settings.prefix)
