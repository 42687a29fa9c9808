"""Build the lab's node OS: Flatcar-shaped, from Debian packages, with the real Ignition.

``kpc lab build-os`` (and ``kpc lab up``) build it once per input set into the cache:

1. ``nodeos/build-root.sh`` (as root, in a chroot): debootstrap Debian 13 trixie, the cloud
   kernel, systemd, Docker, sshd, an NTP client, curl/jq/bash, no Python; kpc's
   ``flatcar-install`` (with the lab's image signing key) and the dracut module that runs
   Debian's Ignition (``dracut/99kpc-flatcar``); a dracut initramfs.
2. Here: the PXE image (the initramfs with the root as a squashfs appended, like
   ``flatcar_production_pxe_image.cpio.gz``), the GPT disk image (``appliance.lab.nodeimage``;
   GRUB for BIOS and UEFI), bzip2-compressed as Flatcar's, and beside it the same image
   zstd-compressed (``flatcar_production_image.bin.zst``, which this OS's ``flatcar-install``
   prefers: bunzip2 took most of a TCG node's install), every file signed with the lab key.

Output, in Flatcar's release layout: ``<cache>/nodeos-<key>/<VERSION>/`` holding
``flatcar_production_pxe.vmlinuz``, ``flatcar_production_pxe_image.cpio.gz``,
``flatcar_production_image.bin.bz2``, ``flatcar_production_image.bin.zst``, each with
``.sig``, and ``version.txt``; the lab's public key is
``<cache>/nodeos-<key>/image-signing-key.asc``. The key itself lives in
``<cache>/nodeos-signing/`` (made once; it never leaves the cache).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from appliance.drivers import process
from appliance.errors import ConfigError, KpcError
from appliance.inputfile import MAX_STATE_BYTES, read_text
from appliance.lab import nodeimage
from appliance.lab.osbuild import ProgressFn

BUILDER_VERSION = "1"
SUITE = "trixie"
PXE_KERNEL = "flatcar_production_pxe.vmlinuz"
PXE_IMAGE = "flatcar_production_pxe_image.cpio.gz"
DISK_IMAGE = "flatcar_production_image.bin.bz2"
DISK_IMAGE_ZST = "flatcar_production_image.bin.zst"  # kpc's addition; Flatcar has only .bz2
VERSION_TXT = "version.txt"
PYTHON_SYSEXT = "flatcar-python.raw"
SIGNED = (PXE_KERNEL, PXE_IMAGE, DISK_IMAGE, DISK_IMAGE_ZST)
KEY_NAME = "image-signing-key.asc"
KEY_UID = "kpc lab image signing key"
ROOT_SQUASHFS = "kpc-root.squashfs"
GRUB_BIOS_DIR = Path("/usr/lib/grub/i386-pc")
GRUB_EFI_DIR = Path("/usr/lib/grub/x86_64-efi")
TOOLS = {  # program -> Debian package
    "debootstrap": "debootstrap",
    "chroot": "coreutils",
    "mksquashfs": "squashfs-tools",
    "cpio": "cpio",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "sfdisk": "fdisk",
    "grub-mkimage": "grub-common",
    "lbzip2": "lbzip2",
    "zstd": "zstd",
    "gpg": "gnupg",
}


class NodeOsError(KpcError):
    """The node OS could not be built."""


@dataclass(frozen=True)
class NodeOs:
    """A built node OS: a Flatcar-layout release directory and its signing key."""

    directory: Path  # <cache>/nodeos-<key>
    version: str
    kernel_release: str

    @property
    def release(self) -> Path:
        return self.directory / self.version

    @property
    def public_key(self) -> Path:
        return self.directory / KEY_NAME

    @property
    def python_sysext(self) -> Path:
        """Python 3 as a systemd system extension (what Flatcar's python sysext provides)."""
        return self.release / PYTHON_SYSEXT

    def files(self) -> list[Path]:
        names = [*SIGNED, *(f"{n}.sig" for n in SIGNED), VERSION_TXT, PYTHON_SYSEXT]
        return [self.release / n for n in names]


def _require_tools() -> None:
    if os.geteuid() != 0:
        raise NodeOsError(
            "building the node OS needs root (debootstrap and chroot)",
            hint="run it as root (sudo kpc lab build-os)",
        )
    for tool, package in TOOLS.items():
        process.which(tool, package)
    for folder, package in ((GRUB_BIOS_DIR, "grub-pc-bin"), (GRUB_EFI_DIR, "grub-efi-amd64-bin")):
        if not folder.is_dir():
            raise NodeOsError(f"{folder} is missing", hint=f"apt-get install {package}")


def _source_files() -> dict[str, bytes]:
    """Every file of ``appliance/lab/nodeos`` by relative path (they go into the build key)."""
    top = resources.files("appliance.lab") / "nodeos"
    found: dict[str, bytes] = {}

    def walk(folder: object, prefix: str) -> None:
        for item in folder.iterdir():  # type: ignore[attr-defined]
            name = f"{prefix}{item.name}"
            if item.is_dir():
                walk(item, f"{name}/")
            elif not item.name.endswith(".pyc"):
                found[name] = item.read_bytes()

    walk(top, "")
    return found


def _gpg(home: Path, *args: str) -> process.Result:
    return process.run(["gpg", "--homedir", str(home), "--batch", "--quiet", *args])


def _has_secret_key(home: Path) -> bool:
    listed = process.run(
        ["gpg", "--homedir", str(home), "--batch", "--with-colons", "--list-secret-keys"],
        check=False,
    )
    return listed.returncode == 0 and any(
        line.startswith("sec:") for line in listed.stdout.splitlines()
    )


def signing_key(cache: Path) -> Path:
    """The lab's image signing key (a gpg home in the cache), made on first use."""
    home = cache / "nodeos-signing"
    public = home / KEY_NAME
    if public.is_file() and _has_secret_key(home):
        return home
    tmp = Path(tempfile.mkdtemp(prefix=".nodeos-signing-", dir=cache))
    tmp.chmod(0o700)
    try:
        _gpg(tmp, "--passphrase", "", "--quick-gen-key", KEY_UID, "ed25519", "sign", "never")
        armored = _gpg(tmp, "--armor", "--export", KEY_UID).stdout
        (tmp / KEY_NAME).write_text(armored, encoding="utf-8")
        if not _has_secret_key(tmp):
            raise NodeOsError(f"gpg made no secret key in {tmp} for the lab's image signing key")
        # the agent belongs to the temporary name: stop it and drop its sockets before the
        # rename, or gpg would talk to it under the final name and find no secret key
        process.run(["gpgconf", "--homedir", str(tmp), "--kill", "gpg-agent"], check=False)
        for socket in tmp.glob("S.gpg-agent*"):
            socket.unlink()
        if home.exists():
            shutil.rmtree(home)
        tmp.rename(home)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return home


def build_key(sources: dict[str, bytes], public_key: bytes, mirror: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"nodeos {BUILDER_VERSION}\n{SUITE}\n{mirror}\n".encode())
    digest.update(Path(nodeimage.__file__).read_bytes())
    digest.update(public_key)
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + sources[name] + b"\0")
    return digest.hexdigest()[:16]


def flatcar_install_script(template: str, public_key: str) -> str:
    """flatcar-install with the image signing key embedded, as Flatcar ships it."""
    return template.replace("@GPG_KEY@", public_key.strip())


def _load(directory: Path) -> NodeOs | None:
    manifest = directory / "manifest.json"
    try:
        data = json.loads(read_text(manifest, what="node OS manifest", limit=MAX_STATE_BYTES))
    except (OSError, ValueError, ConfigError):
        return None
    built = NodeOs(directory, str(data["version"]), str(data["kernel_release"]))
    return built if all(f.is_file() for f in built.files()) else None


def find_built(cache: Path) -> NodeOs | None:
    """The newest complete node OS in ``cache``, without building anything."""
    best: tuple[float, NodeOs] | None = None
    for manifest in cache.glob("nodeos-*/manifest.json"):
        built = _load(manifest.parent)
        if built is not None:
            stamp = manifest.stat().st_mtime
            if best is None or stamp > best[0]:
                best = (stamp, built)
    return best[1] if best else None


def _write_at(image: Path, offset: int, src: Path) -> None:
    with image.open("r+b") as out, src.open("rb") as data:
        out.seek(offset)
        shutil.copyfileobj(data, out, 4 * 1024 * 1024)


def _du_bytes(root: Path) -> int:
    out = process.run(["du", "-sx", "--block-size=1", str(root)]).stdout
    return int(out.split()[0])


def make_pxe_image(initrd: Path, root: Path, work: Path, dest: Path) -> None:
    """The dracut initramfs followed by an uncompressed cpio holding the root squashfs
    (already compressed: zstd, so the kernel unpacks it without a second pass)."""
    pxe = work / "pxe"
    pxe.mkdir()
    process.run(
        [
            *("mksquashfs", str(root), str(pxe / ROOT_SQUASHFS)),
            *("-comp", "zstd", "-Xcompression-level", "6", "-b", "1M"),
            *("-noappend", "-no-progress", "-quiet", "-wildcards", "-e", "boot/*"),
        ]
    )
    archive = work / "root.cpio"
    process.run_to_file(
        ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "--reproducible"],
        archive,
        stdin=f"{ROOT_SQUASHFS}\n".encode(),
        cwd=pxe,
    )
    with dest.open("wb") as out:
        for part in (initrd, archive):
            with part.open("rb") as data:
                shutil.copyfileobj(data, out, 4 * 1024 * 1024)
            # the kernel reads an uncompressed cpio after another archive only at a
            # 4-byte boundary, and skips zeros in between
            out.write(b"\0" * (-out.tell() % 512))
    archive.unlink()
    shutil.rmtree(pxe)


def _grub_image(fmt: str, folder: Path, modules: tuple[str, ...] | list[str], work: Path) -> Path:
    early = work / "grub-early.cfg"
    early.write_text(nodeimage.grub_early_config(), encoding="utf-8")
    out = work / f"grub-{fmt}.img"
    process.run(
        [
            *("grub-mkimage", "-O", fmt, "-d", str(folder), "-o", str(out)),
            *("-p", "/grub", "-c", str(early), *modules),
        ]
    )
    return out


def make_esp(path: Path, kernel: Path, initrd: Path, version: str, work: Path) -> None:
    """The EFI system partition: GRUB for UEFI, its config, the kernel, the first-boot flag."""
    with path.open("wb") as f:
        f.truncate(nodeimage.ESP_MIB * nodeimage.MIB)
    process.run(["mkfs.vfat", "-F", "32", "-n", nodeimage.ESP_LABEL, "-i", "4b504345", str(path)])
    efi = _grub_image("x86_64-efi", GRUB_EFI_DIR, nodeimage.GRUB_MODULES, work)
    cfg = work / "grub.cfg"
    cfg.write_text(nodeimage.grub_config(version), encoding="utf-8")
    flag = work / "first_boot"
    flag.write_text("", encoding="utf-8")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    target = str(path)
    process.run(["mmd", "-i", target, "::/EFI", "::/EFI/BOOT", "::/grub", "::/flatcar"], env=env)
    for src, dest in (
        (efi, "::/EFI/BOOT/BOOTX64.EFI"),
        (cfg, "::/grub/grub.cfg"),
        (kernel, f"::/{nodeimage.KERNEL_ON_ESP}"),
        (initrd, f"::/{nodeimage.INITRD_ON_ESP}"),
        (flag, f"::/{nodeimage.FIRST_BOOT_FLAG}"),
    ):
        process.run(["mcopy", "-i", target, str(src), dest], env=env)


def make_disk_image(
    path: Path, root: Path, kernel: Path, initrd: Path, version: str, work: Path
) -> None:
    """The raw GPT disk image (see ``appliance.lab.nodeimage``), BIOS and UEFI bootable."""
    used = _du_bytes(root)
    root_bytes = used + used // 4 + 128 * nodeimage.MIB
    parts = nodeimage.layout(root_bytes)
    esp, bios = nodeimage.by_label(parts, nodeimage.ESP_LABEL), parts[1]
    oem = nodeimage.by_label(parts, nodeimage.OEM_LABEL)
    rootp = nodeimage.by_label(parts, nodeimage.ROOT_LABEL)
    images = {
        esp: work / "esp.img",
        oem: work / "oem.img",
        rootp: work / "root.img",
    }
    make_esp(images[esp], kernel, initrd, version, work)
    process.run(["mkfs.ext4", "-q", "-F", "-L", nodeimage.OEM_LABEL, str(images[oem]), "32M"])
    process.run(
        [
            *("mkfs.ext4", "-q", "-F", "-L", nodeimage.ROOT_LABEL, "-d", str(root)),
            *(str(images[rootp]), f"{rootp.size * nodeimage.SECTOR // 1024}k"),
        ]
    )
    with path.open("wb") as f:
        f.truncate(nodeimage.image_bytes(parts))
    process.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", path.name],
        stdin=nodeimage.sfdisk_script(path.name, parts),
        cwd=path.parent,
    )
    for part, src in images.items():
        _write_at(path, part.offset, src)
        src.unlink()
    core = _grub_image("i386-pc", GRUB_BIOS_DIR, nodeimage.GRUB_BIOS_MODULES, work)
    core_bytes = nodeimage.patch_core_image(core.read_bytes(), bios.start, bios.size)
    boot = nodeimage.patch_boot_sector((GRUB_BIOS_DIR / "boot.img").read_bytes(), bios.start)
    with path.open("r+b") as f:
        f.write(boot)
        f.seek(bios.offset)
        f.write(core_bytes)


@contextmanager
def _build_lock(cache: Path, progress: ProgressFn) -> Iterator[None]:
    """One node OS build at a time per cache: builds share the Debian package cache, and
    two apt-get runs on it fail on apt's lock."""
    fd = os.open(cache / ".nodeos-build.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("node OS: another build is running in this cache; waiting for it to end")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def build_node_os(
    cache: Path,
    mirror: str = "http://deb.debian.org/debian",
    progress: ProgressFn = lambda _: None,
) -> NodeOs:
    """The node OS for the current inputs, built into ``cache`` unless already there."""
    _require_tools()
    cache.mkdir(parents=True, exist_ok=True)
    home = signing_key(cache)
    public = (home / KEY_NAME).read_text(encoding="utf-8")
    sources = _source_files()
    key = build_key(sources, public.encode(), mirror)
    final = cache / f"nodeos-{key}"
    built = _load(final)
    if built is not None:
        return built
    with _build_lock(cache, progress):
        built = _load(final)  # another process may have built it meanwhile
        if built is not None:
            return built
        _build(cache, home, public, sources, final, key, mirror, progress)
    built = _load(final)
    if built is None:
        raise NodeOsError(f"the node OS in {final} is incomplete after building it")
    return built


def _build(
    cache: Path,
    home: Path,
    public: str,
    sources: dict[str, bytes],
    final: Path,
    key: str,
    mirror: str,
    progress: ProgressFn,
) -> None:
    """Build the node OS for ``key`` into ``final`` (the caller holds the build lock)."""
    version = nodeimage.version_for(key)
    progress(f"node OS {version}: building (Debian {SUITE}; several minutes the first time)")
    work = Path(tempfile.mkdtemp(prefix="nodeos-build-", dir=cache))
    try:
        tree = work / "nodeos"
        for name, data in sources.items():
            dest = tree / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            if data.startswith(b"#!"):
                dest.chmod(0o755)
        installer = work / "flatcar-install"
        installer.write_text(
            flatcar_install_script(sources["flatcar-install"].decode(), public), encoding="utf-8"
        )
        installer.chmod(0o755)
        stage = work / "stage"
        stage.mkdir()
        root = work / "root"
        process.stream(
            [
                *("bash", str(tree / "build-root.sh"), str(root), SUITE, mirror),
                *(str(cache / "debs-trixie"), str(tree), str(installer), version, str(stage)),
            ],
            progress,
            hint=f"the logs are in {stage}",
        )
        release = work / "out" / version
        release.mkdir(parents=True)
        kernel, initrd = stage / "vmlinuz", stage / "initrd"
        kernel_release = (stage / "kernel-release").read_text(encoding="utf-8").strip()
        shutil.copyfile(kernel, release / PXE_KERNEL)
        progress("build-os: PXE image (initramfs + root squashfs)")
        make_pxe_image(initrd, root, work, release / PXE_IMAGE)
        progress("build-os: disk image (GPT; GRUB for BIOS and UEFI)")
        raw = work / "disk.img"
        make_disk_image(raw, root, kernel, initrd, version, work)
        shutil.rmtree(root)
        process.run(
            [
                *("mksquashfs", str(stage / "python-sysext"), str(release / PYTHON_SYSEXT)),
                *("-comp", "zstd", "-noappend", "-no-progress", "-quiet", "-all-root"),
            ]
        )
        progress("build-os: compressing the disk image (bzip2 and zstd) and signing")
        process.run_to_file(["lbzip2", "-n", "2", "-c", str(raw)], release / DISK_IMAGE)
        process.run_to_file(["zstd", "-q", "-T2", "-6", "-c", str(raw)], release / DISK_IMAGE_ZST)
        raw.unlink()
        for name in SIGNED:
            _gpg(
                home,
                "--yes",
                "--detach-sign",
                "-o",
                str(release / f"{name}.sig"),
                str(release / name),
            )
        (release / VERSION_TXT).write_text(nodeimage.version_txt(version, key), encoding="utf-8")
        out = work / "out"
        (out / KEY_NAME).write_text(public, encoding="utf-8")
        (out / "manifest.json").write_text(
            json.dumps(
                {"version": version, "kernel_release": kernel_release, "suite": SUITE}, indent=2
            )
            + "\n",
            encoding="utf-8",
        )
        if final.exists():
            shutil.rmtree(final)
        out.rename(final)
    finally:
        process.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
        process.run(["umount", str(work / "root" / "var/cache/apt/archives")], check=False)
        shutil.rmtree(work, ignore_errors=True)
