"""install-host for real: a live Flatcar-shaped server installs itself and boots the result.

The server is the lab's live host (``kpc lab up --os node --nodes 0 --live-host
--operator-key KEY.pub``): a lab server behind its simulated BMC with a 40 GiB disk to install
to, a 4 GiB disk (too small for Flatcar) and, in its CD drive, the node OS's live ISO (the lab's
node OS, ``kpc lab build-os``: Debian 13 shaped like Flatcar, the real Ignition, no Python)
booting the product's own rescue profile (``bootcfg.setup.seed_files``): the operator's key
in core's authorized_keys, the root in RAM. Its BMC boots it once from the CD. It sits on the
lab's site network (its address reserved by the lab's router); the only other thing there
the test adds is an HTTP server on the deploy host's lab address serving the node OS release,
signed, as on Flatcar's mirrors.

As an operator would: log in over SSH with a pty, copy kpc's executable (scp), check the
refusals with --dry-run (disks hashed before and after), run ``sudo -E ./kpc install-host``
and type the answers; the node OS's own ``flatcar-install`` fetches, verifies and writes the
image. Then the server reboots from its disk, Ignition applies the deployhost config, and the
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
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.bootcfg.setup import KERNEL
from appliance.config import parse_config
from appliance.lab.layout import LabPaths
from appliance.lab.plan import Server
from appliance.lab.state import load_state
from appliance.lab.vmspec import load_spec
from appliance.services.spec import service_specs
from tests.conftest import REPO, require_root, require_tool, wait_for
from tests.install.conftest import sparse_digest
from tests.install.test_binary import kpc_binary  # noqa: F401  (the session fixture)
from tests.lab.conftest import kpc, lab_dir, subreaper, up_args  # noqa: F401  (fixtures)

# 'full' (scripts/test --full), not CI: one live server refuses, installs itself, boots the
# deploy host and loads an image bundle: ~33 min of TCG VM time (docs/benchmarks.md), which
# no cache shortens; CI keeps the executable's and the bundle's tests (tests/install,
# tests/services/test_bundle.py) and the node OS's PXE-install chain (tests/lab).
pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.slow, pytest.mark.full]

IMAGES = "kpcl"  # images.prefix of the installed deploy host (its image is built here)
BUILD_TIMEOUT = 3600
BOOT_TIMEOUT = 1800  # a live boot to SSH took 16 min on this 2-core machine at load 12-19
INSTALL_TIMEOUT = 1800
# systemd gave up booting (emergency mode), or could not start at all (a generator that a
# very busy TCG host let run past systemd's timeout froze it): no SSH will come
BOOT_FAILED = ("Entering emergency mode", "Freezing execution")
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


@contextmanager
def serving(root: Path, address: str) -> Iterator[int]:
    """``root`` served over HTTP on ``address`` (the deploy host's lab address); its port."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        (address, 0), functools.partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class LiveHost:
    """The lab's live host, as the test reaches it."""

    server: Server
    address: str
    serial_log: Path

    def serial_tail(self, lines: int = 40) -> str:
        log = self.serial_log
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Operator:
    """The operator's SSH client (OpenSSH), with the key the live server authorized."""

    def __init__(self, key: Path, host: LiveHost) -> None:
        self.key = key
        self.host = host

    def _base(self, tty: bool = False) -> list[str]:
        argv = ["ssh", *SSH_OPTIONS, "-i", str(self.key)]
        return [*argv, "-tt" if tty else "-T", f"core@{self.host.address}"]

    def run(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._base(), command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def wait_for_login(self, timeout: float, other_than: str = "") -> str:
        """Until the host answers SSH in a boot other than ``other_than``; its boot id."""
        log = self.host.serial_log
        # an earlier boot's console is not this boot's
        skip = log.stat().st_size if other_than and log.exists() else 0
        said = [""]  # ssh's last complaint, for the timeout's message

        def answers() -> str | None:
            console = log.read_bytes()[skip:].decode(errors="replace") if log.exists() else ""
            failed = [mark for mark in BOOT_FAILED if mark in console]
            assert not failed, f"the server's boot failed:\n{_failures(console)}"
            done = self.run("cat /proc/sys/kernel/random/boot_id", timeout=60)
            said[0] = done.stderr.strip()[-500:]
            boot = done.stdout.strip()
            return boot if done.returncode == 0 and boot and boot != other_than else None

        try:
            return str(wait_for(answers, timeout, "the server to answer SSH", interval=3))
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n--- ssh said last: {said[0]}\n--- serial console:\n"
                f"{self.host.serial_tail()}"
            ) from None

    def copy(self, source: Path, dest: str) -> None:
        argv = ["scp", *SSH_OPTIONS, "-i", str(self.key)]
        subprocess.run(
            [*argv, str(source), f"core@{self.host.address}:{dest}"],
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


def _site_config(address: str, subnet: str, node: NodeOs, mirror: str) -> str:
    """The deploy host's site config: the live host's lab address, the node OS's mirror."""
    return (
        f"provisioning: {{interface: eth0, address: {address}, subnet: {subnet}}}\n"
        f"os: {{channel: stable, version: {node.version}, mirror: '{mirror}'}}\n"
        f"images: {{prefix: {IMAGES}}}\n"
    )


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


@pytest.mark.timeout(5400)
def test_live_server_refuses_then_installs_itself_and_boots_the_deploy_host(
    tmp_path: Path,
    node_os: NodeOs,
    kpc_binary: Path,  # noqa: F811
    subreaper: None,  # noqa: F811
    lab_dir: Path,  # noqa: F811
) -> None:
    """One live server for all of it (each boot costs minutes under TCG): the refusals and
    the dry run first, then the install, the disk boot and the deployhost checks."""
    require_tool("qemu-system-x86_64", "ssh", "scp", "ssh-keygen", "xorriso", "grub-mkrescue")
    key = tmp_path / "operator"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator@live", "-f", str(key)],
        check=True,
    )

    # The lab's live host, as an operator boots the Flatcar ISO: only the public key given.
    timings: dict[str, float] = {}
    powered = time.monotonic()
    live_args = ["--live-host", "--operator-key", str(key.with_suffix(".pub"))]
    up = kpc([*up_args(lab_dir, 0, "bios", os_kind="node"), *live_args])
    assert up.code == 0, up.output
    state = load_state(lab_dir)
    assert state is not None
    plan = state.plan
    assert [s.role for s in plan.servers] == ["live"], plan.servers
    live = plan.live_hosts[0]
    address = str(plan.live_address(live))
    assert f"ssh core@{address}" in up.output, up.output  # where the operator goes
    host = LiveHost(live, address, LabPaths(lab_dir).server(live).serial_log)
    spec = load_spec(LabPaths(lab_dir).server(live).spec)
    target, small = spec.disk, spec.extra_disks[0]
    deploy = str(plan.deploy_address)

    www = tmp_path / "www"
    www.mkdir()
    (www / "flatcar").symlink_to(node_os.directory)
    operator = Operator(key, host)
    with serving(www, deploy) as http_port:
        mirror = f"http://{deploy}:{http_port}/flatcar"
        config_text = _site_config(address, str(plan.site_net), node_os, mirror)
        config = parse_config(config_text, source="kpc.yaml")
        bundle = _registry_bundle(tmp_path, config_text)
        live_boot = operator.wait_for_login(BOOT_TIMEOUT)
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
            "/dev/sr0": "looks like live boot media",  # the CD the BMC booted
        }
        for device, reason in expected.items():
            done = operator.run(f"{KPC} install-host --dry-run --device {device}")
            assert done.returncode == 4, done.stdout + done.stderr
            assert f"refusing to install to {device}: " in done.stderr
            assert reason in done.stderr
        dry = operator.run(f"{KPC} install-host --dry-run --device /dev/vda")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "would run: flatcar-install -d /dev/vda -C stable" in dry.stdout
        assert f"-b {mirror}" in dry.stdout
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
        # As an operator would: reboot. The BMC's one-time CD boot is spent, the CD stays in
        # the drive, and the firmware boots the disk first.
        booting = time.monotonic()
        operator.run("sudo systemctl reboot", timeout=60)

        # First boot from the disk: Ignition applies the deployhost config.
        operator.wait_for_login(BOOT_TIMEOUT, other_than=live_boot)
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
        where = f"http://{address}:{config.registry.port}/v2/"

        def answers_v2() -> bool:
            return operator.run(f"curl -sf -o /dev/null {where}").returncode == 0

        wait_for(answers_v2, 600, f"the registry loaded from the bundle to answer {where}", 5)
        active = operator.run(f"systemctl is-active {registry.name}.service")
        assert active.stdout.strip() == "active", active.stdout
