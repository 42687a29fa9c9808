"""The rack at a glance, as data: one row per machine, counts, stuck machines. Pure.

A row is what the rack table and the live feed show for a machine. ``state_since`` comes
from the machine's last state event (else when it was first seen); ``power`` is the result
of the last power action kpc ran on it from the web view (kpc does not poll BMCs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from appliance.state.model import BootMode, Event, EventKind, Machine, MachineState

STATES = tuple(s.value for s in MachineState)
BOOT_MODES = tuple(b.value for b in BootMode)


@dataclass(frozen=True)
class Row:
    mac: str
    name: str
    state: str
    boot: str
    bmc: str
    address: str
    last_seen: float | None
    state_since: float | None
    last_endpoint: str
    power: str

    def stuck(self, stuck_after: Mapping[str, float], now: float) -> bool:
        limit = stuck_after.get(self.state)
        return limit is not None and self.state_since is not None and now - self.state_since > limit

    def as_json(self, stuck_after: Mapping[str, float], now: float) -> dict[str, Any]:
        return {**asdict(self), "stuck": self.stuck(stuck_after, now)}


def row(machine: Machine, state_since: float | None, power: str = "") -> Row:
    return Row(
        mac=machine.mac,
        name=machine.hostname or "",
        state=machine.state.value,
        boot=machine.boot.value,
        bmc=machine.bmc_address or "",
        address=machine.management_address or "",
        last_seen=machine.last_seen,
        state_since=state_since if state_since is not None else machine.first_seen,
        last_endpoint=machine.last_endpoint or "",
        power=power,
    )


def state_since(events: Iterable[Event]) -> float | None:
    """When the machine entered its current state, from its events (None: not recorded)."""
    since = None
    for event in events:
        if event.kind == EventKind.STATE:
            since = event.time
    return since


def power_result(events: Iterable[Event]) -> str:
    """The last power action's result text ("" when none was run from here)."""
    result = ""
    for event in events:
        if (
            event.kind == EventKind.ACTION
            and event.detail.get("power")
            and not event.detail.get("dry_run")
        ):
            result = str(event.detail.get("result", ""))
    return result


def counts(rows: Iterable[Row], stuck_after: Mapping[str, float], now: float) -> dict[str, int]:
    """Machines per state (every state listed), plus ``total`` and ``stuck``."""
    found: Counter[str] = Counter()
    total = stuck = 0
    for r in rows:
        found[r.state] += 1
        total += 1
        stuck += r.stuck(stuck_after, now)
    return {**{s: found[s] for s in STATES}, "total": total, "stuck": stuck}


GROUPINGS = ("state", "boot", "none")


def sort_key(r: Row) -> tuple[str, str]:
    """Machines without a name after the named ones, then by MAC (the page's JS agrees)."""
    return (r.name or "~", r.mac)


def grouped(rows: Sequence[Row], by: str) -> list[tuple[str, list[Row]]]:
    """Every group (empty ones too, so live updates have a place to go), rows sorted."""
    ordered = sorted(rows, key=sort_key)
    if by not in ("state", "boot"):
        return [("all", ordered)]
    order = STATES if by == "state" else BOOT_MODES
    groups: dict[str, list[Row]] = {name: [] for name in order}
    for r in ordered:
        groups.setdefault(getattr(r, by), []).append(r)
    return list(groups.items())


def matches(r: Row, text: str, state: str) -> bool:
    """The rack filter: a state (or "" / "stuck" handled by the caller) and free text."""
    if state and r.state != state:
        return False
    needle = text.strip().lower()
    if not needle:
        return True
    return any(needle in value.lower() for value in (r.mac, r.name, r.bmc, r.address, r.state))


def age(seconds: float) -> str:
    """A short duration: 45s, 12m, 3h05m, 2d04h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
