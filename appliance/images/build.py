"""``kpc images build``: build kpc's images with BuildKit, from the site's build sources.

Every Dockerfile gets the same build arguments (``BASE``, ``DEBIAN_MIRROR``, ``DEBIAN_SUITE``,
``PIP_INDEX_URL``) and one build secret, ``kpc-ca``: the host's CA bundle plus the site's extra
``images.ca_bundle``. A secret is mounted only while a ``RUN`` step runs and is never part of
a layer. Images that install kpc itself get its wheel in ``kpc-dist/`` (see
``containers/README.md``).
"""

from __future__ import annotations

import email.parser
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from appliance import __version__
from appliance.config import SiteConfig
from appliance.drivers import process
from appliance.drivers.docker import BuildFailed, BuildRequest, Docker
from appliance.errors import CommandFailed, ConfigError, DockerError, KpcError, ToolMissing
from appliance.images import buildlog
from appliance.images.catalog import KPC_DIST, ImageDef, image_ref
from appliance.kolla.release import release

SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_SECRET_ID = "kpc-ca"
DEFAULT_PIP_INDEX = "https://pypi.org/simple"
# Wheels built with a fixed timestamp are byte-identical for identical sources, so BuildKit's
# cache for the COPY of the wheel holds while kpc's code is unchanged.
WHEEL_EPOCH = "315532800"  # 1980-01-01, the earliest a zip can say
SOURCE_PARTS = ("pyproject.toml", "README.md", "appliance")


@dataclass(frozen=True)
class BuildOutcome:
    name: str
    ref: str
    image_id: str
    seconds: float
    steps: int
    cached: int
    size: int


class Progress(Protocol):
    def started(self, image: ImageDef, ref: str, index: int, total: int) -> None: ...

    def line(self, image: ImageDef, line: str) -> None: ...

    def finished(self, outcome: BuildOutcome) -> None: ...


def build_args(config: SiteConfig) -> dict[str, str]:
    """The build arguments every kpc Dockerfile takes.

    The Kolla images (deployer, builder) build FROM ``KOLLA_BASE``, the base of the Kolla
    release's Debian suite, and take their pins from the release (``kolla.release``).
    """
    kolla = release(config.kolla.release)
    return {
        "BASE": config.images.base,
        "DEBIAN_MIRROR": config.images.debian_mirror,
        "DEBIAN_SUITE": config.images.debian_suite,
        "PIP_INDEX_URL": config.images.pypi_index or DEFAULT_PIP_INDEX,
        "KOLLA_BASE": config.images.base_for(kolla.debian_suite),
        "KOLLA_SUITE": kolla.debian_suite,
        **kolla.build_args(),
    }


def bases_needed(config: SiteConfig, images: Sequence[ImageDef]) -> dict[str, str]:
    """Each base image the chosen Dockerfiles build FROM, with the suite it is made of."""
    args = build_args(config)
    needed = {config.images.base: config.images.debian_suite}
    if any(image.uses_arg("KOLLA_BASE") for image in images):
        needed[args["KOLLA_BASE"]] = args["KOLLA_SUITE"]
    return needed


def image_labels(name: str, revision: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": f"kpc {name}",
        "org.opencontainers.image.version": __version__,
        "org.opencontainers.image.revision": revision,
        "kpc.image": name,
    }


def source_revision(checkout: Path) -> str:
    """The git commit of ``checkout`` (``-dirty`` with local changes), or ``unknown``."""
    try:
        head = process.run(["git", "-C", str(checkout), "rev-parse", "--short=12", "HEAD"])
        dirty = process.run(["git", "-C", str(checkout), "status", "--porcelain"], check=False)
    except (CommandFailed, ToolMissing):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def write_ca_bundle(target: Path, system_bundle: Path, extra: Path | None) -> Path:
    """The ``kpc-ca`` secret: the host's trusted CAs plus the site's extra bundle (mode 0600)."""
    parts: list[str] = []
    if system_bundle.is_file():
        parts.append(system_bundle.read_text(encoding="utf-8"))
    if extra is not None:
        try:
            parts.append(extra.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"images.ca_bundle: cannot read {extra}: {exc.strerror}",
                hint="point images.ca_bundle at a PEM file with the extra CA certificates",
            ) from None
    if not parts:
        raise ConfigError(
            f"no CA bundle for builds: {system_bundle} does not exist and images.ca_bundle "
            "is not set",
            hint="install ca-certificates, or set images.ca_bundle in the site config",
        )
    target.touch(mode=0o600)
    target.write_text("\n".join(part.rstrip("\n") for part in parts) + "\n", encoding="utf-8")
    return target


def requirements_of(wheel: Path) -> list[str]:
    """The wheel's unconditional ``Requires-Dist`` entries (no extras)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))
    return [req for req in metadata.get_all("Requires-Dist") or [] if "extra ==" not in req]


def build_wheel(checkout: Path, out_dir: Path, environ: Mapping[str, str]) -> Path:
    """A reproducible wheel of kpc from ``checkout``, built in a scratch copy of the sources."""
    if not (checkout / "pyproject.toml").is_file():
        raise KpcError(
            f"kpc's source is not at {checkout}, and an image that installs kpc needs it",
            hint="run kpc from its source checkout (or a copy of it) to build this image",
        )
    with tempfile.TemporaryDirectory(prefix="kpc-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for part in SOURCE_PARTS:
            origin = checkout / part
            if origin.is_dir():
                shutil.copytree(origin, src / part, ignore=shutil.ignore_patterns("__pycache__"))
            elif origin.is_file():
                shutil.copy2(origin, src / part)
        env = {**environ, "SOURCE_DATE_EPOCH": WHEEL_EPOCH, "PIP_NO_CACHE_DIR": "1"}
        process.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "-w",
                str(out_dir),
                str(src),
            ],
            env=env,
            hint="kpc's wheel is built with pip and setuptools from kpc's own environment",
        )
    wheels = sorted(out_dir.glob("kpc-*.whl"))
    if not wheels:
        raise KpcError(f"pip built no kpc wheel in {out_dir}")
    return wheels[-1]


def _context(image: ImageDef, scratch: Path, checkout: Path, environ: Mapping[str, str]) -> Path:
    """The build context: the image's folder, plus ``kpc-dist/`` when it installs kpc."""
    if not image.wants_kpc_dist():
        return image.directory
    context = scratch / "context"
    shutil.copytree(image.directory, context)
    dist = context / KPC_DIST
    dist.mkdir(exist_ok=True)
    wheel = build_wheel(checkout, dist, environ)
    (dist / "requirements.txt").write_text(
        "".join(f"{req}\n" for req in requirements_of(wheel)), encoding="utf-8"
    )
    return context


def build_images(
    config: SiteConfig,
    docker: Docker,
    images: Sequence[ImageDef],
    progress: Progress,
    *,
    checkout: Path,
    environ: Mapping[str, str],
    no_cache: bool = False,
    system_ca: Path = SYSTEM_CA_BUNDLE,
) -> list[BuildOutcome]:
    """Build ``images`` in order; stop at the first failure with its failing step's output."""
    docker.ping()
    for base, suite in bases_needed(config, images).items():
        if docker.image(base) is None:
            extra = "" if suite == config.images.debian_suite else f" --suite {suite}"
            raise DockerError(
                f"the base image {base} is not there",
                hint=f"make it first (no registry needed): kpc images base{extra}",
            )
    revision = source_revision(checkout)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="kpc-images-") as tmp:
        scratch = Path(tmp)
        ca = write_ca_bundle(scratch / "ca.pem", system_ca, config.images.ca_bundle)
        for index, image in enumerate(images, start=1):
            ref = image_ref(config, image.name)
            progress.started(image, ref, index, len(images))
            work = scratch / image.name
            work.mkdir()
            lines: list[str] = []

            def on_line(line: str, image: ImageDef = image, lines: list[str] = lines) -> None:
                lines.append(line)
                progress.line(image, line)

            began = time.monotonic()
            previous = docker.image(ref)
            request = BuildRequest(
                context=_context(image, work, checkout, environ),
                dockerfile=image.dockerfile,
                tag=ref,
                build_args=build_args(config),
                labels=image_labels(image.name, revision),
                secrets={CA_SECRET_ID: ca},
                no_cache=no_cache,
            )
            try:
                image_id = docker.build(request, on_line)
            except BuildFailed as exc:
                raise DockerError(
                    f"building image {image.name} ({ref}) failed\n"
                    + buildlog.failure_report(exc.lines),
                    hint=f"fix containers/{image.name}/Dockerfile or the build sources in the "
                    f"site config, then run: kpc images build {image.name}",
                ) from None
            if previous is not None and previous.id != image_id:
                # the old image is dangling now: drop it unless a container still uses it
                docker.remove_unused_image(previous.id)
            steps, cached = buildlog.cache_summary(lines)
            info = docker.image(image_id)
            outcome = BuildOutcome(
                name=image.name,
                ref=ref,
                image_id=image_id,
                seconds=time.monotonic() - began,
                steps=steps,
                cached=cached,
                size=info.size if info else 0,
            )
            outcomes.append(outcome)
            progress.finished(outcome)
    return outcomes
