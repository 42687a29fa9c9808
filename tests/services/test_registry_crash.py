"""Two processes write one machine registry at once, and either is killed with SIGKILL
mid-run: the bootcfg container (answering booting machines) and an operator's
``kpc nodes set-boot``. Nothing acknowledged is lost; the database is never corrupt.

Acknowledged means: bootcfg answered 200 (the request is recorded in the same transaction
as the answer's decision), or set-boot exited 0. The container is killed (``docker kill
--signal KILL``) and started again while both keep writing; some set-boot processes are
killed at random moments of their run. The checks read the SQLite file directly.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.state.sqlite import EVENTS_PER_MACHINE, SqliteStore
from tests.conftest import GaveUp, wait_for
from tests.services.conftest import IMAGE_PREFIX, free_port, kpc, write_config

NAME = "kpcq-crash-bootcfg"
SERVED = [f"52:54:00:c4:a5:{n:02x}" for n in range(1, 7)]  # asked for /ipxe, in turn
OPERATED = [f"52:54:00:c4:a6:{n:02x}" for n in range(1, 4)]  # set-boot local/rescue, in turn
MODES = ("local", "rescue")
KILLS = 3  # the container is killed this many times mid-run


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def site(built_images: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    port = free_port()
    data_dir = tmp_path / "bootcfg"
    config = write_config(
        tmp_path / "kpc.yaml",
        {
            "provisioning": {"interface": "lo", "address": "127.0.0.1", "subnet": "127.0.0.0/8"},
            "bootcfg": {"listen": "127.0.0.1", "port": port, "data_dir": str(data_dir)},
            "os": {"version": "3815.2.5"},
            "images": {"prefix": IMAGE_PREFIX},
            "services": {"prefix": "kpcq-crash"},
        },
    )
    key = tmp_path / "op.pub"
    key.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFLvrg6Yt3dGq0Hn4xyqXlYGKNq2yZ4S3j7E1sQy6I7V op\n"
    )
    init = kpc(config, "bootcfg", "init", "--ssh-key", str(key))
    assert init.exit_code == 0, init.output
    with SqliteStore(data_dir / "machines.db") as store:  # the operator's machines exist
        for mac in OPERATED:
            store.record_request(mac, address=None, endpoint="/ipxe", now=time.time())
            store.set_boot(mac, "local", time.time())  # type: ignore[arg-type]
    docker("rm", "--force", NAME, check=False)
    docker(
        "run", "--detach", "--name", NAME,
        "--publish", f"127.0.0.1:{port}:{port}/tcp",
        "--volume", f"{config}:/etc/kpc/kpc.yaml:ro",
        "--volume", f"{data_dir}:{data_dir}:rw",
        f"{IMAGE_PREFIX}/bootcfg:latest",
        "--config", "/etc/kpc/kpc.yaml", "bootcfg", "serve", "--listen", "0.0.0.0",
    )  # fmt: skip
    try:
        yield {"config": config, "url": f"http://127.0.0.1:{port}", "db": data_dir / "machines.db"}
    finally:
        docker("rm", "--force", NAME, check=False)


def healthy(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/healthz", timeout=2) as reply:
        return reply.status == 200


def wait_serving(url: str) -> None:
    def up() -> bool:
        running = docker("inspect", "--format", "{{.State.Running}}", NAME).stdout.strip()
        assert running == "true", docker("logs", "--tail", "30", NAME, check=False).stderr
        return healthy(url)

    wait_for(up, 60, "the bootcfg container to answer /healthz")


def test_two_writers_killed_mid_run_lose_nothing_acknowledged(site: dict[str, Any]) -> None:
    url, config, db = site["url"], site["config"], site["db"]
    wait_serving(url)
    stop = threading.Event()
    served: dict[str, list[int]] = {mac: [] for mac in SERVED}  # acknowledged request numbers
    refused: list[str] = []
    # (mac, attempt, mode, acknowledged) per set-boot, in order
    operated: list[tuple[str, int, str, bool]] = []
    failures: list[str] = []

    def progress(enough: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            if failures:
                raise GaveUp(failures[0])
            return enough()

        return check

    def boot_requests() -> None:
        n = 0
        while not stop.is_set():
            mac = SERVED[n % len(SERVED)]
            try:
                with urllib.request.urlopen(
                    f"{url}/ipxe?mac={mac}&serial=S{n:07d}", timeout=5
                ) as reply:
                    if reply.status == 200:
                        served[mac].append(n)
            except (urllib.error.URLError, OSError) as exc:  # killed, restarting, busy
                refused.append(f"{n}: {exc}")
                time.sleep(0.05)
            n += 1

    def set_boots() -> None:
        rng = random.Random(7)
        attempt = 0
        while not stop.is_set():
            mac = OPERATED[attempt % len(OPERATED)]
            mode = MODES[(attempt // len(OPERATED)) % 2]
            proc = subprocess.Popen(
                [sys.executable, "-m", "appliance", "-c", str(config), "nodes", "set-boot",
                 mac, mode, "--yes"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            if attempt % 4 == 3:  # killed somewhere between start-up and its commit
                time.sleep(rng.uniform(0.2, 1.2))
                proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=120)
            operated.append((mac, attempt, mode, proc.returncode == 0))
            if proc.returncode not in (0, -signal.SIGKILL):
                failures.append(f"set-boot {mac} {mode} exited {proc.returncode}: {err!r}")
                return
            attempt += 1

    workers = [threading.Thread(target=boot_requests), threading.Thread(target=set_boots)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(KILLS):
            acknowledged = sum(map(len, served.values()))
            more = progress(lambda a=acknowledged: sum(map(len, served.values())) >= a + 40)  # type: ignore[misc]
            wait_for(more, 120, "bootcfg to answer more requests")
            docker("kill", "--signal", "KILL", NAME)
            docker("start", NAME)
            wait_serving(url)
        wait_for(progress(lambda: len(operated) >= 16), 300, "16 set-boot runs")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=180)
    docker("kill", "--signal", "KILL", NAME)  # and it dies once more, for good
    assert not failures, failures

    # the run did what it claims: writes were refused while the container was down, and
    # some set-boot runs were killed; plenty of both were acknowledged
    assert refused, "no request failed: the container was never down mid-run"
    assert any(not acked for *_, acked in operated), operated
    assert all(len(numbers) >= 10 for numbers in served.values()), served
    assert sum(acked for *_, acked in operated) >= 10, operated

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        for mac, numbers in served.items():
            (count,) = conn.execute("SELECT count(*) FROM events WHERE mac = ?", (mac,)).fetchone()
            (serial,) = conn.execute("SELECT serial FROM machines WHERE mac = ?", (mac,)).fetchone()
            # every acknowledged request is there (unacknowledged ones may be too), up to the
            # history's bound: a machine keeps its newest EVENTS_PER_MACHINE events
            assert count >= min(len(numbers), EVENTS_PER_MACHINE), (mac, count, len(numbers))
            assert serial >= f"S{max(numbers):07d}", (mac, serial, max(numbers))
        for mac in OPERATED:
            runs = [(attempt, mode, acked) for m, attempt, mode, acked in operated if m == mac]
            last = max(attempt for attempt, _, acked in runs if acked)
            allowed = {mode for attempt, mode, acked in runs if attempt == last or attempt > last}
            (boot,) = conn.execute("SELECT boot FROM machines WHERE mac = ?", (mac,)).fetchone()
            assert boot in allowed, (mac, boot, runs)
    with SqliteStore(db) as store:  # and kpc itself opens it
        assert {m.mac for m in store.machines()} >= set(SERVED) | set(OPERATED)
