"""``kpc assets fetch``: download a Flatcar release for PXE booting, verified and atomic.

Files (from ``{mirror}/{version}/``), each checked against Flatcar's image signing key with
``gpgv`` (a detached signature beside it; note the PXE kernel's signature is published as
``flatcar_production_image.vmlinuz.sig``, the same kernel as the disk image's)::

    flatcar_production_pxe.vmlinuz          + .sig
    flatcar_production_pxe_image.cpio.gz    + .sig
    flatcar_production_image.bin.bz2        + .sig   (what flatcar-install writes to disk)
    version.txt                             (unsigned upstream: its FLATCAR_VERSION must match)

Downloads go to ``assets/flatcar/.VERSION.partial/`` (hidden: bootcfg never serves it), each
file as ``NAME.part`` until complete, so an interrupted run resumes with an HTTP Range
request. Only when every signature verifies is the directory renamed to
``assets/flatcar/VERSION`` in one step. A file whose signature fails is deleted (with its
signature) and the run fails naming it: nothing unverified is ever installed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from pathlib import Path

from appliance.drivers.process import run, which
from appliance.errors import CommandFailed, KpcError

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
TIMEOUT = 60.0
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")

Progress = Callable[[str, int, int | None], None]  # file name, bytes so far, total if known


class AssetError(KpcError):
    """A download or verification failed; nothing was installed."""


@dataclass(frozen=True)
class Asset:
    name: str  # as stored and served
    sig_remote: str | None  # the signature's name on the mirror; None: unsigned upstream

    @property
    def sig_name(self) -> str:
        return f"{self.name}.sig"


FLATCAR_ASSETS = (
    Asset("flatcar_production_pxe.vmlinuz", "flatcar_production_image.vmlinuz.sig"),
    Asset("flatcar_production_pxe_image.cpio.gz", "flatcar_production_pxe_image.cpio.gz.sig"),
    Asset("flatcar_production_image.bin.bz2", "flatcar_production_image.bin.bz2.sig"),
    Asset("version.txt", None),
)


@dataclass(frozen=True)
class FetchResult:
    version: str
    directory: Path
    already_present: bool
    downloaded: tuple[str, ...] = ()


def release_url(mirror: str, version: str, name: str) -> str:
    return f"{mirror.rstrip('/')}/{version}/{name}"


def _open(url: str, start: int) -> HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": "kpc-assets"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response: HTTPResponse = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and start:
            raise _RangeRefused() from None
        raise AssetError(
            f"{url}: HTTP {exc.code} {exc.reason}",
            hint="check os.mirror, the channel and the version (is it published there?)",
        ) from None
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise AssetError(f"cannot download {url}: {reason}", hint="check os.mirror") from None
    return response


class _RangeRefused(Exception):
    pass


def download(url: str, dest: Path, progress: Progress | None = None) -> None:
    """Download ``url`` to ``dest``, resuming from ``dest.part``; ``dest`` appears complete."""
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, start)
    except _RangeRefused:
        part.unlink()
        start = 0
        response = _open(url, 0)
    with response:
        total: int | None = None
        mode = "wb"
        if start and response.status == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != start:
                raise AssetError(f"{url}: the server answered the resume request wrongly")
            mode = "ab"
            total = int(match.group(2)) if match.group(2) != "*" else None
            log.info("resuming %s at byte %d", url, start)
        else:
            start = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        done = start
        try:
            with open(part, mode) as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(dest.name, done, total)
        except (OSError, HTTPException) as exc:
            raise AssetError(
                f"download of {url} interrupted after {done} bytes: {exc}",
                hint="run the same command again: it resumes where it stopped",
            ) from None
    if total is not None and done != total:
        raise AssetError(
            f"download of {url} stopped at {done} of {total} bytes",
            hint="run the same command again: it resumes where it stopped",
        )
    os.replace(part, dest)


def keyring_from(key_file: Path, workdir: Path) -> Path:
    """A keyring gpgv can read: an armored key is dearmored into ``workdir``."""
    try:
        head = key_file.read_bytes()[:64]
    except OSError as exc:
        raise AssetError(f"cannot read the signing key {key_file}: {exc.strerror}") from None
    if not head.lstrip().startswith(b"-----BEGIN PGP"):
        return key_file
    keyring = workdir / "keyring.gpg"
    gpg = which("gpg", "gnupg")
    run(
        [
            gpg,
            "--homedir",
            str(workdir),
            "--batch",
            "--yes",
            "--dearmor",
            "-o",
            str(keyring),
            str(key_file),
        ],
        hint=f"is {key_file} an OpenPGP public key?",
    )
    return keyring


def verify(keyring: Path, signature: Path, data: Path, workdir: Path) -> None:
    """gpgv's verdict on one detached signature; AssetError naming the file when bad."""
    gpgv = which("gpgv", "gpgv")
    try:
        run([gpgv, "--homedir", str(workdir), "--keyring", str(keyring), str(signature), str(data)])
    except CommandFailed as exc:
        raise AssetError(
            f"{data.name}: the signature does not verify with the Flatcar image signing key; "
            f"deleted it, nothing installed\n{exc.output.strip()}",
            hint="the mirror may be corrupt or tampered with; check os.mirror, then retry",
        ) from None


def parse_version_txt(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("'\"")
    return values


def resolve_version(mirror: str, version: str) -> str:
    """A concrete version: ``current`` is looked up in the mirror's current/version.txt."""
    if version != "current":
        if not VERSION_RE.fullmatch(version):
            raise AssetError(f"not a Flatcar version: {version!r}", hint="e.g. 3815.2.0")
        return version
    url = release_url(mirror, "current", "version.txt")
    with _open(url, 0) as response:
        text = response.read(65536).decode("utf-8", "replace")
    found = parse_version_txt(text).get("FLATCAR_VERSION", "")
    if not VERSION_RE.fullmatch(found):
        raise AssetError(f"{url} names no FLATCAR_VERSION")
    return found


def _point_current(root: Path, version: str) -> None:
    link = root / "current"
    tmp = root / f".current.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(version)
    os.replace(tmp, link)


def fetch_flatcar(
    mirror: str,
    version: str,
    assets_dir: Path,
    key_file: Path,
    *,
    progress: Progress | None = None,
    force: bool = False,
) -> FetchResult:
    """Download, verify and install one Flatcar release under ``assets_dir/flatcar``."""
    wanted_current = version == "current"
    version = resolve_version(mirror, version)
    root = assets_dir / "flatcar"
    final = root / version
    names = [a.name for a in FLATCAR_ASSETS] + [a.sig_name for a in FLATCAR_ASSETS if a.sig_remote]
    if final.is_dir() and not force and all((final / n).is_file() for n in names):
        if wanted_current or not (root / "current").exists():
            _point_current(root, version)
        return FetchResult(version, final, already_present=True)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{version}.partial"
    staging.mkdir(exist_ok=True)
    downloaded: list[str] = []
    for asset in FLATCAR_ASSETS:
        pairs = [(asset.name, asset.name)]
        if asset.sig_remote:
            pairs.append((asset.sig_remote, asset.sig_name))
        for remote, local in pairs:
            if not (staging / local).is_file():
                download(release_url(mirror, version, remote), staging / local, progress)
                downloaded.append(local)
    with tempfile.TemporaryDirectory(prefix="kpc-gpg-") as tmp:
        work = Path(tmp)
        keyring = keyring_from(key_file, work)
        for asset in FLATCAR_ASSETS:
            if asset.sig_remote is None:
                continue
            try:
                verify(keyring, staging / asset.sig_name, staging / asset.name, work)
            except AssetError:
                (staging / asset.name).unlink(missing_ok=True)
                (staging / asset.sig_name).unlink(missing_ok=True)
                raise
    stated = parse_version_txt((staging / "version.txt").read_text("utf-8", "replace"))
    if stated.get("FLATCAR_VERSION") != version:
        (staging / "version.txt").unlink()
        raise AssetError(
            f"version.txt from the mirror says FLATCAR_VERSION={stated.get('FLATCAR_VERSION')!r}, "
            f"not {version}: refusing the release",
            hint="check os.mirror and the channel",
        )
    if final.exists():
        old = root / f".{version}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, final)
    if wanted_current or not (root / "current").exists():
        _point_current(root, version)
    return FetchResult(version, final, already_present=False, downloaded=tuple(downloaded))


def list_assets(assets_dir: Path) -> list[tuple[str, int]]:
    """Every servable file under the assets dir (relative path, size), hidden ones skipped."""
    found: list[tuple[str, int]] = []
    if not assets_dir.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(assets_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            found.append((str(path.relative_to(assets_dir)), path.stat().st_size))
    return found


FLATCAR_KEY_FINGERPRINT = "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A"
FLATCAR_KEY_URL = "https://www.flatcar.org/security/image-signing-key/Flatcar_Image_Signing_Key.asc"
FLATCAR_INSTALL = Path("/usr/bin/flatcar-install")
_EMBEDDED_KEY_RE = re.compile(
    r'GPG_KEY="(-----BEGIN PGP PUBLIC KEY BLOCK-----.*?-----END PGP PUBLIC KEY BLOCK-----)"',
    re.DOTALL,
)


def key_from_flatcar_install(script: Path, dest: Path) -> Path | None:
    """Flatcar hosts carry the image signing key inside flatcar-install; write it to dest."""
    try:
        text = script.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = _EMBEDDED_KEY_RE.search(text)
    if match is None:
        return None
    dest.write_text(match.group(1) + "\n", encoding="utf-8")
    return dest


def find_signing_key(candidates: list[Path], workdir: Path, script: Path = FLATCAR_INSTALL) -> Path:
    """The first readable key file among ``candidates``, else the key in flatcar-install."""
    for path in candidates:
        if path.is_file():
            return path
    found = key_from_flatcar_install(script, workdir / "flatcar-key.asc")
    if found is not None:
        return found
    looked = ", ".join(str(p) for p in [*candidates, script])
    raise AssetError(
        f"no Flatcar image signing key found (looked at {looked})",
        hint=f"download {FLATCAR_KEY_URL}, check that its fingerprint is "
        f"{FLATCAR_KEY_FINGERPRINT}, and pass it with --key FILE",
    )
