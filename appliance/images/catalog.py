"""Which images kpc builds: one per ``containers/<name>/Dockerfile``. Pure apart from listing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.config import SiteConfig
from appliance.errors import UsageError

KPC_DIST = "kpc-dist"  # build-context folder kpc fills with its wheel (see containers/README.md)


@dataclass(frozen=True)
class ImageDef:
    name: str
    directory: Path

    @property
    def dockerfile(self) -> Path:
        return self.directory / "Dockerfile"

    def uses_arg(self, name: str) -> bool:
        """True when the Dockerfile declares build argument ``name``."""
        text = self.dockerfile.read_text(encoding="utf-8")
        return any(
            line.split()[:2] == ["ARG", name] or line.startswith(f"ARG {name}=")
            for line in text.splitlines()
        )

    def wants_kpc_dist(self) -> bool:
        """True when the Dockerfile copies from ``kpc-dist/`` (it installs kpc itself)."""
        return f"{KPC_DIST}/" in self.dockerfile.read_text(encoding="utf-8")


def image_ref(config: SiteConfig, name: str) -> str:
    """The tag kpc gives the image of ``name``: ``{images.prefix}/{name}:latest``."""
    return f"{config.images.prefix}/{name}:latest"


def discover(containers_dir: Path) -> dict[str, ImageDef]:
    """Every ``<name>/Dockerfile`` under ``containers_dir``, by name."""
    found = {
        path.parent.name: ImageDef(path.parent.name, path.parent)
        for path in sorted(containers_dir.glob("*/Dockerfile"))
    }
    return dict(sorted(found.items()))


def select(available: dict[str, ImageDef], names: Sequence[str]) -> list[ImageDef]:
    """The requested images (all when ``names`` is empty), or UsageError naming the unknown."""
    if not names:
        return list(available.values())
    unknown = [name for name in names if name not in available]
    if unknown:
        raise UsageError(
            f"no such image: {', '.join(unknown)}",
            hint=f"kpc builds: {', '.join(available) or '(nothing found)'}",
        )
    seen: dict[str, ImageDef] = {}
    for name in names:
        seen.setdefault(name, available[name])
    return list(seen.values())
