"""Real etcd members (Debian's etcd-server) on loopback for the registry's tests.

Ports: clients 23700 + 10*cluster + member, peers 23800 + the same; no other test area
uses 237xx/238xx. Each member is a child process with its own data directory, so a test can
``kill -9`` one and start it again on the same data.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
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
    tls: Path | None = None  # a directory with ca.crt, server.crt/key: https, client certs
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        require_tool("etcd")
        for i in range(self.size):
            port = 10 * self.index + i
            self.members.append(
                Member(
                    name=f"kpct{self.index}m{i}",
                    client=f"{'https' if self.tls else 'http'}://127.0.0.1:{CLIENT_BASE + port}",
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
                    *self._tls_flags(),
                ],
                stdout=m.log.open("ab"),
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def _tls_flags(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--client-cert-auth",
            "--trusted-ca-file", str(self.tls / "ca.crt"),
            "--cert-file", str(self.tls / "server.crt"),
            "--key-file", str(self.tls / "server.key"),
        ]  # fmt: skip

    def wait_healthy(self, timeout: float = 60.0) -> None:
        live = [m for m in self.members if m.process is not None and m.process.poll() is None]
        for m in live:
            wait_for(lambda m=m: self._healthy(m), timeout, f"etcd member {m.name} healthy")

    def _healthy(self, m: Member) -> bool:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls / "ca.crt"))
            context.load_cert_chain(self.tls / "client.crt", self.tls / "client.key")
        with urllib.request.urlopen(f"{m.client}/health", timeout=2, context=context) as reply:
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


def make_certificates(folder: Path) -> Path:
    """A test CA, a server certificate for 127.0.0.1 (also for client use: etcd's JSON gateway
    dials its own gRPC port with it) and a client certificate (CN kpc), made
    with openssl; keys readable only by their owner."""
    require_tool("openssl")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=kpc test etcd CA")  # fmt: skip
    for name, cn, usage in (
        (
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth",
        ),
        ("client", "kpc", "extendedKeyUsage=clientAuth"),
    ):
        run("req", *curve, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        (folder / f"{name}.ext").write_text(usage + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
            "-extfile", f"{name}.ext")  # fmt: skip
        (folder / f"{name}.key").chmod(0o600)
    return folder
