"""``kpc registry mirror``: copy the release's Kolla images into the deploy host's registry.

Registry to registry over the HTTP API v2, no Docker engine involved: for each image, the
upstream manifest (for a multi-platform index, the linux/amd64 manifest) names a config blob
and layers; blobs the target already has are skipped (so an interrupted mirror resumes where
it stopped), the rest are streamed across, then the manifest is put under the same tag. An
image whose manifest the target already holds with the same digest is skipped whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.config import SiteConfig
from appliance.errors import UsageError
from appliance.kolla.imagesets import image_sets
from appliance.kolla.registry_client import INDEX_TYPES, Manifest, Registry, RegistryError
from appliance.kolla.release import release

PLATFORM = ("linux", "amd64")


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


@dataclass(frozen=True)
class ImagePlan:
    """One image: where it comes from and what the target still lacks."""

    name: str  # e.g. "keystone"
    repo: str  # e.g. "openstack.kolla/keystone"
    tag: str
    manifest: Manifest
    blobs: tuple[Blob, ...]
    missing: tuple[Blob, ...]
    present: bool  # the target already has this manifest under the tag

    @property
    def missing_bytes(self) -> int:
        return sum(b.size for b in self.missing)


class Progress(Protocol):
    def planned(self, plan: ImagePlan) -> None: ...

    def advanced(self, plan: ImagePlan, nbytes: int) -> None: ...

    def done(self, plan: ImagePlan) -> None: ...


def image_tag(config: SiteConfig) -> str:
    """The tag kolla-ansible will pull: ``openstack_tag`` from kolla.globals, else derived."""
    override = config.kolla.globals.get("openstack_tag")
    if override:
        return str(override)
    return release(config.kolla.release).tag(config.kolla.base_distro)


def default_images(config: SiteConfig) -> list[str]:
    """The images of the site's service set (kolla.services) of its release."""
    return list(image_sets(config.kolla.release).of(config.kolla.services))


def blobs_of(manifest: Any) -> list[Blob]:
    """The config blob and layers of an image manifest (Docker v2 or OCI)."""
    found = []
    for part in [manifest.get("config"), *(manifest.get("layers") or [])]:
        if isinstance(part, dict) and part.get("digest"):
            found.append(Blob(str(part["digest"]), int(part.get("size") or 0)))
    return found


def pick_platform(index: Any, platform: tuple[str, str] = PLATFORM) -> str:
    """The digest of the manifest for ``platform`` in a manifest list / OCI index."""
    for entry in index.get("manifests") or []:
        plat = entry.get("platform") or {}
        if (plat.get("os"), plat.get("architecture")) == platform:
            return str(entry["digest"])
    raise UsageError(f"the image has no {'/'.join(platform)} variant")


def plan_image(
    source: Registry, target: Registry, namespace: str, name: str, tag: str
) -> ImagePlan:
    repo = f"{namespace}/{name}" if namespace else name
    try:
        manifest = source.manifest(repo, tag)
    except RegistryError as exc:
        if exc.status != 404:
            raise
        raise RegistryError(
            f"image {repo}:{tag} is not in registry {source.name}",
            hint="check the image name (--images), kolla.release and kolla.base_distro",
            status=404,
        ) from None
    if manifest.media_type in INDEX_TYPES:
        manifest = source.manifest(repo, pick_platform(manifest.json()))
    blobs = tuple(blobs_of(manifest.json()))
    have = target.manifest_digest(repo, tag)
    present = bool(have) and have == manifest.digest
    missing = () if present else tuple(b for b in blobs if not target.has_blob(repo, b.digest))
    return ImagePlan(name, repo, tag, manifest, blobs, missing, present)


def copy_image(source: Registry, target: Registry, plan: ImagePlan, progress: Progress) -> None:
    """Copy the missing blobs, then the manifest (so the tag appears only when complete)."""
    if plan.present:
        return

    def advanced(nbytes: int) -> None:
        progress.advanced(plan, nbytes)

    for blob in plan.missing:
        if target.has_blob(plan.repo, blob.digest):  # another run got there meanwhile
            advanced(blob.size)
            continue
        source.copy_blob_to(target, plan.repo, blob.digest, blob.size, plan.repo, advanced)
    target.put_manifest(plan.repo, plan.tag, plan.manifest)


def mirror(
    source: Registry,
    target: Registry,
    *,
    namespace: str,
    names: Sequence[str],
    tag: str,
    progress: Progress,
    dry_run: bool = False,
) -> list[ImagePlan]:
    """Plan every image first (so a missing one is reported before any copying), then copy."""
    target.ping()
    plans = []
    for name in names:
        plan = plan_image(source, target, namespace, name, tag)
        progress.planned(plan)
        plans.append(plan)
    if not dry_run:
        for plan in plans:
            copy_image(source, target, plan, progress)
            progress.done(plan)
    return plans


def source_registry(config: SiteConfig) -> Registry:
    return Registry(config.kolla.upstream_registry)


def target_registry(config: SiteConfig, password: str | None) -> Registry:
    address = f"{config.registry_address}:{config.registry.port}"
    scheme = "https" if config.registry.tls else "http"
    return Registry(f"{scheme}://{address}", user=config.registry.user, password=password)
