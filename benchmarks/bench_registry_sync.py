"""What durable commits cost: the registry's write path (one ``transact`` per request, as
bootcfg's server layer does it) with SQLite ``synchronous=FULL`` (fsync on every commit,
kpc's setting) beside ``NORMAL`` (the old setting: WAL fsync'd only at checkpoints).

    python benchmarks/bench_registry_sync.py [--dir DIR] [--n 300]

DIR is where the database lives (default: a temporary directory under /var/tmp, a real
disk); both settings run in the same process, alternating rounds, so they see the same disk.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from appliance.state import rules
from appliance.state.model import Machine
from appliance.state.sqlite import SqliteStore
from appliance.state.store import Transition


def _round(store: SqliteStore, n: int, offset: int) -> list[float]:
    times: list[float] = []
    for i in range(n):
        k = offset + i
        mac = f"52:54:00:{k >> 16 & 255:02x}:{k >> 8 & 255:02x}:{k & 255:02x}"

        def step(m: Machine | None, mac: str = mac, i: int = i) -> Transition[None]:
            seen = rules.seen(m, mac, address="198.18.0.50", endpoint="ipxe", now=float(i))
            return Transition(rules.install_completed(seen), None)

        start = time.perf_counter()
        store.transact(mac, step, float(i))
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="kpc-bench-sync-", dir=args.dir or "/var/tmp"))
    results: dict[str, list[float]] = {"FULL": [], "NORMAL": []}
    stores = {mode: SqliteStore(base / f"{mode}.db") for mode in results}
    stores["NORMAL"]._db.execute("PRAGMA synchronous = NORMAL")
    for r in range(args.rounds):
        for mode, store in stores.items():
            results[mode] += _round(store, args.n, r * args.n)
    print(f"{args.n * args.rounds} commits each, database in {base}")
    print("| synchronous | median | p99 | commits/s |")
    print("|---|---|---|---|")
    for mode, times in results.items():
        times.sort()
        p99 = times[int(len(times) * 0.99) - 1]
        rate = len(times) / sum(times)
        print(
            f"| {mode} | {statistics.median(times) * 1000:.2f} ms | {p99 * 1000:.2f} ms "
            f"| {rate:.0f} |"
        )
    for store in stores.values():
        store.close()


if __name__ == "__main__":
    main()
