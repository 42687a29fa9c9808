#!/usr/bin/env python3
"""What the registry's event log costs a write: ``record_request`` with and without it.

1,000 machines; each round records one request per machine (one ``BEGIN IMMEDIATE``
transaction each, as bootcfg does). Measured: an empty log, then a full one (every machine
at ``EVENTS_PER_MACHINE``, so each write also prunes), and the baseline in the same run:
the same store with the event append replaced by nothing. Also ``changes_since`` reading
5,000 events (one poll of the web view under a storm). Costs are CPU time of this
process (Python and SQLite), which a shared machine disturbs less than wall time.

Usage: .venv/bin/python benchmarks/bench_event_log.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from appliance.state import sqlite as sqlite_module
from appliance.state.sqlite import EVENTS_PER_MACHINE, SqliteStore

MACHINES = 1000


def mac(i: int) -> str:
    return f"52:54:00:00:{i // 256:02x}:{i % 256:02x}"


def rounds(store: SqliteStore, count: int) -> list[float]:
    """CPU microseconds per write (this process: Python and SQLite), one figure per round.
    CPU time rather than wall time: the machine is shared, and a write's cost is its CPU."""
    out = []
    for _ in range(count):
        started = time.process_time()
        for i in range(MACHINES):
            store.record_request(mac(i), address="198.18.0.1", endpoint="ipxe", now=time.time())
        out.append((time.process_time() - started) / MACHINES * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    real_append = sqlite_module._append
    with tempfile.TemporaryDirectory(prefix="kpc-bench-events-") as tmp:
        rows: list[tuple[str, list[float]]] = []
        with SqliteStore(Path(tmp) / "base.db") as store:
            sqlite_module._append = lambda *a, **k: None  # type: ignore[assignment]
            rounds(store, 1)  # create the machines
            rows.append(("baseline: no event log", rounds(store, args.rounds)))
            sqlite_module._append = real_append
        with SqliteStore(Path(tmp) / "log.db") as store:
            rounds(store, 1)
            rows.append(("event log, nearly empty", rounds(store, args.rounds)))
            with store._write() as db:  # fill every machine's history to the bound
                now = time.time()
                db.executemany(
                    "INSERT INTO events (time, kind, mac, detail) VALUES (?, 'request', ?, '{}')",
                    ((now, mac(i)) for i in range(MACHINES) for _ in range(EVENTS_PER_MACHINE)),
                )
            rows.append(("event log, full (pruned on 1 write in 32)", rounds(store, args.rounds)))
            sqlite_module.PRUNE_ONE_IN = 1
            rows.append(("event log, full, pruned on every write", rounds(store, args.rounds)))
            cursor = store.event_cursor() - 5000
            started = time.perf_counter()
            events: Any = store.changes_since(cursor, 5000)
            read_ms = (time.perf_counter() - started) * 1000
            size = (Path(tmp) / "log.db").stat().st_size // (1024 * 1024)
    print(f"{MACHINES} machines, {args.rounds} rounds, {time.strftime('%Y-%m-%d %H:%M')}")
    print("\n| record_request | median CPU µs/write | min | max |")
    print("|---|---|---|---|")
    for name, values in rows:
        print(f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} | "
              f"{max(values):.0f} |")  # fmt: skip
    print(f"\nchanges_since: {len(events)} events in {read_ms:.1f} ms; full log file {size} MiB")


if __name__ == "__main__":
    main()
