"""kpc's self-contained executable (scripts/build-binary) on a machine that has no Python.

The machine is a chroot of kpc's own base image (Debian minbase: bash, coreutils, util-linux,
no Python), made to look like a live Flatcar (its release files), with the host's /dev,
/sys and /proc as a live system has them. install-host's --dry-run and its disk refusals
run there against loop devices, and the disks are hashed before and after.
"""

from __future__ import annotations

import hashlib
import io
import shlex
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.images.bundle import ARCHIVE, MANIFEST, BundledImage, Manifest
from tests.conftest import REPO, require_docker, require_root, require_tool
from tests.install.conftest import Loop, sh

BASE_IMAGE = "kpc/base:bookworm"
FLATCAR_TREE = Path(__file__).parent / "fixtures" / "os" / "flatcar-beta"
BUILD_TIMEOUT = 1200
PATH = "/usr/sbin:/usr/bin:/sbin:/bin:/opt/bin"

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="session")
def kpc_binary() -> Path:
    """The executable, built (or taken from the cache) the documented way."""
    result = subprocess.run(
        [str(REPO / "scripts" / "build-binary")],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_file(), result.stdout
    return path


@pytest.fixture(scope="session")
def live_root(tmp_path_factory: pytest.TempPathFactory, kpc_binary: Path) -> Path:
    """A Python-less root file system holding kpc's executable, an operator key and config."""
    require_root()
    require_docker()
    require_tool("unshare", "chroot", "ssh-keygen")
    probe = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True)
    assert probe.returncode == 0, f"{BASE_IMAGE} is missing: scripts/setup-dev makes it"
    root = tmp_path_factory.mktemp("live") / "root"
    root.mkdir()
    container = sh("docker", "create", BASE_IMAGE, "/bin/true").stdout.strip()
    try:
        export = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(root)], stdin=export.stdout, check=True)
        assert export.wait() == 0
    finally:
        sh("docker", "rm", container)
    for path in ("usr/bin", "usr/local/bin", "bin"):
        assert not list((root / path).glob("python*")), f"{BASE_IMAGE} has Python in /{path}"
    shutil.copytree(FLATCAR_TREE, root, dirs_exist_ok=True)  # the live Flatcar's release files
    home = root / "root"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    key = root / "tmp" / "operator"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator@live", "-f", str(key))
    shutil.copy(key.with_suffix(".pub"), home / ".ssh" / "authorized_keys")
    (root / "etc" / "kpc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "kpc" / "kpc.yaml").write_text(
        "provisioning: {interface: eth0, address: 198.18.0.1, subnet: 198.18.0.0/24}\n"
    )
    shutil.copy(kpc_binary, home / "kpc")  # as the operator brings it (scp, USB stick)
    return root


def _chroot(root: Path, command: str, mounts: Callable[[], None] | None = None) -> tuple[int, str]:
    """Run ``command`` (sh) in ``root`` with /dev, /sys, /proc, /tmp and /run like a live host.

    The mounts live in a private mount namespace, so they vanish with the command.
    """
    r = shlex.quote(str(root))
    script = (
        f"set -e; mount --rbind /dev {r}/dev; mount --rbind /sys {r}/sys; "
        f"mount -t proc proc {r}/proc; mount -t tmpfs tmpfs {r}/tmp; "
        f"mount -t tmpfs tmpfs {r}/run; "
        f"exec chroot {r} /usr/bin/env -i HOME=/root PATH={PATH} COLUMNS=200 "
        f"/bin/sh -c {shlex.quote(command)}"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def test_the_live_root_has_no_python_and_kpc_runs(live_root: Path) -> None:
    code, out = _chroot(live_root, "command -v python3 || command -v python || echo none")
    assert out.strip() == "none", out
    code, out = _chroot(live_root, "/root/kpc --version")
    assert (code, out.strip()) == (0, "kpc 0.1.0"), out
    code, out = _chroot(live_root, "/root/kpc --config /etc/kpc/kpc.yaml config validate")
    assert code == 0, out


def test_dry_run_on_the_live_host_writes_nothing(
    loops: Callable[..., Loop], live_root: Path
) -> None:
    loop = loops()
    before = loop.digest()
    code, out = _chroot(live_root, f"/root/kpc install-host --dry-run --device {loop.device}")
    assert code == 0, out
    assert "this host runs Flatcar Container Linux" in out and "3850.1.0" in out, out
    # the disk this chroot lives on shows no mount inside it, yet it must be refused
    source = sh("findmnt", "-n", "-o", "SOURCE", "--target", str(live_root)).stdout.strip()
    if source.startswith("/dev/"):
        disk = sh("lsblk", "-n", "-d", "-o", "PKNAME", source).stdout.strip() or source[5:]
        assert f"/dev/{disk} is refused:" in out
        assert "though no mount says so: kpc runs in a chroot or container" in out
    assert "operator@live" in out  # the operator's key, from /root/.ssh/authorized_keys
    ignition = "/run/kpc/install-host/deployhost.ign"
    assert f"would run: flatcar-install -d {loop.device} -C beta -V 3850.1.0 -i {ignition}" in out
    assert "would copy /root/kpc to /opt/bin/kpc" in out  # kpc itself goes onto the new root
    assert "ignition/deployhost.ign.j2" in out  # rendered from the files inside the executable
    assert "Dry run finished: nothing was written." in out
    assert loop.digest() == before


def test_refusals_on_the_live_host(loops: Callable[..., Loop], live_root: Path) -> None:
    small = loops(size=4 << 30)
    busy = loops()
    sh("mkfs.ext4", "-q", "-F", "-L", "BUSY", busy.device)
    point = live_root / "mnt" / "busy"
    point.mkdir(parents=True, exist_ok=True)
    sh("mount", "-o", "ro,noload", busy.device, str(point))  # read-only: the digest holds
    try:
        digests = {loop.device: loop.digest() for loop in (small, busy)}
        expected = {
            small.device: "is too small (4.0G): Flatcar needs a disk of at least 8 GiB",
            busy.device: f"has a mounted filesystem ({busy.name} on /mnt/busy)",
        }
        for device, reason in expected.items():
            code, out = _chroot(live_root, f"/root/kpc install-host --device {device} --yes")
            assert code == 4, out
            assert f"refusing to install to {device}: {reason}" in out
            assert "nothing was written" in out
        for loop in (small, busy):
            assert loop.digest() == digests[loop.device]
    finally:
        sh("umount", str(point))


def test_the_executable_checks_an_image_bundle(live_root: Path) -> None:
    """Step 2 of the real-rack workflow starts here: the bundle is checked where no Python is
    (the load itself needs the engine; tests/services/test_bundle.py runs it)."""
    payload = b"a docker save archive stands here\n" * 1000
    manifest = Manifest(
        kpc_version="0.1.0",
        created="2026-11-29T00:00:00Z",
        archive_size=len(payload),
        archive_sha256="sha256:" + hashlib.sha256(payload).hexdigest(),
        kolla_tag=None,
        images=(BundledImage("kpc/registry:latest", "sha256:" + "0" * 64),),
    )
    for name, body in (("good.tar", payload), ("bad.tar", payload[:-1] + b"?")):
        with tarfile.open(live_root / "root" / name, "w") as tar:
            for member, data in ((MANIFEST, manifest.to_json().encode()), (ARCHIVE, body)):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    code, out = _chroot(live_root, "/root/kpc images load --check /root/good.tar")
    assert code == 0 and "/root/good.tar: intact, 1 image(s), made by kpc 0.1.0" in out, out
    code, out = _chroot(live_root, "/root/kpc images load --check /root/bad.tar")
    assert code == 1 and "images.tar is damaged" in out, out
