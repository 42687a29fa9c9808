"""Real etcd members (Debian's etcd-server) on loopback for the registry's tests.

Ports: clients 23700 + 10*cluster + member, peers 23800 + the same; no other test area
uses 237xx/238xx. Each member is a child process with its own data directory, so a test can
``kill -9`` one and start it again on the same data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import require_tool, wait_for

CLIENT_BASE = 23700
PEER_BASE = 23800


@dataclass
class Member:
    name: str
    client: str
    peer: str
    data: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass
class EtcdCluster:
    root: Path
    index: int  # which port block (0..9)
    size: int = 3
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        require_tool("etcd")
        for i in range(self.size):
            port = 10 * self.index + i
            self.members.append(
                Member(
                    name=f"kpct{self.index}m{i}",
                    client=f"http://127.0.0.1:{CLIENT_BASE + port}",
                    peer=f"http://127.0.0.1:{PEER_BASE + port}",
                    data=self.root / f"m{i}",
                    log=self.root / f"m{i}.log",
                )
            )

    @property
    def endpoints(self) -> list[str]:
        return [m.client for m in self.members]

    def start(self, i: int | None = None) -> None:
        chosen = self.members if i is None else [self.members[i]]
        initial = ",".join(f"{m.name}={m.peer}" for m in self.members)
        for m in chosen:
            assert m.process is None or m.process.poll() is not None
            m.process = subprocess.Popen(
                [
                    "etcd",
                    "--name", m.name,
                    "--data-dir", str(m.data),
                    "--listen-client-urls", m.client,
                    "--advertise-client-urls", m.client,
                    "--listen-peer-urls", m.peer,
                    "--initial-advertise-peer-urls", m.peer,
                    "--initial-cluster", initial,
                    "--initial-cluster-token", f"kpc-test-{self.index}-{os.getpid()}",
                    "--initial-cluster-state", "new",
                    "--heartbeat-interval", "50",
                    "--election-timeout", "500",
                ],
                stdout=m.log.open("ab"),
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_healthy(self, timeout: float = 60.0) -> None:
        live = [m for m in self.members if m.process is not None and m.process.poll() is None]
        for m in live:
            wait_for(lambda m=m: self._healthy(m), timeout, f"etcd member {m.name} healthy")

    @staticmethod
    def _healthy(m: Member) -> bool:
        with urllib.request.urlopen(f"{m.client}/health", timeout=2) as reply:
            return bool(json.load(reply).get("health") == "true")

    def kill(self, i: int) -> None:
        """``kill -9`` member ``i``."""
        process = self.members[i].process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for m in self.members:
            if m.process is not None and m.process.poll() is None:
                m.process.kill()
                m.process.wait(10)
