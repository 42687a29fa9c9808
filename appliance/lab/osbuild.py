"""Build the lab OS from Debian packages, once per input set, into a cache directory.

Inputs: the Debian cloud kernel (``apt-get download``, unpacked with ``dpkg-deb``), and
from the host's Debian packages busybox-static, jq, dropbear-bin, syslinux, syslinux-common,
systemd-boot-efi, dosfstools and mtools. No loop devices, mounts or root-only steps: the
FAT file system is made and filled inside the image file with mkfs.vfat and mtools.

Outputs (in ``<cache>/labos-<key>/``): ``vmlinuz``, ``initrd.gz``, ``disk.img.gz`` and
``disk.img.sha256`` ("<sha256> <bytes>", which the installer checks after writing).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from appliance.drivers import process
from appliance.errors import KpcError
from appliance.lab import osimage
from appliance.lab.osimage import Entry

KERNEL_META = "linux-image-cloud-amd64"
BUILDER_VERSION = "1"
SCRIPTS = {  # file in appliance/lab/os -> path in the initramfs
    "init": "init",
    "inittab": "etc/inittab",
    "lib.sh": "usr/lib/kpc/lib.sh",
    "rc": "usr/lib/kpc/rc",
    "install": "usr/lib/kpc/install",
    "node": "usr/lib/kpc/node",
    "shutdown": "usr/lib/kpc/shutdown",
    "udhcpc": "usr/lib/kpc/udhcpc",
}
EXECUTABLES = {  # host file -> Debian package that provides it
    "/usr/bin/jq": "jq",
    "/usr/sbin/dropbear": "dropbear-bin",
    "/usr/bin/dropbearkey": "dropbear-bin",
    "/usr/bin/dropbearconvert": "dropbear-bin",
    "/usr/bin/ssh-keygen": "openssh-client",  # host key, and signed check-ins (-Y sign)
}
BUSYBOX = ("/bin/busybox", "busybox-static")
MBR_CODE = ("/usr/lib/syslinux/mbr/mbr.bin", "syslinux-common")
SYSTEMD_BOOT = ("/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "systemd-boot-efi")
TOOLS = {  # program -> Debian package
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "modinfo": "kmod",
    "ldd": "libc-bin",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "syslinux": "syslinux",
}
ProgressFn = Callable[[str], None]


class LabOsError(KpcError):
    """The lab OS could not be built."""


@dataclass(frozen=True)
class LabOs:
    """A built lab OS: the files bootcfg serves."""

    directory: Path
    version: str
    kernel_release: str

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.gz"

    @property
    def image(self) -> Path:
        return self.directory / "disk.img.gz"

    @property
    def image_sha256(self) -> Path:
        return self.directory / "disk.img.sha256"

    def files(self) -> list[Path]:
        return [self.kernel, self.initrd, self.image, self.image_sha256]


def _require_inputs() -> None:
    for tool, package in TOOLS.items():
        process.which(tool, package)
    for path, package in [*EXECUTABLES.items(), BUSYBOX, MBR_CODE, SYSTEMD_BOOT]:
        if not Path(path).is_file():
            raise LabOsError(
                f"{path} is missing (the lab OS is built from it)",
                hint=f"apt-get install {package}",
            )


def _script_bytes() -> dict[str, bytes]:
    folder = resources.files("appliance.lab") / "os"
    return {name: (folder / name).read_bytes() for name in SCRIPTS}


def kernel_package() -> str:
    """The versioned cloud kernel package the meta package currently points at."""
    out = process.run(
        ["apt-cache", "depends", "--important", KERNEL_META],
        hint="run 'apt-get update' so apt knows the Debian cloud kernel",
    ).stdout
    match = re.search(r"Depends:\s*(linux-image-\S+-cloud-amd64)", out)
    if match is None:
        raise LabOsError(
            f"apt does not know which kernel {KERNEL_META} depends on",
            hint="run 'apt-get update' (the lab OS uses Debian's cloud kernel)",
        )
    return match.group(1)


def download_kernel(cache: Path) -> Path:
    """The kernel .deb in ``cache/debs`` (downloaded unless already there)."""
    package = kernel_package()
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    have = sorted(debs.glob(f"{package}_*.deb"))
    if have:
        return have[-1]
    process.run(
        ["apt-get", "download", package],
        cwd=debs,
        hint="the lab OS needs Debian's cloud kernel; check the apt sources and network",
    )
    have = sorted(debs.glob(f"{package}_*.deb"))
    if not have:
        raise LabOsError(f"apt-get download {package} left no .deb in {debs}")
    return have[-1]


def _build_key(deb: Path, scripts: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    digest.update(f"builder {BUILDER_VERSION}\n{deb.name}\n".encode())
    digest.update(Path(osimage.__file__).read_bytes())
    for name in sorted(scripts):
        digest.update(name.encode() + b"\0" + scripts[name])
    for path in [*EXECUTABLES, BUSYBOX[0], MBR_CODE[0], SYSTEMD_BOOT[0]]:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def _module_paths(modules_dir: Path) -> dict[str, Path]:
    return {p.name[: -len(".ko")].replace("-", "_"): p for p in modules_dir.rglob("*.ko")}


def _module_depends(paths: dict[str, Path]) -> dict[str, list[str]]:
    """modinfo's ``depends`` for the wanted modules and, recursively, what they need."""
    depends: dict[str, list[str]] = {}
    todo = list(osimage.WANTED_MODULES)
    while todo:
        name = todo.pop()
        if name in depends:
            continue
        if name not in paths:
            raise LabOsError(f"the cloud kernel has no module {name}")
        out = process.run(["modinfo", "-F", "depends", str(paths[name])]).stdout.strip()
        depends[name] = [d.replace("-", "_") for d in out.split(",") if d]
        todo.extend(depends[name])
    return depends


def _libraries(executables: list[str]) -> list[str]:
    libs: set[str] = set()
    for exe in executables:
        libs.update(osimage.parse_ldd(process.run(["ldd", exe]).stdout))
    return sorted(libs)


def initramfs_entries(
    *,
    version: str,
    modules: list[str],
    module_files: dict[str, Path],
    scripts: dict[str, bytes],
) -> list[Entry]:
    files: list[Entry] = [Entry("bin/busybox", 0o755, Path(BUSYBOX[0]).read_bytes())]
    applets = process.run([BUSYBOX[0], "--list-full"]).stdout.split()
    for applet in applets:
        if applet.strip("/") != "bin/busybox":
            depth = applet.strip("/").count("/")
            files.append(Entry(applet.strip("/"), 0, target="../" * depth + "bin/busybox"))
    for exe in EXECUTABLES:
        files.append(Entry(exe.strip("/"), 0o755, Path(exe).read_bytes()))
    for lib in _libraries(list(EXECUTABLES)):
        files.append(Entry(lib.strip("/"), 0o755, Path(lib).read_bytes()))
    for name in modules:
        files.append(Entry(f"lib/modules/{name}.ko", 0o644, module_files[name].read_bytes()))
    for name, target in SCRIPTS.items():
        mode = 0o644 if name in {"inittab", "lib.sh"} else 0o755
        files.append(Entry(target, mode, scripts[name]))
    for path, text in osimage.etc_files(version, modules).items():
        files.append(Entry(path, 0o644, text.encode()))
    dirs = [
        Entry(d, 0o040755)
        for d in ("proc", "sys", "dev", "run", "root", "home", "var", "etc/dropbear", "mnt")
    ]
    dirs.append(Entry("tmp", 0o041777))
    taken = {e.path for e in dirs}
    parents = [d for d in osimage.directories_for(e.path for e in files) if d.path not in taken]
    return [*dirs, *parents, *files]


def _mtools_env() -> dict[str, str]:
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def make_disk_image(path: Path, kernel: Path, initrd: Path, workdir: Path) -> None:
    """The raw disk image: MBR, FAT boot partition (syslinux + systemd-boot), OEM area."""
    offset = osimage.BOOT_START * osimage.SECTOR
    with path.open("wb") as image:
        image.truncate(osimage.IMAGE_BYTES)
        image.write(osimage.mbr(Path(MBR_CODE[0]).read_bytes(), osimage.layout_partitions()))
    process.run(
        [
            "mkfs.vfat",
            "--invariant",
            "-i",
            "6b70636c",
            "-n",
            "KPCLAB",
            "--offset",
            str(osimage.BOOT_START),
            str(path),
            str(osimage.BOOT_SECTORS // 2),
        ]
    )
    target = f"{path}@@{offset}"
    env = _mtools_env()
    process.run(["mmd", "-i", target, "::/syslinux", "::/EFI", "::/EFI/BOOT", "::/loader"], env=env)
    process.run(["mmd", "-i", target, "::/loader/entries"], env=env)
    texts = {
        "syslinux.cfg": ("::/syslinux/syslinux.cfg", osimage.syslinux_cfg()),
        "loader.conf": ("::/loader/loader.conf", osimage.loader_conf()),
        "kpc.conf": ("::/loader/entries/kpc.conf", osimage.loader_entry()),
    }
    copies = [
        (str(kernel), "::/vmlinuz"),
        (str(initrd), "::/initrd.gz"),
        (SYSTEMD_BOOT[0], "::/EFI/BOOT/BOOTX64.EFI"),
    ]
    for name, (dest, text) in texts.items():
        local = workdir / name
        local.write_text(text, encoding="utf-8")
        copies.append((str(local), dest))
    for src, dest in copies:
        process.run(["mcopy", "-i", target, src, dest], env=env)
    process.run(
        ["syslinux", "--offset", str(offset), "--install", "--directory", "/syslinux", str(path)],
        env=env,
    )


def _gzip_file(src: Path, dest: Path) -> None:
    with (
        src.open("rb") as raw,
        dest.open("wb") as out,
        gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as gz,
    ):
        shutil.copyfileobj(raw, gz, 1024 * 1024)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def build_lab_os(cache: Path, progress: ProgressFn = lambda _: None) -> LabOs:
    """The lab OS for the current inputs, built into ``cache`` unless already there."""
    _require_inputs()
    cache.mkdir(parents=True, exist_ok=True)
    progress("lab OS: finding the Debian cloud kernel")
    deb = download_kernel(cache)
    scripts = _script_bytes()
    key = _build_key(deb, scripts)
    final = cache / f"labos-{key}"
    manifest = final / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        return LabOs(final, str(data["version"]), str(data["kernel_release"]))
    progress(f"lab OS: building from {deb.name}")
    work = Path(tempfile.mkdtemp(prefix="labos-build-", dir=cache))
    try:
        root = work / "kernel"
        process.run(["dpkg-deb", "-x", str(deb), str(root)])
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise LabOsError(f"{deb.name} holds no boot/vmlinuz-*")
        release = kernels[-1].name.removeprefix("vmlinuz-")
        module_files = _module_paths(root / "lib" / "modules" / release)
        modules = osimage.module_order(osimage.WANTED_MODULES, _module_depends(module_files))
        out = work / "out"
        out.mkdir()
        entries = initramfs_entries(
            version=key, modules=modules, module_files=module_files, scripts=scripts
        )
        (out / "initrd.gz").write_bytes(gzip.compress(osimage.cpio_newc(entries), 6, mtime=0))
        shutil.copyfile(kernels[-1], out / "vmlinuz")
        progress("lab OS: making the disk image (BIOS and UEFI bootable)")
        raw = work / "disk.img"
        make_disk_image(raw, out / "vmlinuz", out / "initrd.gz", work)
        (out / "disk.img.sha256").write_text(
            f"{_sha256(raw)} {raw.stat().st_size}\n", encoding="utf-8"
        )
        _gzip_file(raw, out / "disk.img.gz")
        (out / "manifest.json").write_text(
            json.dumps(
                {"version": key, "kernel_release": release, "kernel_package": deb.name},
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        if final.exists():
            shutil.rmtree(final)
        out.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return LabOs(final, key, release)
