"""``kpc images save`` / ``kpc images load``: kpc's images carried to a host that cannot build.

A Flatcar deploy host has Docker but no Python, debootstrap or apt, and an air-gapped site
has no route to PyPI or a Debian mirror: it cannot run ``kpc images base`` or ``build``. The
images are made on any Debian machine and carried over as one file, the *bundle*, an
uncompressed tar of two members:

- ``kpc-images.json``: the manifest (format and version, kpc's version, when it was made, the
  size and SHA-256 of ``images.tar``, and per image its tag, image ID and, for a Kolla image,
  its Kolla name and tag);
- ``images.tar``: one ``docker save`` of all the images (layers they share are stored once),
  or ``images.tar.gz`` with ``--gzip`` (about a third of the size; ``docker load`` reads
  both).

Beside it, ``BUNDLE.sha256`` in ``sha256sum`` format, so the copy can be checked with
coreutils alone. Loading checks the whole archive against the manifest before anything
reaches the engine, then checks every image's ID after ``docker load``, and pushes the Kolla
images into this host's registry where kolla-ansible's nodes pull them. Nothing secret is in
a bundle: images are built with the CA bundle as a build secret, never stored in a layer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from appliance import __version__
from appliance.config import SiteConfig
from appliance.drivers.docker import Docker
from appliance.errors import DockerError, KpcError, UsageError
from appliance.images.catalog import image_ref
from appliance.kolla.imagebuild import Progress, push_images
from appliance.kolla.mirror import default_images, image_tag, target_registry
from appliance.kolla.recipe import namespace
from appliance.kolla.registry_client import RegistryError

FORMAT = "kpc-image-bundle"
VERSION = 1
MANIFEST = "kpc-images.json"
ARCHIVE = "images.tar"
GZIPPED = "images.tar.gz"
CHUNK = 1 << 20


class BundleError(KpcError):
    """A bundle is not one kpc made, is damaged, or does not match what the engine loaded."""


@dataclass(frozen=True)
class BundledImage:
    ref: str  # the tag it is saved and loaded under
    id: str  # the engine's image ID (sha256:…), checked after loading
    kolla: str | None = None  # the Kolla image name (pushed to the registry), else None


@dataclass(frozen=True)
class Manifest:
    kpc_version: str
    created: str
    archive_size: int
    archive_sha256: str
    kolla_tag: str | None
    images: tuple[BundledImage, ...]
    archive: str = ARCHIVE  # the member holding the docker save archive

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "format": FORMAT,
                    "version": VERSION,
                    "kpc_version": self.kpc_version,
                    "created": self.created,
                    "archive": {
                        "name": self.archive,
                        "size": self.archive_size,
                        "sha256": self.archive_sha256,
                    },
                    "kolla_tag": self.kolla_tag,
                    "images": [{"ref": i.ref, "id": i.id, "kolla": i.kolla} for i in self.images],
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: bytes, where: Path) -> Manifest:
        """The manifest in ``text`` (read from bundle ``where``), or BundleError saying why."""
        hint = "make the bundle again with 'kpc images save' on the machine that built the images"
        try:
            data: Any = json.loads(text)
        except ValueError as exc:
            raise BundleError(f"{where}: {MANIFEST} is not JSON ({exc})", hint) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BundleError(f"{where}: {MANIFEST} is not a kpc image bundle manifest", hint)
        if data.get("version") != VERSION:
            raise BundleError(
                f"{where}: bundle format version {data.get('version')!r}; this kpc "
                f"({__version__}) reads version {VERSION}",
                hint="load it with the kpc that made it, or save it again with this one",
            )
        try:
            archive = data["archive"]
            if archive["name"] not in (ARCHIVE, GZIPPED):
                raise ValueError(f"archive.name {archive['name']!r}")
            images = tuple(
                BundledImage(str(i["ref"]), str(i["id"]), i.get("kolla") or None)
                for i in data["images"]
            )
            return cls(
                kpc_version=str(data["kpc_version"]),
                created=str(data["created"]),
                archive_size=int(archive["size"]),
                archive_sha256=str(archive["sha256"]),
                kolla_tag=data.get("kolla_tag") or None,
                images=images,
                archive=str(archive["name"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(
                f"{where}: {MANIFEST} lacks a field or has a wrong one ({exc})", hint
            ) from None


@dataclass(frozen=True)
class Saved:
    path: Path
    checksum_file: Path
    manifest: Manifest
    size: int
    seconds: float


@dataclass(frozen=True)
class Loaded:
    manifest: Manifest
    pushed: dict[str, str]  # Kolla name -> where the nodes pull it
    seconds: float


def checksum_file(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".sha256")


def _sha256(stream: IO[bytes], on_bytes: Callable[[int], None] | None = None) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if on_bytes:
            on_bytes(len(chunk))
    return "sha256:" + digest.hexdigest(), size


# --- choosing what goes in -----------------------------------------------------------------


def kolla_refs(config: SiteConfig, docker: Docker) -> dict[str, str]:
    """The local tag of each Kolla image of the site's service set (the newest build of it).

    ``kpc kolla images build`` keeps them as ``<images.prefix>-kolla-<hash>/<name>:<tag>``.
    """
    tag = image_tag(config)
    found: dict[str, str] = {}
    missing = []
    pattern = namespace(config.images.prefix, "*")
    for name in default_images(config):
        newest = docker.images_named(f"{pattern}/{name}:{tag}")
        if not newest:
            missing.append(name)
            continue
        refs = [t for t in newest[0].tags if t.endswith(f"/{name}:{tag}")]
        found[name] = sorted(refs)[-1]
    if missing:
        raise DockerError(
            f"Kolla image{'s' if len(missing) > 1 else ''} of kolla.services "
            f"({config.kolla.services}, tag {tag}) not built here: {', '.join(missing)}",
            hint="build them first: kpc kolla images build (or save without --kolla)",
        )
    return found


def service_refs(config: SiteConfig, docker: Docker, names: Sequence[str]) -> list[str]:
    """The tags of kpc's images ``names``; DockerError naming the ones not built."""
    refs = [image_ref(config, name) for name in names]
    missing = [name for name, ref in zip(names, refs, strict=True) if docker.image(ref) is None]
    if missing:
        raise DockerError(
            f"not built here: {', '.join(image_ref(config, n) for n in missing)}",
            hint=f"build {'them' if len(missing) > 1 else 'it'} first: kpc images build "
            + " ".join(missing),
        )
    return refs


# --- save ----------------------------------------------------------------------------------


def save(
    config: SiteConfig,
    docker: Docker,
    names: Sequence[str],
    output: Path,
    *,
    kolla: bool = False,
    force: bool = False,
    compress: bool = False,
    on_step: Callable[[str], None] = lambda _: None,
) -> Saved:
    """Write the bundle of kpc's images ``names`` (and the Kolla set with ``kolla``).

    Steps: check every image is there; ``docker save`` them into a scratch file beside
    ``output``; gzip it (``compress``); hash it; write manifest and archive into ``output``
    (through a ``.partial`` file, so a bundle is never half-written); write ``output.sha256``.
    """
    started = time.monotonic()
    if output.exists() and not force:
        raise UsageError(f"{output} already exists", hint="choose another name, or --force")
    if not output.parent.is_dir():
        raise UsageError(f"{output.parent} is not a directory", hint="make it first")
    docker.ping()
    images = [BundledImage(ref, _id(docker, ref)) for ref in service_refs(config, docker, names)]
    kolla_tag = None
    if kolla:
        kolla_tag = image_tag(config)
        for name, ref in kolla_refs(config, docker).items():
            images.append(BundledImage(ref, _id(docker, ref), name))
    if not images:
        raise UsageError("nothing to save", hint="name kpc's images, or add --kolla")
    scratch = output.with_name(f".{output.name}.{ARCHIVE}.partial")
    partial = output.with_name(f".{output.name}.partial")
    try:
        on_step(f"docker save of {len(images)} image(s)")
        docker.save([i.ref for i in images], scratch)
        if compress:
            on_step("gzip")
            packed = scratch.with_name(scratch.name + ".gz")
            with scratch.open("rb") as source, gzip.open(packed, "wb", compresslevel=6) as sink:
                shutil.copyfileobj(source, sink, CHUNK)
            os.replace(packed, scratch)
        on_step("checksum")
        with scratch.open("rb") as stream:
            digest, size = _sha256(stream)
        manifest = Manifest(
            kpc_version=__version__,
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            archive_size=size,
            archive_sha256=digest,
            kolla_tag=kolla_tag,
            images=tuple(images),
            archive=GZIPPED if compress else ARCHIVE,
        )
        on_step(f"write {output}")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, MANIFEST, manifest.to_json().encode(), None)
            _add(tar, manifest.archive, None, scratch)
        with partial.open("rb") as stream:
            whole, total = _sha256(stream)
        os.replace(partial, output)
    finally:
        scratch.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    sums = checksum_file(output)
    sums.write_text(f"{whole.removeprefix('sha256:')}  {output.name}\n", encoding="utf-8")
    return Saved(output, sums, manifest, total, time.monotonic() - started)


def _id(docker: Docker, ref: str) -> str:
    info = docker.image(ref)
    if info is None:  # removed between the check and now
        raise DockerError(f"image {ref} disappeared while saving", hint="save again")
    return info.id


def _add(tar: tarfile.TarFile, name: str, data: bytes | None, path: Path | None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = int(time.time())
    info.mode = 0o644
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        return
    assert path is not None
    info.size = path.stat().st_size
    with path.open("rb") as stream:
        tar.addfile(info, stream)


# --- verify and load -----------------------------------------------------------------------


def read_manifest(bundle: Path) -> Manifest:
    """The bundle's manifest, or BundleError if ``bundle`` is not a kpc image bundle."""
    if not bundle.is_file():
        raise UsageError(f"{bundle}: no such file", hint="give the path of the bundle file")
    try:
        with tarfile.open(bundle, "r:") as tar:
            member = tar.next()
            if member is None or member.name != MANIFEST or not member.isfile():
                raise BundleError(
                    f"{bundle}: not a kpc image bundle (its first member is not {MANIFEST})",
                    hint="make one with 'kpc images save'; for a plain 'docker save' "
                    "archive use 'docker load -i'",
                )
            stream = tar.extractfile(member)
            assert stream is not None
            return Manifest.from_json(stream.read(), bundle)
    except tarfile.TarError as exc:
        raise BundleError(
            f"{bundle}: not a readable tar file ({exc})",
            hint="copy it again and compare it with its .sha256 file: sha256sum -c "
            f"{checksum_file(bundle).name}",
        ) from None


def verify(bundle: Path, on_bytes: Callable[[int], None] | None = None) -> Manifest:
    """The manifest, once images.tar has the size and SHA-256 it names; else BundleError."""
    manifest = read_manifest(bundle)
    damaged = (
        f"copy it again from the original and check it: sha256sum -c {checksum_file(bundle).name}"
    )
    with tarfile.open(bundle, "r:") as tar:
        stream = _archive(tar, bundle, manifest.archive)
        try:
            digest, size = _sha256(stream, on_bytes)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BundleError(
                f"{bundle}: cannot read {manifest.archive} ({exc})", damaged
            ) from None
    if size != manifest.archive_size or digest != manifest.archive_sha256:
        raise BundleError(
            f"{bundle}: {manifest.archive} is damaged: {size} bytes with {digest}, the manifest "
            f"says {manifest.archive_size} bytes with {manifest.archive_sha256}; nothing was "
            "loaded",
            damaged,
        )
    return manifest


def _archive(tar: tarfile.TarFile, bundle: Path, name: str) -> IO[bytes]:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise BundleError(
            f"{bundle}: {name} is missing (the file was cut short?)",
            hint=f"copy it again and check it: sha256sum -c {checksum_file(bundle).name}",
        ) from None
    stream = tar.extractfile(member)
    if stream is None:
        raise BundleError(f"{bundle}: {name} is not a file", hint="make the bundle again")
    return stream


def load(
    config: SiteConfig,
    docker: Docker,
    bundle: Path,
    progress: Progress,
    *,
    push: bool = True,
) -> Loaded:
    """Load a bundle into the engine and push its Kolla images into this host's registry.

    Steps: check the archive against the manifest (nothing is loaded from a damaged bundle);
    check the Kolla tag matches this host's config; ``docker load``; check each image's ID;
    push the Kolla images to the registry (``push``), as ``kpc kolla images build`` does.
    """
    started = time.monotonic()
    progress.phase(f"check {bundle}")
    manifest = verify(bundle)
    kolla = {i.kolla: i.ref for i in manifest.images if i.kolla}
    if kolla and push and manifest.kolla_tag != image_tag(config):
        raise BundleError(
            f"{bundle}: its Kolla images are tagged {manifest.kolla_tag}, this host's config "
            f"pulls {image_tag(config)} (kolla.release {config.kolla.release})",
            hint="make the config's kolla.release (or kolla.globals.openstack_tag) match the "
            "machine that saved the bundle, or save the bundle again for this release",
        )
    docker.ping()
    progress.phase(f"docker load of {len(manifest.images)} image(s)")
    with tarfile.open(bundle, "r:") as tar:
        docker.load(_archive(tar, bundle, manifest.archive))
    for image in manifest.images:
        info = docker.image(image.ref)
        got = info.id if info else "missing"
        if got != image.id:
            raise BundleError(
                f"after docker load, {image.ref} is {got}; the bundle says {image.id}",
                hint="another image took the tag meanwhile, or the engine rewrote the image; "
                "run kpc images load again and check 'docker images'",
            )
    pushed: dict[str, str] = {}
    if kolla and push:
        where = f"{config.registry_address}:{config.registry.port}"
        again = "then run kpc images load again (loading again is quick: the engine has the images)"
        try:
            target_registry(config, None).ping()
        except RegistryError as exc:
            raise KpcError(
                f"the images are loaded, but the registry at {where} does not answer, so the "
                f"Kolla images are not pushed: {exc}",
                hint=f"start it: kpc up registry, {again}",
            ) from None
        try:
            pushed = push_images(config, docker, kolla, progress)
        except DockerError as exc:
            raise DockerError(
                f"the images are loaded, but pushing the Kolla images into the registry at "
                f"{where} failed: {exc.message}",
                hint=f"fix the cause shown, {again}",
            ) from None
    return Loaded(manifest, pushed, time.monotonic() - started)
