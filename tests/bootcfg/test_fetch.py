"""assets fetch against a loopback HTTP mirror, signed with a test GPG key."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from appliance.bootcfg.fetch import (
    FLATCAR_ASSETS,
    AssetError,
    fetch_flatcar,
    find_signing_key,
    list_assets,
)
from tests.conftest import require_tool

VERSION = "3815.2.0"


@dataclass
class Mirror:
    root: Path
    url: str = ""
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes, then hang up
    ranges: list[tuple[str, str]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


def _handler(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = mirror.root / self.path.lstrip("/")
            mirror.requests.append(self.path)
            if ".." in self.path or not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            start = 0
            header = self.headers.get("Range")
            if header:
                mirror.ranges.append((self.path, header))
                start = int(header.removeprefix("bytes=").rstrip("-"))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = mirror.cut_after.pop(self.path, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@contextmanager
def gnupg_home(base: Path, uid: str) -> Iterator[Path]:
    """A throw-away GnuPG home with an ed25519 signing key. Its gpg-agent runs supervised
    (we hand it the listening socket, as systemd would) so it stays our child: stopped and
    reaped here, never left behind."""
    require_tool("gpg", "gpgv", "gpgconf", "gpg-agent", "bash")
    home = base / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    path = subprocess.run(
        ["gpgconf", "--list-dirs", "agent-socket"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    fd = listener.fileno()
    agent = subprocess.Popen(
        [
            "bash",
            "-c",
            f"LISTEN_PID=$$ LISTEN_FDS=1 exec gpg-agent --homedir {shlex.quote(str(home))}"
            f" --supervised --allow-loopback-pinentry 3<&{fd}",
        ],
        env=env,
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    listener.close()
    try:
        subprocess.run(
            [
                "gpg",
                "--batch",
                "--no-autostart",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-gen-key",
                uid,
                "ed25519",
                "sign",
                "never",
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield home
    finally:
        agent.terminate()
        agent.wait(10)


@pytest.fixture(scope="module")
def gpg_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with gnupg_home(tmp_path_factory.mktemp("signer"), "kpc test signer <test@kpc.invalid>") as h:
        yield h


def _gpg(home: Path, *args: str) -> bytes:
    env = {**os.environ, "GNUPGHOME": str(home)}
    return subprocess.run(
        ["gpg", "--batch", "--no-autostart", *args], env=env, check=True, capture_output=True
    ).stdout


@pytest.fixture(scope="module")
def public_key(gpg_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "test-key.asc"
    path.write_bytes(_gpg(gpg_home, "--armor", "--export", "test@kpc.invalid"))
    return path


@pytest.fixture(scope="module")
def other_key_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with gnupg_home(tmp_path_factory.mktemp("other"), "someone else <evil@kpc.invalid>") as h:
        yield h


def _sign(home: Path, path: Path, sig: Path) -> None:
    _gpg(home, "--yes", "--detach-sign", "-o", str(sig), str(path))


@pytest.fixture
def mirror(tmp_path: Path, gpg_home: Path) -> Iterator[Mirror]:
    root = tmp_path / "mirror"
    rel = root / "stable" / VERSION
    rel.mkdir(parents=True)
    (root / "stable" / "current").symlink_to(VERSION)
    for asset in FLATCAR_ASSETS:
        path = rel / asset.name
        if asset.name == "version.txt":
            path.write_text(f"FLATCAR_BUILD=3815\nFLATCAR_VERSION={VERSION}\n")
        else:
            path.write_bytes(os.urandom(200_000 if "image.bin" in asset.name else 40_000))
        if asset.sig_remote:
            _sign(gpg_home, path, rel / asset.sig_remote)
    mirror = Mirror(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(mirror))
    mirror.url = f"http://127.0.0.1:{server.server_address[1]}/stable"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_fetch_installs_a_verified_release(
    mirror: Mirror, public_key: Path, tmp_path: Path
) -> None:
    assets = tmp_path / "assets"
    result = fetch_flatcar(mirror.url, "current", assets, public_key)
    assert result.version == VERSION
    final = assets / "flatcar" / VERSION
    assert result.directory == final
    src = mirror.root / "stable" / VERSION
    assert (final / "flatcar_production_pxe.vmlinuz").read_bytes() == (
        src / "flatcar_production_pxe.vmlinuz"
    ).read_bytes()
    # the PXE kernel's signature is published under the image kernel's name
    assert f"/stable/{VERSION}/flatcar_production_image.vmlinuz.sig" in mirror.requests
    assert (final / "flatcar_production_pxe.vmlinuz.sig").is_file()
    assert (assets / "flatcar" / "current").resolve() == final.resolve()
    assert not list((assets / "flatcar").glob(".*"))
    served = {rel for rel, _ in list_assets(assets)}
    assert f"flatcar/{VERSION}/flatcar_production_image.bin.bz2" in served
    again = fetch_flatcar(mirror.url, VERSION, assets, public_key)
    assert again.already_present


def test_interrupted_download_resumes(mirror: Mirror, public_key: Path, tmp_path: Path) -> None:
    image = f"/stable/{VERSION}/flatcar_production_image.bin.bz2"
    mirror.cut_after[image] = 50_000
    assets = tmp_path / "assets"
    with pytest.raises(AssetError, match=r"resumes|stopped|interrupted") as info:
        fetch_flatcar(mirror.url, VERSION, assets, public_key)
    assert info.value.hint is not None and "again" in info.value.hint
    assert not (assets / "flatcar" / VERSION).exists()  # nothing half-installed
    part = assets / "flatcar" / f".{VERSION}.partial" / "flatcar_production_image.bin.bz2.part"
    assert part.stat().st_size == 50_000
    fetched_before = set(mirror.requests)
    result = fetch_flatcar(mirror.url, VERSION, assets, public_key)
    assert (image, "bytes=50000-") in mirror.ranges
    assert result.downloaded[0] == "flatcar_production_image.bin.bz2"  # others were kept
    kernel = f"/stable/{VERSION}/flatcar_production_pxe.vmlinuz"
    assert kernel in fetched_before and mirror.requests.count(kernel) == 1
    data = (assets / "flatcar" / VERSION / "flatcar_production_image.bin.bz2").read_bytes()
    assert (
        data == (mirror.root / "stable" / VERSION / "flatcar_production_image.bin.bz2").read_bytes()
    )


def test_bad_signature_refused_and_nothing_installed(
    mirror: Mirror, public_key: Path, other_key_home: Path, tmp_path: Path
) -> None:
    rel = mirror.root / "stable" / VERSION
    _sign(
        other_key_home,
        rel / "flatcar_production_pxe_image.cpio.gz",
        rel / "flatcar_production_pxe_image.cpio.gz.sig",
    )
    assets = tmp_path / "assets"
    with pytest.raises(AssetError, match=r"flatcar_production_pxe_image\.cpio\.gz: the signature"):
        fetch_flatcar(mirror.url, VERSION, assets, public_key)
    assert not (assets / "flatcar" / VERSION).exists()
    assert not (assets / "flatcar" / "current").exists()
    staging = assets / "flatcar" / f".{VERSION}.partial"
    assert not (staging / "flatcar_production_pxe_image.cpio.gz").exists()


def test_tampered_file_refused(mirror: Mirror, public_key: Path, tmp_path: Path) -> None:
    kernel = mirror.root / "stable" / VERSION / "flatcar_production_pxe.vmlinuz"
    kernel.write_bytes(kernel.read_bytes() + b"evil")
    with pytest.raises(AssetError, match=r"flatcar_production_pxe\.vmlinuz: the signature"):
        fetch_flatcar(mirror.url, VERSION, tmp_path / "assets", public_key)


def test_unsigned_release_refused(mirror: Mirror, public_key: Path, tmp_path: Path) -> None:
    (mirror.root / "stable" / VERSION / "flatcar_production_image.bin.bz2.sig").unlink()
    with pytest.raises(AssetError, match=r"flatcar_production_image.bin.bz2.sig: HTTP 404"):
        fetch_flatcar(mirror.url, VERSION, tmp_path / "assets", public_key)
    assert not (tmp_path / "assets" / "flatcar" / VERSION).exists()


def test_version_mismatch_refused(mirror: Mirror, public_key: Path, tmp_path: Path) -> None:
    (mirror.root / "stable" / VERSION / "version.txt").write_text("FLATCAR_VERSION=1.0.0\n")
    with pytest.raises(AssetError, match="refusing the release"):
        fetch_flatcar(mirror.url, VERSION, tmp_path / "assets", public_key)
    assert not (tmp_path / "assets" / "flatcar" / VERSION).exists()


def test_unknown_version_is_a_clear_error(mirror: Mirror, public_key: Path, tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="HTTP 404") as info:
        fetch_flatcar(mirror.url, "9999.0.0", tmp_path / "assets", public_key)
    assert info.value.hint is not None and "version" in info.value.hint
    with pytest.raises(AssetError, match="not a Flatcar version"):
        fetch_flatcar(mirror.url, "../../etc", tmp_path / "assets", public_key)


def test_signing_key_from_flatcar_install(public_key: Path, tmp_path: Path) -> None:
    armored = public_key.read_text().strip()
    script = tmp_path / "flatcar-install"
    script.write_text(f'#!/bin/bash\nfoo=1\nGPG_KEY="{armored}"\nbar=2\n')
    found = find_signing_key([tmp_path / "missing.asc"], tmp_path, script)
    assert found.read_text().strip() == armored
    with pytest.raises(AssetError, match="no Flatcar image signing key") as info:
        find_signing_key([tmp_path / "missing.asc"], tmp_path, tmp_path / "nope")
    assert info.value.hint is not None and "F88CFEDE" in info.value.hint
