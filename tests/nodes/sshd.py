"""Real OpenSSH servers for the node-access tests.

Each server is ``/usr/sbin/sshd -D -e`` on its own loopback address (127.0.7.x), with a host
key and an authorized_keys file in the test's tmp dir, a child of the test, killed and
waited for in the fixture's finalizer. Logins are as root (loopback only,
``PermitRootLogin prohibit-password``), since sshd needs a real account.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import wait_for

SSHD = "/usr/sbin/sshd"
PORT = 2222  # unprivileged, on addresses of our own: no clash with a host sshd
BUSYBOX = "/bin/busybox"  # Debian busybox-static
PRIVSEP_DIR = Path("/run/sshd")
# Each server is PID 1 of its own PID namespace: it reaps the sessions' orphans (a command
# left running after its client hung up), and when it exits the kernel ends whatever is
# left. The host's PID 1 does not reap orphans here.
PID_NAMESPACE = [
    "unshare",
    "--pid",
    "--fork",
    "--kill-child",
]  # compiled into Debian's sshd; its service creates it too


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
        self.scratch: list[Path] = []

    def start(
        self,
        address: str,
        authorized: list[Path],
        *,
        port: int = PORT,
        host_key: Path | None = None,
        path: str | None = None,
        wait: bool = True,
        login: str = "root",
    ) -> Sshd:
        """An sshd accepting the public halves of ``authorized`` for ``login``. ``path``
        replaces the session PATH (to hide programs such as docker). A ``login`` other than
        root is an existing system account (nobody) given /bin/sh, in a private mount
        namespace: OpenSSH runs an unprivileged user's session as a real node would (with
        privilege separation, which e.g. its "signal" requests need)."""
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        workdir = self.root / f"sshd-{address}-{port}-{len(self.servers)}"
        workdir.mkdir(parents=True)
        key = host_key or keygen(workdir / "host_ed25519")
        auth = workdir / "authorized_keys"
        if login != "root":  # sshd reads it as the user: not under pytest's private tmp
            shared = Path(tempfile.mkdtemp(prefix="kpcH-sshd-"))
            shared.chmod(0o755)
            self.scratch.append(shared)
            auth = shared / "authorized_keys"
        auth.write_text("".join(Path(f"{k}.pub").read_text() for k in authorized))
        auth.chmod(0o644)
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
        # In a private mount namespace: root's home is an empty directory, so a session does
        # not run this machine's own ~/.bashrc (whose tools, killed with the server mid-way,
        # can leave locks behind that stall every later login); another login gets /bin/sh.
        home = workdir / "home"
        home.mkdir(mode=0o700)
        mounts = [f"mount --bind {home} /root"]
        if login != "root":
            passwd = workdir / "passwd"
            passwd.write_text(
                "".join(
                    ":".join([*line.split(":")[:5], "/", "/bin/sh"]) + "\n"
                    if line.split(":")[0] == login
                    else line + "\n"
                    for line in Path("/etc/passwd").read_text().splitlines()
                )
            )
            mounts.append(f"mount --bind {passwd} /etc/passwd")
        sshd = shlex.join([SSHD, "-D", "-e", "-f", str(config)])
        script = " && ".join([*mounts, f"exec {sshd}"])
        argv = [*PID_NAMESPACE, "--mount", "--propagation", "private", "sh", "-c", script]
        with server.log.open("wb") as log:
            server.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        self.servers.append(server)
        if wait:
            self.wait_ready(server)
        return server

    def start_lab_like(self, address: str, authorized: list[Path], *, port: int = PORT) -> Sshd:
        """A node like the virtual lab's: dropbear, busybox as /usr/bin (so sh is ash and
        there is no docker, no python, no GNU date), root's home and passwd entry replaced
        -- all inside a private mount namespace that dies with the server."""
        workdir = self.root / f"dropbear-{address}-{port}-{len(self.servers)}"
        home, usrbin = workdir / "home", workdir / "usrbin"
        (home / ".ssh").mkdir(parents=True)
        usrbin.mkdir()
        (workdir / "empty").mkdir()  # over /usr/local
        (home / ".ssh" / "authorized_keys").write_text(
            "".join(Path(f"{k}.pub").read_text() for k in authorized)
        )
        busybox = usrbin / "busybox"
        busybox.write_bytes(Path(BUSYBOX).read_bytes())
        busybox.chmod(0o755)
        applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
        for applet in applets.stdout.split():
            if applet != "busybox":
                (usrbin / applet).symlink_to("busybox")
        passwd = workdir / "passwd"
        passwd.write_text(
            "".join(
                "root:x:0:0:root:/root:/bin/sh\n" if line.startswith("root:") else line + "\n"
                for line in Path("/etc/passwd").read_text().splitlines()
            )
        )
        key = workdir / "dropbear_ed25519_host_key"
        subprocess.run(
            ["dropbearkey", "-t", "ed25519", "-f", str(key)], capture_output=True, check=True
        )
        public = subprocess.run(
            ["dropbearkey", "-y", "-f", str(key)], capture_output=True, text=True, check=True
        ).stdout
        line = next(x for x in public.splitlines() if x.startswith("ssh-"))
        Path(f"{key}.pub").write_text(line + "\n")
        script = (
            f"mount --bind {home} /root && mount --bind {passwd} /etc/passwd && "
            f"mount --bind {workdir / 'empty'} /usr/local && mount --bind {usrbin} /usr/bin && "
            f"exec /usr/sbin/dropbear -F -E -s -m -r {key} -p {address}:{port} "
            f"-P {workdir / 'dropbear.pid'}"
        )
        server = Sshd(address, port, key, workdir)
        with server.log.open("wb") as log:
            server.process = subprocess.Popen(
                [*PID_NAMESPACE, "--mount", "--propagation", "private", "/bin/sh", "-c", script],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.servers.append(server)

        def banner() -> bool:
            assert server.process is not None
            if server.process.poll() is not None:
                raise AssertionError(f"dropbear exited: {server.log.read_text()}")
            with socket.create_connection((address, port), timeout=2) as sock:
                return sock.recv(64).startswith(b"SSH-2.0-dropbear")

        wait_for(banner, 10, f"dropbear on {address}:{port}")
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
        """Stop the server (PID 1 of its namespace, so everything it started goes too) and
        reap unshare, our child."""
        process = server.process
        if process is None:
            return
        if process.poll() is None:
            for inner in children(process.pid):
                os.kill(inner, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()  # --kill-child takes the server down with it
                process.wait()
        server.process = None

    def close(self) -> None:
        for server in self.servers:
            self.stop(server)
        for directory in self.scratch:
            shutil.rmtree(directory, ignore_errors=True)


def children(pid: int) -> list[int]:
    """The live (non-zombie) child processes of ``pid``."""
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    alive = []
    for child in listed:
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except FileNotFoundError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            alive.append(int(child))
    return alive


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
