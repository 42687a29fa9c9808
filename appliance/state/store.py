"""The storage interface of the machine registry.

A small Protocol so another backend can follow the SQLite one. Every method is atomic;
``now`` is passed in (seconds since the epoch) so callers and tests control time.
MACs passed in must already be normalised (``appliance.config.normalize_mac``).

Every change a method makes is also appended to the registry's event log in the same
transaction (``Event``: requests, state and boot changes, check-ins, BMC records, removals),
so a machine's history and a watcher's ``changes_since`` never miss or invent a change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from appliance.state.model import Bmc, BootMode, Event, Machine, MachineState

T = TypeVar("T")


@dataclass(frozen=True)
class Transition(Generic[T]):
    """What a decision on one machine returns: the record to store (``None``: store
    nothing), the caller's result, and events to append with it as (kind, detail)."""

    machine: Machine | None
    result: T
    events: tuple[tuple[str, Mapping[str, Any]], ...] = field(default=())


Step = Callable[[Machine | None], Transition[T]]
"""A decision on one machine, given its record (``None`` if unknown). Must be pure: a
backend may call it again when a concurrent writer changed the record first."""


class MachineStore(Protocol):
    def get(self, mac: str) -> Machine | None: ...

    def transact(self, mac: str, step: Step[T], now: float) -> T:
        """Observe and decide in one transaction: read ``mac``'s record, call ``step``, store
        the record it returns (only if it differs), append its events and the state, boot
        and host-key changes, and return its result. All of it happens or nothing does, and
        no other writer's change to the record is lost."""
        ...

    def machines(self, state: MachineState | None = None) -> list[Machine]: ...

    def record_request(
        self,
        mac: str,
        *,
        address: str | None,
        endpoint: str,
        now: float,
        uuid: str | None = None,
        hostname: str | None = None,
        serial: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Machine:
        """Note a request from a machine (creating it as ``discovered`` if new).

        Appends a ``request`` event (endpoint, address, plus ``detail``: what was decided).
        """
        ...

    def set_state(self, mac: str, state: MachineState, now: float) -> Machine: ...

    def set_boot(self, mac: str, boot: BootMode, now: float) -> Machine: ...

    def install_complete(self, mac: str, now: float) -> Machine:
        """installing -> installed, boot -> local, and the recorded SSH host key cleared."""
        ...

    def check_in(self, mac: str, facts: dict[str, Any], address: str | None, now: float) -> Machine:
        """Store facts; the machine becomes ``ready``."""
        ...

    def set_host_key(self, mac: str, host_key: str | None) -> Machine: ...

    def forget(self, mac: str) -> None: ...

    def record_bmc(self, bmc: Bmc, now: float) -> Bmc: ...

    def record_bmcs(self, bmcs: Sequence[Bmc], now: float) -> list[Bmc]:
        """Several at once (a discovery's finds): as few commits as the backend allows."""
        ...

    def list_bmcs(self) -> list[Bmc]: ...

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
        """Note what a BMC's system is; its MACs point at it from then on (a machine with
        one of them, now or later, gets this BMC's address)."""
        ...

    def pin_bmc_cert(self, address: str, fingerprint: str | None) -> Bmc:
        """Pin (or with None forget) the fingerprint of a BMC's TLS certificate."""
        ...

    def record_event(
        self, mac: str | None, kind: str, detail: Mapping[str, Any], now: float
    ) -> Event:
        """Append an event (e.g. an audited operator action). ``detail`` must be JSON data."""
        ...

    def events(self, mac: str, limit: int = 200) -> list[Event]:
        """A machine's most recent events, oldest first (at most ``limit``)."""
        ...

    def changes_since(self, cursor: int, limit: int = 1000) -> list[Event]:
        """Events with an id above ``cursor``, oldest first (at most ``limit``)."""
        ...

    def wait_changes(self, cursor: int, timeout: float) -> list[Event]:
        """``changes_since(cursor)``, waiting up to ``timeout`` seconds for the first one
        (SQLite: polling; etcd: a watch). Empty if nothing happened meanwhile."""
        ...

    def event_cursor(self) -> int:
        """The id of the newest event ever appended (0 if none): ``changes_since`` from here
        returns only what happens after this call."""
        ...

    def check(self) -> list[str]:
        """Consistency problems (schema version, orphaned records), one line each."""
        ...

    def check_writable(self) -> None:
        """Raise ``RegistryUnavailable`` unless a write could be committed now."""
        ...

    def hold(
        self, names: Sequence[str], holder: str, *, ttl: int = 15, wait: float = 60.0
    ) -> AbstractContextManager[None]:
        """Hold a lock on each of ``names`` (e.g. ``bmc/<address>``) for the block, across
        every process and deploy host using this registry; a holder that dies releases them
        (SQLite: with its process; etcd: when its lease of ``ttl`` s runs out). Raises
        ``StateError`` naming the holder when one stays busy longer than ``wait`` s."""
        ...

    def health(self) -> tuple[bool, list[str]]:
        """Whether writes can be committed now, and lines saying so for an operator (for
        etcd: quorum, and each member's answer)."""
        ...

    def describe(self) -> str:
        """Where the registry lives, for status lines and messages (never a secret)."""
        ...

    def close(self) -> None: ...
