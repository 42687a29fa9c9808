"""install-host for real: a live Flatcar-shaped server installs itself and boots the result.

The server is a QEMU machine (TCG) with three disks: a 40 GiB disk to install to, a 4 GiB
disk (too small for Flatcar) and the live media (an ISO 9660 image, attached read-only). It
boots the lab's node OS (``kpc lab build-os``: Debian 13 shaped like Flatcar, the real
Ignition, no Python) live, with the kernel arguments and Ignition config of the product's
own rescue profile (``bootcfg.setup.seed_files``): the operator's key in core's
authorized_keys, the root in RAM. Its only network is QEMU's user-mode stack with
``restrict=on``: SSH is forwarded from 127.0.0.1 and the guest's one reachable address,
10.0.2.100:80, is forwarded to an HTTP server on 127.0.0.1 that this test runs (the node OS
release, signed, as on Flatcar's mirrors).

As an operator would: log in over SSH with a pty, copy kpc's executable (scp), check the
refusals with --dry-run (disks hashed before and after), run ``sudo -E ./kpc install-host``
and type the answers; the node OS's own ``flatcar-install`` fetches, verifies and writes the
image. Then the server boots from its disk, Ignition applies the deployhost config, and the
test logs in again with the same key and checks what install-host promised.
"""

from __future__ import annotations

import fcntl
import functools
import http.server
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.bootcfg.setup import INITRD, KERNEL, seed_files
from appliance.config import parse_config
from appliance.keys import parse_line
from appliance.services.spec import service_specs
from tests.conftest import REPO, require_root, require_tool, wait_for
from tests.install.conftest import sparse_digest
from tests.install.test_binary import kpc_binary  # noqa: F401  (the session fixture)

# 'full' (scripts/test --full), not CI: one live server refuses, installs itself, boots the
# deploy host and loads an image bundle: ~33 min of TCG VM time (docs/benchmarks.md), which
# no cache shortens; CI keeps the executable's and the bundle's tests (tests/install,
# tests/services/test_bundle.py) and the node OS's PXE-install chain (tests/lab).
pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.slow, pytest.mark.full]

GUEST_HTTP = "10.0.2.100"  # the one address the restricted guest can reach (guestfwd)
GUEST_ADDRESS = "10.0.2.15"  # QEMU user networking's DHCP answer
MEMORY_MIB = 3072
IMAGES = "kpcl"  # images.prefix of the installed deploy host (its image is built here)
BUILD_TIMEOUT = 3600
BOOT_TIMEOUT = 900
INSTALL_TIMEOUT = 1800
EMERGENCY = "Entering emergency mode"  # systemd gave up booting: no SSH will come
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
KPC = "sudo -E env COLUMNS=250 ./kpc"  # wide: a long refusal stays on one line
SSH_OPTIONS = (
    "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
)  # fmt: skip


@dataclass(frozen=True)
class NodeOs:
    directory: Path  # Flatcar's mirror layout: VERSION/flatcar_production_*
    version: str


@pytest.fixture(scope="session")
def node_os() -> NodeOs:
    """The lab's node OS, built (or found in the cache) by kpc itself."""
    require_root()
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "lab", "build-os", "--os", "node"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "1000"},  # one path a line
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    kernels = [
        Path(word)
        for line in result.stdout.splitlines()
        for word in line.split()
        if word.endswith(f"/{KERNEL}")
    ]
    assert kernels, f"kpc lab build-os named no {KERNEL}:\n{result.stdout}"
    release = kernels[0].parent
    return NodeOs(release.parent, release.name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A directory served on 127.0.0.1 (what the guest sees as http://10.0.2.100/)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


class Server:
    """One QEMU machine; boots live (kernel + initrd given) or from its first disk."""

    def __init__(self, workdir: Path, disks: Sequence[tuple[Path, bool]], http_port: int) -> None:
        self.workdir = workdir
        self.disks = disks
        self.http_port = http_port
        self.ssh_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.boots = 0

    @property
    def log(self) -> Path:
        return self.workdir / f"serial-{self.boots}.log"

    def start(self, kernel: Path | None = None, initrd: Path | None = None, args: str = "") -> None:
        self.boots += 1
        forward = f"cmd:socat STDIO TCP:127.0.0.1:{self.http_port}"
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", str(MEMORY_MIB),
            "-smp", "1", "-display", "none", "-vga", "none", "-monitor", "none",
            "-serial", f"file:{self.log}", "-no-reboot",
            "-netdev",
            f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22,"
            f"guestfwd=tcp:{GUEST_HTTP}:80-{forward}",
            "-device", "virtio-net-pci,netdev=n0",
        ]  # fmt: skip
        for index, (path, read_only) in enumerate(self.disks):
            drive = f"file={path},if=none,id=d{index},format=raw"
            if read_only:
                drive += ",readonly=on"
            argv += ["-drive", drive, "-device", f"virtio-blk-pci,drive=d{index}"]
        if kernel is not None and initrd is not None:
            argv += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", args]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def serial_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def wait_stopped(self, timeout: float) -> None:
        assert self.proc is not None
        self.proc.wait(timeout=timeout)
        self.proc = None


class Operator:
    """The operator's SSH client (OpenSSH), with the key the live server authorized."""

    def __init__(self, key: Path, server: Server) -> None:
        self.key = key
        self.server = server

    def _base(self, tty: bool = False) -> list[str]:
        argv = ["ssh", *SSH_OPTIONS, "-i", str(self.key), "-p", str(self.server.ssh_port)]
        return [*argv, "-tt" if tty else "-T", "core@127.0.0.1"]

    def run(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._base(), command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def wait_for_login(self, timeout: float) -> None:
        proc = self.server.proc

        def answers() -> bool:
            assert proc is not None and proc.poll() is None, (
                f"QEMU exited ({proc.returncode if proc else '-'}):\n{self.server.serial_tail()}"
            )
            console = (
                self.server.log.read_text(errors="replace") if self.server.log.exists() else ""
            )
            assert EMERGENCY not in console, f"the server's boot failed:\n{_failures(console)}"
            return self.run("true", timeout=60).returncode == 0

        try:
            wait_for(answers, timeout, "the server to answer SSH", interval=3)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n--- serial console:\n{self.server.serial_tail()}"
            ) from None

    def copy(self, source: Path, dest: str) -> None:
        argv = ["scp", *SSH_OPTIONS, "-i", str(self.key), "-P", str(self.server.ssh_port)]
        subprocess.run(
            [*argv, str(source), f"core@127.0.0.1:{dest}"],
            check=True,
            capture_output=True,
            timeout=600,
        )

    def interactive(
        self, command: str, answers: Sequence[tuple[str, str]], timeout: float
    ) -> tuple[int, str]:
        """Run ``command`` on a pty; type each answer when its prompt appears."""
        pid, fd = pty.fork()
        if pid == 0:  # the child: become ssh, on a terminal as an operator's
            argv = [*self._base(tty=True), command]
            os.execvpe(argv[0], argv, {**os.environ, "TERM": "xterm"})
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        output = b""
        searched = 0  # the next prompt is looked for after the previous one
        pending = list(answers)
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                assert left > 0, f"{command!r} did not finish:\n{output.decode(errors='replace')}"
                ready, _, _ = select.select([fd], [], [], min(left, 5))
                if not ready:
                    continue
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the pty's other side closed
                    break
                if not data:
                    break
                output += data
                text = ANSI.sub("", output.decode(errors="replace"))
                while pending and pending[0][0] in text[searched:]:
                    prompt, answer = pending.pop(0)
                    searched = text.index(prompt, searched) + len(prompt)
                    os.write(fd, answer.encode() + b"\r")
        finally:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), ANSI.sub("", output.decode(errors="replace"))


def _failures(console: str) -> str:
    """The console's lines about failed units, then its last lines."""
    lines = [ANSI.sub("", line).rstrip() for line in console.splitlines() if "audit:" not in line]
    lines = [line for line in lines if line]
    failed = [line for line in lines if "FAILED" in line or "Failed" in line]
    return "\n".join([*failed, "--- last lines:", *lines[-25:]])


def _record(timings: dict[str, float], executable: Path) -> None:
    """Print the phases; with KPC_LIVE_INSTALL_TIMINGS set, also write them there (JSON)
    for ``benchmarks/bench_live_install.py``."""
    facts = {**timings, "executable_bytes": executable.stat().st_size}
    print(f"\nbenchmark: {json.dumps(facts)}")
    out = os.environ.get("KPC_LIVE_INSTALL_TIMINGS")
    if out:
        Path(out).write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")


def _registry_bundle(tmp_path: Path, config_text: str) -> Path:
    """kpc's registry image, built here (BuildKit's cache) and saved as an operator would."""
    config = tmp_path / "build" / "kpc.yaml"
    config.parent.mkdir()
    config.write_text(config_text)  # the deploy host's own, so its images are the ones saved
    kpc = [sys.executable, "-m", "appliance", "-c", str(config), "images"]
    bundle = tmp_path / "kpc-images.tar"
    for step in (["build", "registry"], ["save", str(bundle), "registry", "--gzip"]):
        done = subprocess.run([*kpc, *step], capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return bundle


def _live_media(tmp_path: Path, node: NodeOs) -> Path:
    """An ISO 9660 image holding the live kernel and initramfs, like Flatcar's ISO."""
    tree = tmp_path / "iso"
    (tree / "flatcar").mkdir(parents=True)
    for name in (KERNEL, INITRD):
        (tree / "flatcar" / name).symlink_to(node.directory / node.version / name)
    iso = tmp_path / "live.iso"
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-follow-links", "-V", "FLATCAR_LIVE",
         "-o", str(iso), str(tree)],
        check=True, capture_output=True,
    )  # fmt: skip
    return iso


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


@pytest.mark.timeout(5400)
def test_live_server_refuses_then_installs_itself_and_boots_the_deploy_host(
    tmp_path: Path,
    node_os: NodeOs,
    kpc_binary: Path,  # noqa: F811
    http_root: tuple[Path, int],
) -> None:
    """One live server for all of it (each boot costs minutes under TCG): the refusals and
    the dry run first, then the install, the disk boot and the deployhost checks."""
    require_tool("qemu-system-x86_64", "socat", "ssh", "scp", "ssh-keygen", "xorriso")
    www, http_port = http_root
    (www / "flatcar").symlink_to(node_os.directory)

    key = tmp_path / "operator"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator@live", "-f", str(key)],
        check=True,
    )
    pub = key.with_suffix(".pub").read_text().strip()

    # The product's rescue profile: its kernel arguments and its Ignition (core's keys).
    config_text = (
        f"provisioning: {{interface: eth0, address: {GUEST_ADDRESS}, subnet: 10.0.2.0/24}}\n"
        f"os: {{channel: stable, version: {node_os.version}, "
        f"mirror: 'http://{GUEST_HTTP}/flatcar'}}\n"
        f"images: {{prefix: {IMAGES}}}\n"
    )
    config = parse_config(config_text, source="kpc.yaml")
    bundle = _registry_bundle(tmp_path, config_text)
    keys = [parse_line(pub, "operator.pub", 1)]
    seeded = seed_files(config, node_os.version, keys)
    (www / "rescue.ign").write_text(seeded["ignition/rescue.ign"])
    profile = json.loads(seeded["profiles/rescue.json"])
    args = [
        f"ignition.config.url=http://{GUEST_HTTP}/rescue.ign"
        if a.startswith("ignition.config.url=")
        else a
        for a in profile["boot"]["args"]
        if not a.startswith("console=tty0")
    ]

    target = _sparse(tmp_path / "disk-40g.raw", 40 << 30)
    small = _sparse(tmp_path / "disk-4g.raw", 4 << 30)
    live = _live_media(tmp_path, node_os)
    server = Server(tmp_path, [(target, False), (small, False), (live, True)], http_port)
    operator = Operator(key, server)
    release = node_os.directory / node_os.version
    timings: dict[str, float] = {}
    try:
        powered = time.monotonic()
        server.start(release / KERNEL, release / INITRD, " ".join(args))
        operator.wait_for_login(BOOT_TIMEOUT)
        started = time.monotonic()
        timings["live_boot_to_ssh_s"] = started - powered

        # Bring kpc the documented way and put the site config in place.
        operator.copy(kpc_binary, "kpc")
        put = operator.run(
            "chmod +x kpc && sudo mkdir -p /etc/kpc && sudo tee /etc/kpc/kpc.yaml >/dev/null "
            f"<<'EOF'\n{config_text}EOF\ncommand -v python3 python || echo no-python"
        )
        assert put.returncode == 0 and put.stdout.strip() == "no-python", put

        # Refusals on the live system; --dry-run writes nothing.
        digests = {p: sparse_digest(p) for p in (target, small)}
        expected = {
            "/dev/vdb": "is too small (4.0G): Flatcar needs a disk of at least 8 GiB",
            "/dev/vdc": "looks like live boot media",
        }
        for device, reason in expected.items():
            done = operator.run(f"{KPC} install-host --dry-run --device {device}")
            assert done.returncode == 4, done.stdout + done.stderr
            assert f"refusing to install to {device}: " in done.stderr
            assert reason in done.stderr
        dry = operator.run(f"{KPC} install-host --dry-run --device /dev/vda")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "would run: flatcar-install -d /dev/vda -C stable" in dry.stdout
        assert f"-b http://{GUEST_HTTP}/flatcar" in dry.stdout
        assert {p: sparse_digest(p) for p in (target, small)} == digests

        # The real thing, typed at a terminal.
        timings["copy_and_dry_runs_s"] = time.monotonic() - started
        installing = time.monotonic()
        code, out = operator.interactive(
            "sudo -E ./kpc install-host",
            [("Disk to install to (vda)", "vda"), ("Type vda to erase it and install", "vda")],
            INSTALL_TIMEOUT,
        )
        assert code == 0, out
        timings["install_host_s"] = time.monotonic() - installing
        assert "signature verified" in out  # the node OS's flatcar-install checked the image
        assert "Installed to /dev/vda." in out
        assert sparse_digest(small) == digests[small], "the small disk was written"
        operator.run("sudo systemctl poweroff", timeout=60)
        server.wait_stopped(300)

        # First boot from the disk: Ignition applies the deployhost config.
        booting = time.monotonic()
        server.start()
        operator.wait_for_login(BOOT_TIMEOUT)
        timings["disk_boot_to_ssh_s"] = time.monotonic() - booting
        timings["login_to_deploy_host_ssh_s"] = time.monotonic() - started
        _record(timings, kpc_binary)

        same = operator.run("cat /etc/kpc/kpc.yaml; findmnt -n -o SOURCE /")
        assert same.returncode == 0, same
        assert same.stdout.startswith(config_text), same.stdout
        valid = operator.run("/opt/bin/kpc --config /etc/kpc/kpc.yaml config validate")
        assert valid.returncode == 0, valid.stdout + valid.stderr
        specs = service_specs(config, Path("/etc/kpc/kpc.yaml")).values()
        for spec in specs:
            unit = f"{spec.name}.service"
            shown = operator.run(f"systemctl is-enabled {unit}; systemctl cat {unit} | head -3")
            assert shown.stdout.startswith("enabled"), (unit, shown.stdout, shown.stderr)
            operator.run(f"sudo systemctl start --no-block {unit}")
        for spec in specs:
            unit = f"{spec.name}.service"

            def explained(unit: str = unit) -> str | None:
                state = operator.run(f"systemctl is-active {unit}").stdout.strip()
                if state == "active":
                    return "active"
                log = operator.run(f"sudo journalctl -b -u {unit} --no-pager").stdout
                return log if "is missing" in log else None

            said = str(wait_for(explained, 300, f"{unit} to start or say what is missing", 5))
            if said != "active":  # it names the image, and how to bring it
                assert f"image {spec.image} is missing" in said, said
                assert "kpc images load BUNDLE" in said, said

        # Step 2 of the real-rack workflow: kpc's images come as a bundle, loaded by the
        # executable (no Python here); then the registry's unit runs and answers.
        for path in (bundle, bundle.with_name(bundle.name + ".sha256")):
            operator.copy(path, path.name)
        checked = operator.run(f"sha256sum -c {bundle.name}.sha256")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        loaded = operator.run(f"sudo /opt/bin/kpc images load {bundle.name}", timeout=1200)
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        assert f"{IMAGES}/registry:latest" in loaded.stdout, loaded.stdout
        registry = service_specs(config, Path("/etc/kpc/kpc.yaml"))["registry"]
        operator.run(f"sudo systemctl restart --no-block {registry.name}.service")
        where = f"http://{GUEST_ADDRESS}:{config.registry.port}/v2/"

        def answers_v2() -> bool:
            return operator.run(f"curl -sf -o /dev/null {where}").returncode == 0

        wait_for(answers_v2, 600, f"the registry loaded from the bundle to answer {where}", 5)
        active = operator.run(f"systemctl is-active {registry.name}.service")
        assert active.stdout.strip() == "active", active.stdout
    finally:
        server.stop()
