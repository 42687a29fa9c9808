"""``kpc images base``: the base image, made without any container registry.

An air-gapped deploy host has no registry to pull ``debian:bookworm`` from, so kpc makes its
own: ``debootstrap --variant=minbase`` from the site's Debian mirror into a scratch folder,
``tar`` it, ``docker import`` the tarball. If the image is already there it is used as is.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.config import SiteConfig
from appliance.drivers import process
from appliance.drivers.docker import Docker
from appliance.errors import UsageError

IMPORT_CHANGES = ("ENV DEBIAN_FRONTEND=noninteractive", 'CMD ["/bin/bash"]')
SCRATCH_PARENT = Path("/var/tmp")  # disk-backed: the root file system is ~200 MB


@dataclass(frozen=True)
class BaseOutcome:
    ref: str
    image_id: str
    built: bool  # False: it was already there
    seconds: float


def debootstrap_argv(config: SiteConfig, rootfs: Path, suite: str | None = None) -> list[str]:
    images = config.images
    return [
        "debootstrap", "--variant=minbase", suite or images.debian_suite, str(rootfs),
        images.debian_mirror,
    ]  # fmt: skip


def tar_argv(rootfs: Path, tarball: Path) -> list[str]:
    return ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tarball), "."]


def import_rootfs(docker: Docker, rootfs: Path, ref: str, workdir: Path) -> str:
    """Pack a root file system and ``docker import`` it as ``ref``; returns the image ID."""
    tarball = workdir / "rootfs.tar"
    process.run(tar_argv(rootfs, tarball))
    try:
        return docker.import_rootfs(tarball, ref, IMPORT_CHANGES)
    finally:
        tarball.unlink(missing_ok=True)


def make_base(
    config: SiteConfig,
    docker: Docker,
    *,
    force: bool = False,
    suite: str | None = None,
    on_step: Callable[[str], None] = lambda _: None,
    scratch_parent: Path = SCRATCH_PARENT,
) -> BaseOutcome:
    """Make the base image of ``suite`` (default ``images.debian_suite``: ``images.base``)
    unless it is already there (``force`` remakes it)."""
    suite = suite or config.images.debian_suite
    ref = config.images.base_for(suite)
    began = time.monotonic()
    docker.ping()
    present = docker.image(ref)
    if present is not None and not force:
        return BaseOutcome(ref, present.id, built=False, seconds=time.monotonic() - began)
    if os.geteuid() != 0:
        raise UsageError("making the base image needs root (debootstrap)", hint="run it as root")
    process.which("debootstrap", "debootstrap")
    scratch_parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="kpc-base-", dir=scratch_parent))
    rootfs = workdir / "rootfs"
    try:
        images = config.images
        on_step(f"debootstrap {suite} from {images.debian_mirror}")
        process.run(
            debootstrap_argv(config, rootfs, suite),
            hint="check images.debian_mirror and images.debian_suite in the site config",
        )
        on_step(f"docker import as {ref}")
        image_id = import_rootfs(docker, rootfs, ref, workdir)
    finally:
        # --one-file-system: never descend into a /proc or /dev debootstrap left mounted
        process.run(["rm", "-rf", "--one-file-system", str(workdir)], check=False)
    return BaseOutcome(ref, image_id, built=True, seconds=time.monotonic() - began)
