"""The registry under faults: locked, full, power loss. The service stays responsive, answers
503 with Retry-After, loses nothing it acknowledged and half-writes nothing."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.bootcfg.service import RateLimit
from tests.bootcfg.conftest import MAC, DataDir
from tests.bootcfg.server import Reply, Server
from tests.conftest import REPO, require_root, require_tool, wait_for

OTHER = "52:54:00:00:00:77"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture
def small_deadline(server: Server) -> Server:
    server.service.registry_deadline = 10.0  # the busy timeout (2 s) answers first
    return server


def test_locked_registry_answers_503_and_the_loop_keeps_serving(small_deadline: Server) -> None:
    server = small_deadline
    holder = sqlite3.connect(server.store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        pending: dict[str, Reply] = {}
        done = threading.Event()

        def slow() -> None:
            pending["ipxe"] = server.get(f"/ipxe?mac={MAC}")
            done.set()

        worker = threading.Thread(target=slow)
        worker.start()
        # the registry thread waits on the lock; the event loop does not
        assert server.get("/boot.ipxe").status == 200
        assert not done.is_set(), "a request without registry work waited for the registry"
        worker.join(30)
        reply = pending["ipxe"]
        assert reply.status == 503, reply.text
        assert reply.headers.get("Retry-After") == "5"
        assert "retry" in reply.text
        health = server.get("/healthz")
        assert health.status == 503 and health.headers.get("Retry-After")
        assert "cannot take writes" in health.text
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert server.store.get(MAC) is None  # the refused request left nothing behind
    assert server.get(f"/ipxe?mac={MAC}").status == 200  # the node's retry succeeds
    assert server.store.get(MAC) is not None
    assert server.get("/healthz").status == 200


def test_a_registry_slower_than_the_deadline_is_a_503(server: Server) -> None:
    server.service.registry_deadline = 0.2
    holder = sqlite3.connect(server.store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        reply = server.post(f"/install-complete?mac={MAC}")
        assert reply.status == 503 and reply.headers.get("Retry-After") == "5"
        assert "did not answer within 0.2 s" in reply.text
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    require_root()
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_503_nothing_lost_and_healthz_says_so(
    kpc_data: DataDir, tiny_fs: Path
) -> None:
    srv = Server(kpc_data.root, tiny_fs / "machines.db", new_machines=RateLimit(1_000_000)).start()
    try:
        assert srv.get("/healthz").status == 200
        assert srv.get(f"/ipxe?mac={MAC}").status == 200
        filler = tiny_fs / "filler"
        with filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        health = srv.get("/healthz")
        assert health.status == 503 and health.headers.get("Retry-After")
        assert "full" in health.text
        answers: dict[str, int] = {}
        for i in range(300):
            mac = f"52:54:00:01:{i // 256:02x}:{i % 256:02x}"
            reply = srv.get(f"/ipxe?mac={mac}&hostname=host-with-a-long-name-{i:04d}")
            assert reply.status in (200, 503), reply.text
            if reply.status == 503:
                assert reply.headers.get("Retry-After") == "5"
            answers[mac] = reply.status
        assert 503 in answers.values(), "the full file system never refused a write"
        filler.unlink()
        wait_for(lambda: srv.get("/healthz").status == 200, 10, "/healthz ok after freeing space")
        for mac, status in answers.items():
            recorded = srv.store.get(mac)
            assert (recorded is not None) == (status == 200), mac  # acknowledged = present
        assert srv.store.get(MAC) is not None
        assert srv.get(f"/ipxe?mac={OTHER}").status == 200
    finally:
        srv.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_traced(proc: subprocess.Popen[bytes]) -> None:
    """Stop the traced server (strace's child), then strace itself."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    pids = children.read_text().split() if children.exists() else []
    for pid in pids:
        os.kill(int(pid), 15)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def test_install_complete_is_fsynced_before_the_200(kpc_data: DataDir, tmp_path: Path) -> None:
    """Power-loss proof: strace shows the registry's fsync completing before the 200 is
    written to the node's socket (no device-mapper here to cut the power for real)."""
    require_tool("strace")
    db = tmp_path / "machines.db"
    port = _free_port()
    trace = tmp_path / "strace.log"
    proc = subprocess.Popen(
        [
            "strace", "-f", "-y", "-s", "64", "-o", str(trace),
            "-e", "trace=fsync,fdatasync,write,writev,sendto,sendmsg",
            sys.executable, "-m", "tests.bootcfg.serve_plain", str(kpc_data.root), str(db),
            str(port),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                return bool(r.status == 200)

        wait_for(up, 60, "bootcfg under strace to answer /healthz")
        urllib.request.urlopen(f"{url}/ipxe?mac={MAC}", timeout=10).read()
        mark = len(trace.read_text().splitlines())
        with sqlite3.connect(db) as look:
            (token,) = look.execute(
                "SELECT install_token FROM machines WHERE mac = ?", (MAC,)
            ).fetchone()
        req = urllib.request.Request(
            f"{url}/install-complete?mac={MAC}",
            data=json.dumps({"host_key": HOST_KEY}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as reply:
            assert reply.status == 200
        # the next PXE boot only moves "last seen": acknowledged without a disk flush
        second = len(trace.read_text().splitlines())
        with urllib.request.urlopen(f"{url}/ipxe?mac={MAC}", timeout=10) as reply:
            assert reply.status == 200
        wait_for(
            lambda: "HTTP/1.1 200" in "".join(trace.read_text().splitlines()[second:]),
            10,
            "the /ipxe answer in the trace",
        )
    finally:
        _stop_traced(proc)
    every = trace.read_text().splitlines()
    later = every[second:]
    assert not [line for line in later if re.search(r"f(data)?sync\(", line)], later
    lines = every[mark:second]
    synced = [
        i for i, line in enumerate(lines)
        if re.search(r"f(data)?sync\(\d+<[^>]*machines\.db(-wal)?>\)\s+=\s+0", line)
    ]  # fmt: skip
    answered = [i for i, line in enumerate(lines) if "HTTP/1.1 200" in line]
    assert answered, "no 200 in the trace:\n" + "\n".join(lines[-40:])
    assert synced, "no fsync of the registry in the trace:\n" + "\n".join(lines[-40:])
    assert min(synced) < answered[0], "\n".join(lines)
    with sqlite3.connect(db) as check:
        boot = check.execute("SELECT boot FROM machines WHERE mac = ?", (MAC,)).fetchone()
    assert boot == ("local",)
