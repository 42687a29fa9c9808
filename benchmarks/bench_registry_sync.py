"""What durable commits cost: the registry's write path (one ``transact`` per request, as
bootcfg's server layer does it), in three regimes measured in the same run on the same disk:

- baseline: ``synchronous=NORMAL`` with no flush at all (kpc before #17: an acknowledged
  install-complete could be lost on power loss);
- ``synchronous=FULL``: SQLite fsyncs the WAL on every commit;
- kpc: ``NORMAL`` plus an fsync of the WAL after every state-changing commit — measured for
  a state change (install-complete) and for a request that only moves "last seen" (the
  /ipxe of an installed machine on every reboot).

    python benchmarks/bench_registry_sync.py [--dir DIR] [--n 300] [--rounds 3]

DIR holds the databases (default: a temporary directory under /var/tmp, a real disk).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from appliance.state import rules
from appliance.state.model import BootMode, Machine, MachineState
from appliance.state.sqlite import SqliteStore
from appliance.state.store import Transition

Change = Callable[[Machine], Machine]


def _mac(k: int) -> str:
    return f"52:54:00:{k >> 16 & 255:02x}:{k >> 8 & 255:02x}:{k & 255:02x}"


def _round(store: SqliteStore, n: int, change: Change) -> list[float]:
    """n machines seen once (setup, not timed), then one timed transition each."""
    macs = [_mac(k) for k in range(n)]
    for mac in macs:
        store.record_request(mac, address="198.18.0.50", endpoint="ipxe", now=0.0)
    times: list[float] = []
    for i, mac in enumerate(macs):

        def step(m: Machine | None, mac: str = mac, i: int = i) -> Transition[None]:
            seen = rules.seen(m, mac, address="198.18.0.50", endpoint="ipxe", now=float(i))
            return Transition(change(seen), None)

        start = time.perf_counter()
        store.transact(mac, step, float(i))
        times.append(time.perf_counter() - start)
    return times


def _reinstall(m: Machine) -> Machine:
    if m.state is not MachineState.INSTALLED:
        return rules.install_completed(m)
    return rules.with_state(rules.with_boot(m, BootMode.INSTALL), MachineState.DISCOVERED)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="kpc-bench-sync-", dir=args.dir or "/var/tmp"))
    cases: dict[str, tuple[str, Change]] = {
        "baseline: NORMAL, no flush — state change": ("none", _reinstall),
        "synchronous=FULL — state change": ("full", _reinstall),
        "kpc — state change (install-complete)": ("kpc", _reinstall),
        "kpc — last seen only (/ipxe of a known machine)": ("kpc", lambda m: m),
    }
    stores: dict[str, SqliteStore] = {}
    for regime in ("none", "full", "kpc"):
        stores[regime] = SqliteStore(base / f"{regime}.db")
    stores["full"]._db.execute("PRAGMA synchronous = FULL")
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (regime, change) in cases.items():
            store = stores[regime]
            if regime == "none":
                store._sync_wal = lambda: None  # type: ignore[method-assign]
            results[name] += _round(store, args.n, change)
    print(f"{args.n * args.rounds} commits per row, databases in {base}")
    print("| commit | median | p99 | commits/s |")
    print("|---|---|---|---|")
    for name, times in results.items():
        times.sort()
        p99 = times[max(0, int(len(times) * 0.99) - 1)]
        print(
            f"| {name} | {statistics.median(times) * 1000:.2f} ms | {p99 * 1000:.2f} ms "
            f"| {len(times) / sum(times):.0f} |"
        )
    for store in stores.values():
        store.close()


if __name__ == "__main__":
    main()
