"""Real OpenSSH servers for the node-access tests.

Each server is ``/usr/sbin/sshd -D -e`` on its own loopback address (127.0.7.x), with a host
key and an authorized_keys file in the test's tmp dir, a child of the test, killed and
waited for in the fixture's finalizer. Logins are as root (loopback only,
``PermitRootLogin prohibit-password``), since sshd needs a real account.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import wait_for

SSHD = "/usr/sbin/sshd"
PORT = 2222  # unprivileged, on addresses of our own: no clash with a host sshd
PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd; its service creates it too


def keygen(path: Path, key_type: str = "ed25519") -> Path:
    """A new unencrypted key pair at ``path`` / ``path.pub``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def public_line(path: Path) -> str:
    """``type base64`` of a key pair's public half."""
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


@dataclass
class Sshd:
    address: str
    port: int
    host_key: Path
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "sshd.log"

    @property
    def host_key_line(self) -> str:
        return public_line(self.host_key)


class SshdFarm:
    """Starts sshd instances and stops every one of them in ``close``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[Sshd] = []

    def start(
        self,
        address: str,
        authorized: list[Path],
        *,
        port: int = PORT,
        host_key: Path | None = None,
        path: str | None = None,
        wait: bool = True,
    ) -> Sshd:
        """An sshd accepting the public halves of ``authorized`` for root. ``path``
        replaces the session PATH (to hide programs such as docker)."""
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        workdir = self.root / f"sshd-{address}-{port}-{len(self.servers)}"
        workdir.mkdir(parents=True)
        key = host_key or keygen(workdir / "host_ed25519")
        auth = workdir / "authorized_keys"
        auth.write_text("".join(Path(f"{k}.pub").read_text() for k in authorized))
        lines = [
            f"ListenAddress {address}:{port}",
            f"HostKey {key}",
            "PidFile none",
            f"AuthorizedKeysFile {auth}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PrintMotd no",
            "MaxStartups 200",
            "LogLevel VERBOSE",
        ]
        if path is not None:
            lines.append(f"SetEnv PATH={path}")
        config = workdir / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        server = Sshd(address, port, key, workdir)
        with server.log.open("wb") as log:
            server.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.servers.append(server)
        if wait:
            self.wait_ready(server)
        return server

    def wait_ready(self, server: Sshd) -> None:
        def listening() -> bool:
            assert server.process is not None
            if server.process.poll() is not None:
                raise AssertionError(f"sshd exited: {server.log.read_text()}")
            return f"Server listening on {server.address} port {server.port}" in (
                server.log.read_text()
            )

        wait_for(listening, 10, f"sshd on {server.address}:{server.port}")

    def stop(self, server: Sshd) -> None:
        process = server.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        server.process = None
        # sshd's per-connection children exit when their client goes; none outlive a test.

    def close(self) -> None:
        for server in self.servers:
            self.stop(server)


def silent_listener(address: str, port: int = PORT) -> socket.socket:
    """A socket that accepts TCP connections (the kernel completes them) and never speaks."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(16)
    return sock


def path_without(root: Path, hidden: set[str]) -> str:
    """A PATH of one directory linking every program of the system's PATH but ``hidden``
    (to make, say, docker absent on an otherwise complete node)."""
    directory = root / "bin"
    directory.mkdir(exist_ok=True)
    for base in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        for source in sorted(Path(base).iterdir()) if Path(base).is_dir() else []:
            link = directory / source.name
            if source.name in hidden or link.is_symlink():
                continue
            link.symlink_to(source)
    return str(directory)
