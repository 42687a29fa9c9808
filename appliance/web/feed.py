"""The rack kept current from the registry's event log, and its live subscribers.

``Rack`` loads every machine once, then follows ``changes_since(cursor)``: each poll that
finds events re-reads only the machines they name and hands one serialised message to
every subscriber (the SSE streams), so the cost of a change does not grow with the number
of browsers beyond a queue put. A subscriber that falls behind is dropped; its browser
reconnects with the last id it saw and gets what changed since (or everything).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from appliance.state.model import Event
from appliance.state.store import MachineStore
from appliance.web.rack import Row, counts, power_result, row, state_since

log = logging.getLogger("kpc.web")

HISTORY = 200  # events read per machine when the rack is loaded
BATCH = 5000  # events read per poll
QUEUE = 64  # messages a subscriber may fall behind before it is dropped


@dataclass
class Rack:
    store: MachineStore
    clock: Callable[[], float]
    stuck_after: Mapping[str, float]
    rows: dict[str, Row] = field(default_factory=dict)
    cursor: int = 0
    changed_at: dict[str, int] = field(default_factory=dict)  # mac -> cursor of its change
    removed_at: dict[str, int] = field(default_factory=dict)
    subscribers: set[asyncio.Queue[str | None]] = field(default_factory=set)

    def load(self) -> None:
        """Every machine, with its time in state and last power result from its events."""
        self.cursor = self.store.event_cursor()
        rows = {}
        for machine in self.store.machines():
            events = self.store.events(machine.mac, HISTORY)
            rows[machine.mac] = row(machine, state_since(events), power_result(events))
        self.rows = rows
        self.changed_at = dict.fromkeys(rows, self.cursor)
        self.removed_at = {}

    def poll(self) -> str | None:
        """Apply what happened since the cursor; the message for subscribers, if any."""
        events = self.store.changes_since(self.cursor, BATCH)
        if not events:
            return None
        self.cursor = events[-1].id
        touched: dict[str, list[Event]] = {}
        for event in events:
            if event.mac is not None:
                touched.setdefault(event.mac, []).append(event)
        changed, removed = [], []
        for mac, mine in touched.items():
            machine = self.store.get(mac)
            if machine is None:
                if self.rows.pop(mac, None) is not None:
                    removed.append(mac)
                    self.removed_at[mac] = self.cursor
                self.changed_at.pop(mac, None)
                continue
            before = self.rows.get(mac)
            since = state_since(mine) or (before.state_since if before else None)
            power = power_result(mine) or (before.power if before else "")
            new = row(machine, since, power)
            if new != before:
                self.rows[mac] = new
                self.changed_at[mac] = self.cursor
                self.removed_at.pop(mac, None)
                changed.append(new)
        if not changed and not removed:
            return None
        return self.message(changed, removed)

    def message(self, changed: list[Row], removed: list[str]) -> str:
        now = self.clock()
        return json.dumps(
            {
                "cursor": self.cursor,
                "now": now,
                "rows": [r.as_json(self.stuck_after, now) for r in changed],
                "removed": removed,
                "counts": counts(self.rows.values(), self.stuck_after, now),
            },
            separators=(",", ":"),
        )

    def since(self, cursor: int) -> str:
        """What a subscriber that last saw ``cursor`` has missed (everything if 0)."""
        changed = [r for mac, r in self.rows.items() if self.changed_at.get(mac, 0) > cursor]
        if cursor <= 0:
            changed = list(self.rows.values())
        removed = [mac for mac, at in self.removed_at.items() if at > cursor]
        return self.message(changed, removed)

    # --- subscribers --------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[str | None]:
        queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        self.subscribers.discard(queue)

    def publish(self, message: str) -> None:
        for queue in list(self.subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                log.warning("a browser fell %d updates behind; it will reconnect", QUEUE)
                self.subscribers.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)  # the stream ends; EventSource reconnects

    async def follow(self, interval: float) -> None:
        """Poll the registry every ``interval`` seconds until cancelled."""
        while True:
            try:
                message = self.poll()
            except Exception:  # a registry hiccup must not stop the live view
                log.exception("reading the registry's changes failed; retrying")
                message = None
            if message is not None:
                self.publish(message)
            await asyncio.sleep(interval)
